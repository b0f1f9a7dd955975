"""Keyboard -> multi-hot keys: WASD and arrows move, A/D strafe, Q/E and left/right arrows turn; for a
one-action-per-frame world (a Discrete env) the one-hot of the action the held keys mean
(controllers/bindings.py binds them, `worldsim.actions.choose_action` picks the action).

The state is kept from KEYDOWN/KEYUP events rather than `pygame.key.get_pressed()`, so that events
posted by tests (and by the dummy video driver) count exactly like a person's key presses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner in the middle of our output
import pygame  # noqa: E402
from worldsim.controllers.bindings import bindings_for  # noqa: E402

from worldsim.actions import choose_action, components, one_action_per_frame  # noqa: E402


def codes(bindings: Mapping[str, Iterable[str]]) -> dict[str, tuple[int, ...]]:
    """pygame key names (controllers/bindings.py) -> pygame key codes."""
    return {held: tuple(getattr(pygame, f"K_{n}") for n in names) for held, names in bindings.items()}


class Keyboard:
    """Tracks held keys from pygame events and turns them into a `[K]` bool vector for `key_names`.

    `bindings` maps what a key holds (a key name; for a one-action-per-frame world, a part of an action
    name such as UP or FIRE) to pygame key codes; default: `bindings_for(key_names)`.
    """

    def __init__(self, key_names: Sequence[str], bindings: Mapping[str, Iterable[int]] | None = None) -> None:
        self.key_names = tuple(key_names)
        self.one_hot = one_action_per_frame(self.key_names)
        bindings = codes(bindings_for(self.key_names)) if bindings is None else bindings
        self._index: dict[int, list[str]] = {}  # pygame key code -> what it holds
        for held, keys in bindings.items():
            for code in keys:
                self._index.setdefault(code, []).append(held)
        self._held: set[int] = set()

    @property
    def bound_keys(self) -> tuple[str, ...]:
        """The game keys that some keyboard key (or, one action per frame, some set of them) presses."""
        bound = {h for hs in self._index.values() for h in hs}
        if self.one_hot:
            return tuple(n for n in self.key_names if components(n) <= bound)
        return tuple(n for n in self.key_names if n in bound)

    def handle_event(self, event: pygame.event.Event) -> bool:
        """Update the held set from one event; True when the event was a bound key."""
        if event.type == pygame.KEYDOWN and event.key in self._index:
            self._held.add(event.key)
            return True
        if event.type == pygame.KEYUP and event.key in self._index:
            self._held.discard(event.key)
            return True
        if event.type == pygame.WINDOWFOCUSLOST:
            # Key-up events are lost while another window has the focus: never leave a key stuck down.
            self._held.clear()
        return False

    def release_all(self) -> None:
        self._held.clear()

    def keys(self) -> np.ndarray:
        """The current key state, `[K]` bool in the order of `key_names`: multi-hot, or for a
        one-action-per-frame world the one-hot of the action the held keys mean (NOOP when none)."""
        held = {h for code in self._held for h in self._index[code]}
        out = np.zeros(len(self.key_names), dtype=bool)
        if self.one_hot:
            out[choose_action(held, self.key_names)] = True
        else:
            out[[k for k, n in enumerate(self.key_names) if n in held]] = True
        return out
