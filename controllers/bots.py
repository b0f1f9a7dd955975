"""Scripted players for `worldsim play --bot`: sticky random keys (seeded) or keys replayed from a .wsrec.

A bot's `act()` returns the next `[K]` bool key vector, or None when it has nothing more to play.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from worldsim.errors import UserError
from worldsim.record import RecordingReader
from worldsim.world import OPPOSITE_KEYS


class RandomStickyBot:
    """Holds a random key combination for a random number of frames, then picks another.

    Hold times are geometric with mean `mean_hold` frames; forward is favoured so the bot explores
    instead of dithering in place. Same seed, same key sequence.
    """

    def __init__(self, key_names: Sequence[str], seed: int = 0, mean_hold: float = 8.0) -> None:
        if mean_hold < 1:
            raise ValueError(f"mean_hold must be >= 1 frame, got {mean_hold}")
        self.key_names = tuple(key_names)
        self.mean_hold = mean_hold
        self._rng = np.random.default_rng(seed)
        self._keys = np.zeros(len(self.key_names), dtype=bool)
        self._left = 0
        index = {n: i for i, n in enumerate(self.key_names)}
        self._groups = [
            [index[n] for n in pair if n in index] for pair in OPPOSITE_KEYS
        ]  # at most one key of each
        grouped = {i for g in self._groups for i in g}
        self._groups = [g for g in self._groups if g] + [
            [i] for i in range(len(self.key_names)) if i not in grouped
        ]
        self._forward = index.get("forward")

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        if self._left <= 0:
            self._keys = self._pick()
            self._left = int(self._rng.geometric(1.0 / self.mean_hold))
        self._left -= 1
        return self._keys.copy()

    def _pick(self) -> np.ndarray:
        keys = np.zeros(len(self.key_names), dtype=bool)
        for group in self._groups:
            # Each group: nothing half of the time, otherwise one of its keys.
            if self._rng.random() < 0.5:
                keys[group[int(self._rng.integers(len(group)))]] = True
        if self._forward is not None and self._rng.random() < 0.4:
            keys[self._forward] = True
            back = self.key_names.index("back") if "back" in self.key_names else None
            if back is not None:
                keys[back] = False
        return keys


class ReplayBot:
    """Plays back the keys of a recording, frame by frame, mapped onto `key_names` by name."""

    def __init__(self, path: str | Path, key_names: Sequence[str]) -> None:

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"--bot replay:{path}: no such file; pass the path of a .wsrec recording")
        reader = RecordingReader(self.path)  # checks the header; streams the records
        self.header = dict(reader.header)
        rec_names = [str(n) for n in self.header.get("key_names", [])]
        missing = [n for n in rec_names if n not in key_names]
        if missing:
            raise UserError(
                f"--bot replay:{path}: the recording presses keys {missing} that this world does not have "
                f"(world keys: {list(key_names)}); replay it on the world it was recorded on"
            )
        self.key_names = tuple(key_names)
        self._columns = np.array([self.key_names.index(n) for n in rec_names], dtype=np.int64)
        self._records: Iterator = iter(reader)
        self._first = True
        self.frames_played = 0

    @property
    def seed(self) -> int | None:
        seed = self.header.get("seed")
        return None if seed is None else int(seed)

    def act(self, frame: np.ndarray | None = None) -> np.ndarray | None:
        for record in self._records:
            if self._first or record.reset_seed is not None:
                # A reset frame reflects no keys; a bot cannot reset the game, so mid-recording resets
                # are skipped and play goes on from where it is.
                self._first = False
                continue
            keys = np.zeros(len(self.key_names), dtype=bool)
            keys[self._columns] = np.asarray(record.keys, dtype=bool)
            self.frames_played += 1
            return keys
        return None


def make_bot(spec: str, key_names: Sequence[str], seed: int = 0) -> RandomStickyBot | ReplayBot:
    """`random-sticky` or `replay:FILE` -> a bot (the `--bot` flag's grammar)."""
    if spec == "random-sticky":
        return RandomStickyBot(key_names, seed=seed)
    if spec.startswith("replay:") and len(spec) > len("replay:"):
        return ReplayBot(spec[len("replay:") :], key_names)
    raise UserError(f"--bot {spec!r}: unknown bot; use 'random-sticky' or 'replay:FILE.wsrec'")
