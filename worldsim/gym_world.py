"""Any Gymnasium env as a `World`: `GymWorld("ALE/Breakout-v5", batch_size=B)` steps B copies of it.

Frames are the env's RGB observation (Atari) or its rgb_array render, resized to size x size (BOX).
Discrete(n) actions are one-hot keys named by the env's action meanings, and exactly one action reaches
the env per frame: the held keys go through `worldsim.actions.choose_action` (NOOP when nothing is
held), the mapping the play window uses too. MultiBinary(n) keys pass through as they are. An episode
that ends resets its env at once: the frame returned is the new episode's first, and `done` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from worldsim.actions import choose_action
from worldsim.errors import UserError
from worldsim.gym_env import GYM_PREFIX, env_frame, key_names, make_env
from worldsim.world import World, keys_tensor, normalize_seeds

log = logging.getLogger(__name__)


class GymWorld(World):
    """`batch_size` envs of `env_id`, a list stepped in turn rather than a gymnasium vector env: a vector
    env steps all its envs at once, while the server steps only the sessions due (`slots=`) and resets
    one without the others. Measured on a loaded 2-core VM: one Breakout frame costs ~0.9 ms of ALE
    (frame skip 4) and ~0.4 ms of BOX resize; 16 games step at ~780 frames/s in all.

    `frameskip`: env frames per world frame (None: 4 for Atari, where ale-py skips inside the emulator,
    else 1; other envs repeat the action). `repeat_action_probability`: Atari's sticky actions (None: 0.0,
    worldsim/gym_env.py says why). `env_fps`: world frames per second at the env's real-time speed (15
    for Atari at frame skip 4; None where the env does not say). After each `step`, `done[b]` is True
    where game b's episode ended (its frame is then the next episode's first) and `reward[b]` is what
    that step earned.
    """

    def __init__(
        self,
        env_id: str,
        *,
        batch_size: int = 1,
        size: int = 64,
        device: torch.device | str = "cpu",
        frameskip: int | None = None,
        repeat_action_probability: float | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(size, int) or size < 1:
            raise UserError(f"--size {size!r}: a gym world's frames are square; pass one int, e.g. 64")
        self.env_id = env_id
        self.envs: list = []
        try:
            for _ in range(batch_size):
                made = make_env(
                    env_id, frameskip=frameskip, repeat_action_probability=repeat_action_probability
                )
                self.envs.append(made.env)
            self.frameskip, self._repeats, self.sticky, self.env_fps = made[1:]
            self.key_names = key_names(self.envs[0], f"--world {self.name}")
        except BaseException:
            self.close()
            raise
        from gymnasium import spaces  # loaded by make_env already

        space = self.envs[0].action_space
        self.discrete = isinstance(space, spaces.Discrete)
        self._start = int(space.start) if self.discrete else 0  # Discrete(n, start=s) acts s..s+n-1
        self.height = self.width = size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._obs: list = [None] * batch_size
        self.done = torch.zeros(batch_size, dtype=torch.bool)
        self.reward = torch.zeros(batch_size, dtype=torch.float32)
        self._closed = False

    @property
    def name(self) -> str:
        return GYM_PREFIX + self.env_id

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            env_id=self.env_id,
            frameskip=self.frameskip,
            size=self.height,
            actions="one-hot" if self.discrete else "multi-hot",
            env_fps=self.env_fps,
        )
        if self.sticky is not None:
            d["repeat_action_probability"] = self.sticky
        return d

    def _slots(self, slots: Sequence[int] | None) -> list[int]:
        if slots is None:
            return list(range(self.batch_size))
        out = [int(s) for s in slots]
        bad = [s for s in out if not 0 <= s < self.batch_size]
        if bad:
            raise ValueError(f"slots {bad} out of range for a world of {self.batch_size} games")
        return out

    def _frames(self, slots: list[int]) -> torch.Tensor:
        where = f"--world {self.name}"
        frames = np.stack([env_frame(self.envs[s], self._obs[s], self.height, where) for s in slots])
        return torch.from_numpy(frames).to(self.device)  # [R, H, W, 3] uint8

    def reset(
        self,
        seeds: Sequence[int] | int | None = None,
        *,
        slots: Sequence[int] | None = None,
    ) -> torch.Tensor:
        rows = self._slots(slots)
        for s, seed in zip(rows, normalize_seeds(seeds, len(rows))):
            self._obs[s], _ = self.envs[s].reset(seed=seed)
            self.done[s], self.reward[s] = False, 0.0
        return self._frames(rows)

    def action(self, keys: np.ndarray) -> object:
        """The env action for one game's `[K]` bool keys: one Discrete action, or the MultiBinary row."""
        if self.discrete:
            held = [n for n, k in zip(self.key_names, keys) if k]
            return self._start + choose_action(held, self.key_names)
        return keys.astype(np.int8)

    def step(self, keys: torch.Tensor, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        rows = self._slots(slots)
        held = keys_tensor(keys, len(rows), self.num_keys).numpy()  # [R, K] bool, on the CPU the envs use
        for s, row in zip(rows, held):
            env, action, reward, ended = self.envs[s], self.action(row), 0.0, False
            for _ in range(self._repeats):
                self._obs[s], r, terminated, truncated, _ = env.step(action)
                reward += float(r)
                if terminated or truncated:
                    ended = True
                    break
            if ended:  # the world keeps going: the next episode starts from the env's own RNG
                self._obs[s], _ = env.reset()
            self.done[s], self.reward[s] = ended, reward
        return self._frames(rows)

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for env in self.envs:
            env.close()
