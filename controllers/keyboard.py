"""Keyboard -> multi-hot keys: WASD and arrows move, A/D strafe, Q/E and left/right arrows turn.

The state is kept from KEYDOWN/KEYUP events rather than `pygame.key.get_pressed()`, so that events
posted by tests (and by the dummy video driver) count exactly like a person's key presses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner in the middle of our output
import pygame  # noqa: E402
from worldsim.controllers.bindings import KEY_BINDINGS  # noqa: E402

# Which physical keys press which game key (controllers/bindings.py). A world whose key names are not
# listed there simply has no keyboard binding for them (a gamepad or a bot can still press them).
DEFAULT_BINDINGS: Mapping[str, tuple[int, ...]] = {
    key: tuple(getattr(pygame, f"K_{name}") for name in names) for key, names in KEY_BINDINGS.items()
}


class Keyboard:
    """Tracks held keys from pygame events and turns them into a `[K]` bool vector for `key_names`."""

    def __init__(self, key_names: Sequence[str], bindings: Mapping[str, Iterable[int]] | None = None) -> None:
        self.key_names = tuple(key_names)
        bindings = DEFAULT_BINDINGS if bindings is None else bindings
        self._index: dict[int, list[int]] = {}  # pygame key code -> indices into key_names
        for k, name in enumerate(self.key_names):
            for code in bindings.get(name, ()):
                self._index.setdefault(code, []).append(k)
        self._held: set[int] = set()

    @property
    def bound_keys(self) -> tuple[str, ...]:
        """The game keys that some keyboard key presses."""
        ks = sorted({k for idx in self._index.values() for k in idx})
        return tuple(self.key_names[k] for k in ks)

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
        """The current multi-hot key state, `[K]` bool in the order of `key_names`."""
        out = np.zeros(len(self.key_names), dtype=bool)
        for code in self._held:
            out[self._index[code]] = True
        return out
