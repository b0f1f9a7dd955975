"""A Gymnasium Env over a lockstep session on a worldsim server: one `step` = one remote frame.

    env = gymnasium.make("worldsim/Remote-v0", address="tcp://127.0.0.1:5555")  # or RemoteWorldEnv(addr)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are the frames `[H, W, 3]` uint8; actions are the multi-hot keys (`MultiBinary(K)`).
Reward, termination, `info` and render modes are those of the local env (worldsim/envs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from worldsim.controllers.client import Client, Frame, ServerError
from worldsim.controllers.frames import world_label

from worldsim.env_render import RENDER_MODES, HumanView, check_render_mode, env_info


class RemoteWorldEnv(gym.Env):
    """Gymnasium Env backed by `worldsim serve`; deterministic for a seed and an action sequence.

    - Reward: always 0.0 (a world model, not a task: wrap the env to add one).
    - Termination: never; episodes end by truncation only: after `max_episode_steps` here, or the
      registered id's TimeLimit (1000 steps) through `gymnasium.make("worldsim/Remote-v0", ...)`.
    - `info` (reset and step): `frame`, `seed`, `world` and `blocked` (None: the protocol does not
      carry it), the same keys as the local envs (worldsim/env_render.py).
    - `render_mode`: "rgb_array" (`render()` returns the frame), "human" (a pygame window shows every
      frame at the server's fps; `render()` returns None) or None.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 30}

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
        check_render_mode(render_mode)
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
        self.world_name = world_label(str(welcome.get("world", "?")))
        self._frame: Frame | None = None
        self._steps = 0
        self._seed = 0
        self._view = HumanView(f"worldsim: {self.world_name} at {addr}", self.metadata["render_fps"])
        self.last_latency_ms: float | None = None  # round trip of the last step

    def _obs(self, frame: Frame) -> np.ndarray:
        self._frame = frame
        if self.render_mode == "human":
            self._view.show(frame.image)
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
        self._steps, self._seed = 0, int(game_seed)
        return self._obs(frame), env_info(frame.number, self._seed, self.world_name)

    def step(self, action: Any):
        keys = np.asarray(action).reshape(-1)
        if keys.shape != (len(self.key_names),):
            raise ValueError(f"action must have {len(self.key_names)} entries ({', '.join(self.key_names)})")
        frame = self.client.step(keys.astype(bool))
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self.last_latency_ms = frame.latency_ms  # not in info: info must be deterministic
        info = env_info(frame.number, self._seed, self.world_name)
        return self._obs(frame), 0.0, False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return np.array(self._frame.image, copy=True)

    def close(self) -> None:
        self._view.close()
        self.client.close()


def make_remote(
    address: str | None = None, render_mode: str | None = "rgb_array", **kwargs: Any
) -> RemoteWorldEnv:
    """`gymnasium.make("worldsim/Remote-v0", address="tcp://127.0.0.1:5555")`; other keywords go to
    `RemoteWorldEnv` (encoding, keys_dir, timeout_s, name)."""
    if not address:
        raise ValueError(
            f"address={address!r}: worldsim/Remote-v0 needs the server, e.g. "
            'gymnasium.make("worldsim/Remote-v0", address="tcp://127.0.0.1:5555")'
        )
    return RemoteWorldEnv(address, render_mode=render_mode, **kwargs)
