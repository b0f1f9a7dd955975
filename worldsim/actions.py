"""Held keys -> the one action of a Discrete env: the mapping the gym world and the play window share.

A Discrete env takes exactly one action per frame, but a player (or a bot) holds any set of keys. Atari
names its actions by what they combine (`UPRIGHTFIRE` = up + right + fire; `NOOP` = nothing), so a held
set maps to the action whose components equal the held components, else to the one with the largest
subset of them (ties: the env's lowest action index). A neural world trained on such an env's recording
has the same key names, so the keyboard maps the same way for it. Pure Python: no torch, no gymnasium.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

# What Atari action meanings are made of (ale-py's `get_action_meanings()`), longest first for parsing.
COMPONENTS: tuple[str, ...] = ("RIGHT", "DOWN", "LEFT", "FIRE", "UP")
NOOP = "NOOP"
_ACTION_INDEX = re.compile(r"action_\d+")


def components(name: str) -> frozenset[str]:
    """What an action name is made of: `UPRIGHTFIRE` -> {UP, RIGHT, FIRE}, `NOOP` -> {}; a name that is
    not a concatenation of distinct `COMPONENTS` is its own single component (`action_3` -> {action_3})."""
    if name == NOOP:
        return frozenset()
    rest, found = name, []
    while rest:
        part = next((c for c in COMPONENTS if rest.startswith(c) and c not in found), None)
        if part is None:
            return frozenset((name,))
        found.append(part)
        rest = rest[len(part) :]
    return frozenset(found)


def one_action_per_frame(key_names: Sequence[str]) -> bool:
    """Whether `key_names` are the actions of a Discrete env (one-hot keys): they name a `NOOP` (action
    meanings, as Atari's) or every one is `action_<i>` (a Discrete env without meanings)."""
    return NOOP in key_names or (len(key_names) > 0 and all(_ACTION_INDEX.fullmatch(n) for n in key_names))


def choose_action(held: Iterable[str], key_names: Sequence[str]) -> int:
    """The index in `key_names` of the one action a held set means. `held` holds action names or their
    components (UP, FIRE, ...): their components are pooled. Nothing held -> `NOOP` (action 0 where no
    action is empty); the action whose components equal the held ones; else the largest subset of them
    (ties: the lowest index); else action 0."""
    return _choose(frozenset(held), tuple(key_names))


@lru_cache(maxsize=4096)  # one call per game per frame; players hold few distinct sets
def _choose(held: frozenset[str], key_names: tuple[str, ...]) -> int:
    want = frozenset().union(*(components(h) for h in held))
    parts = [components(n) for n in key_names]
    for i, p in enumerate(parts):
        if p == want:
            return i
    subsets = [i for i, p in enumerate(parts) if p <= want]
    return max(subsets, key=lambda i: (len(parts[i]), -i)) if subsets else 0


def one_hot_keys(keys: np.ndarray, key_names: Sequence[str]) -> np.ndarray:
    """A held `[K]` bool key vector as the one-hot of the action it means (`choose_action`)."""
    held = [n for n, k in zip(key_names, keys) if k]
    out = np.zeros(len(key_names), dtype=bool)
    out[choose_action(held, key_names)] = True
    return out


def as_played(keys: np.ndarray, key_names: Sequence[str]) -> np.ndarray:
    """What the play loops send for held `[K]` keys: the one-hot of their action where the world takes
    one action per frame (`one_action_per_frame`), else the keys as held."""
    return one_hot_keys(keys, key_names) if one_action_per_frame(key_names) else keys
