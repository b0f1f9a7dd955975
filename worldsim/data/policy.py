"""The policy `worldsim collect --env` plays a Gymnasium env with: a documented mix of behaviours.

Play is cut into segments of 16-48 steps; each picks one behaviour by the fractions of `MIX` (so they are
also the fractions of the steps played):

- random: a fresh uniform action every step: every action, quick changes;
- sticky: each random choice held 2-12 steps: the way a player presses keys;
- burst: one action held the whole segment: long runs a random policy never makes (a paddle to the wall).

On top of the mix, an env whose action meanings include FIRE presses FIRE for the first 1-3 steps of
every episode and after every lost life (Atari games wait for FIRE to launch the ball or start a round);
without it a random policy spends most frames on a frozen screen.
"""

from __future__ import annotations

import numpy as np

MIX = {"random": 0.25, "sticky": 0.55, "burst": 0.20}
SEGMENT = (16, 48)  # steps per segment (inclusive)
HOLD = (2, 12)  # steps a sticky choice is held
START_FIRE = (1, 3)  # steps of FIRE at the start of an episode or after a lost life


def describe_mix() -> dict:
    """The policy as recorded in a dataset's manifest."""
    return {"mix": dict(MIX), "segment_steps": list(SEGMENT),
            "sticky_hold_steps": list(HOLD), "fire_on_start_steps": list(START_FIRE)}  # fmt: skip


class MixedPolicy:
    """Plays `n` actions (Discrete: one-hot; MultiBinary: multi-hot) by `MIX`, seeded (numpy)."""

    def __init__(self, n: int, *, discrete: bool, seed: int, fire: int | None = None) -> None:
        self.n, self.discrete, self.fire = n, discrete, fire
        self.rng = np.random.default_rng(seed)
        self.modes = list(MIX)
        self.p = np.array([MIX[m] for m in self.modes])
        self._mode, self._left, self._hold = "random", 0, 0
        self._fire_left = 0
        self._state = np.zeros(n, bool)
        self.counts = dict.fromkeys(self.modes, 0)  # steps played in each behaviour

    def start(self) -> None:
        """An episode began or a life was lost: FIRE first, where the env has it."""
        if self.fire is not None:
            self._fire_left = int(self.rng.integers(START_FIRE[0], START_FIRE[1] + 1))

    def _fresh(self) -> np.ndarray:
        keys = np.zeros(self.n, bool)
        if self.discrete:
            keys[self.rng.integers(self.n)] = True
        else:
            keys[:] = self.rng.random(self.n) < 0.5
        return keys

    def act(self) -> np.ndarray:
        """The keys [n] bool of the next step (Discrete: exactly one on)."""
        if self._fire_left > 0:
            self._fire_left -= 1
            keys = np.zeros(self.n, bool)
            keys[self.fire] = True
            return keys
        if self._left <= 0:
            self._mode = self.modes[int(self.rng.choice(len(self.modes), p=self.p))]
            self._left, self._hold = int(self.rng.integers(SEGMENT[0], SEGMENT[1] + 1)), 0
            if self._mode == "burst":
                self._state = self._fresh()
        self._left -= 1
        self.counts[self._mode] += 1
        if self._mode == "random":
            self._state = self._fresh()
        elif self._mode == "sticky":
            if self._hold <= 0:
                self._state = self._fresh()
                self._hold = int(self.rng.integers(HOLD[0], HOLD[1] + 1))
            self._hold -= 1
        return self._state.copy()
