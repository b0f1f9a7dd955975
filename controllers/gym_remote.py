"""A Gymnasium Env over a lockstep session on a worldsim server: one `step` = one remote frame.

    env = RemoteWorldEnv("tcp://127.0.0.1:5555")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are the frames `[H, W, 3]` uint8; actions are the multi-hot keys (`MultiBinary(K)`).
The game has no score, so the reward is 0 and episodes end only through `max_episode_steps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from worldsim.controllers.client import Client, Frame, ServerError


class RemoteWorldEnv(gym.Env):
    """Gymnasium Env backed by `worldsim serve`; deterministic for a seed and an action sequence."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        addr: str,
        *,
        render_mode: str | None = "rgb_array",
        max_episode_steps: int | None = None,
        encoding: str = "raw",
        keys_dir: str | Path | None = None,
        timeout_s: float = 10.0,
        name: str = "gym",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.client = Client(
            addr, mode="lockstep", encoding=encoding, keys_dir=keys_dir, timeout_s=timeout_s, name=name
        )
        welcome = self.client.connect()
        h, w, self.key_names = welcome["height"], welcome["width"], list(welcome["key_names"])
        self.metadata = {**self.metadata, "render_fps": welcome["fps"]}
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.action_space = gym.spaces.MultiBinary(len(self.key_names))
        self._frame: Frame | None = None
        self._steps = 0
        self.last_latency_ms: float | None = None  # round trip of the last step

    def _obs(self, frame: Frame) -> np.ndarray:
        self._frame = frame
        return np.array(frame.image, dtype=np.uint8, copy=True)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # Without a seed, continue the env's own RNG so a seeded env stays reproducible.
        game_seed = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        try:
            frame = self.client.reset(seed=game_seed)
        except ServerError as e:
            if e.code != "unknown_session":
                raise
            self.client.connect()  # the session expired or the server restarted: start a new one
            frame = self.client.reset(seed=game_seed)
        self._steps = 0
        return self._obs(frame), {"frame": frame.number, "seed": game_seed}

    def step(self, action: Any):
        keys = np.asarray(action).reshape(-1)
        if keys.shape != (len(self.key_names),):
            raise ValueError(f"action must have {len(self.key_names)} entries ({', '.join(self.key_names)})")
        frame = self.client.step(keys.astype(bool))
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self.last_latency_ms = frame.latency_ms  # not in info: info must be deterministic
        return self._obs(frame), 0.0, False, truncated, {"frame": frame.number}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self._frame is None:
            return None
        return np.array(self._frame.image, copy=True)

    def close(self) -> None:
        self.client.close()
