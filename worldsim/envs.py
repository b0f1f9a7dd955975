"""Gymnasium environments: any batch-1 `World` as a `gymnasium.Env`, registered as worldsim/*-v0.

`import worldsim` registers `worldsim/Maze-v0` (the real game), `worldsim/Neural-v0` (a trained model)
and `worldsim/Remote-v0` (a world on a `worldsim serve` server, `address=`; controllers/gym_remote.py).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldsim.controllers.frames import world_label
from worldsim.env_render import RENDER_MODES, HumanView, check_render_mode, env_info
from worldsim.registration import MAX_EPISODE_STEPS, MAZE_ID, NEURAL_ID, REMOTE_ID, register  # noqa: F401 (the ids, from here too)
from worldsim.world import World
from worldsim.worlds import make_world


class WorldEnv(gym.Env):
    """A `gymnasium.Env` around a `World` of batch size 1. `reset(seed=s)` starts game seed s.

    - Observations: the frames, `Box(0, 255, [H, W, 3], uint8)`; actions: the multi-hot keys,
      `MultiBinary(K)` in the order of `world.key_names`.
    - Reward: always 0.0. A world model, not a task: wrap the env to add one.
    - Termination: never (`terminated` is always False); episodes end by truncation only, after
      `max_episode_steps` (1000 for the registered ids, TimeLimit's `truncated`).
    - `info` (reset and step): `frame`, `seed`, `world`, `blocked` (True/False for the real game,
      None for a neural world), the same keys as `worldsim/Remote-v0` (worldsim/env_render.py).
    - `render_mode`: "rgb_array" (`render()` returns the frame), "human" (a pygame window shows every
      frame at `metadata["render_fps"]`; `render()` returns None) or None.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 30}

    def __init__(self, world: World, render_mode: str | None = "rgb_array") -> None:
        if world.batch_size != 1:
            raise ValueError(
                f"WorldEnv needs a world of batch_size 1, got {world.batch_size}; make it with batch_size=1"
            )
        check_render_mode(render_mode)
        self.world = world
        self.world_name = world_label(world.describe()["world"])
        self.render_mode = render_mode
        self.key_names = tuple(world.key_names)
        self.observation_space = spaces.Box(0, 255, (world.height, world.width, 3), np.uint8)
        self.action_space = spaces.MultiBinary(world.num_keys)
        self._frame: np.ndarray | None = None
        self._number = 0
        self._seed = 0
        self._view = HumanView(f"worldsim: {self.world_name}", self.metadata["render_fps"])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # an explicit seed is the game's seed; otherwise draw one from the env's seeded generator
        self._seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        frame = self.world.reset([self._seed])
        self._frame, self._number = frame[0].cpu().numpy(), 0
        self._show()
        return self._frame, env_info(0, self._seed, self.world_name)

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        keys = torch.as_tensor(np.asarray(action, dtype=np.uint8).reshape(1, -1), device=self.world.device)
        frame = self.world.step(keys)
        self._frame = frame[0].cpu().numpy()
        self._number += 1
        self._show()
        blocked = getattr(self.world, "blocked", None)
        blocked = bool(blocked[0]) if isinstance(blocked, torch.Tensor) else None
        return self._frame, 0.0, False, False, env_info(self._number, self._seed, self.world_name, blocked)

    def _show(self) -> None:
        if self.render_mode == "human":
            self._view.show(self._frame)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self) -> None:
        self._view.close()
        self.world.close()


def make_maze(
    render_mode: str | None = "rgb_array",
    size: int | tuple[int, int] = 64,
    level: Any = "default",
    device: str = "cpu",
) -> WorldEnv:
    """The real game as an env: `gymnasium.make("worldsim/Maze-v0", size=64, level="default")`."""

    return WorldEnv(make_world("game", size=size, level=level, device=device), render_mode=render_mode)


def make_neural(
    render_mode: str | None = "rgb_array",
    checkpoint: str | None = None,
    device: str | None = None,
    steps: int | None = None,
) -> WorldEnv:
    """A trained world model as an env: `gymnasium.make("worldsim/Neural-v0", checkpoint="tiny")`."""

    kwargs = {} if steps is None else {"steps": steps}
    world = make_world("neural", checkpoint=checkpoint, device=device, **kwargs)
    return WorldEnv(world, render_mode=render_mode)


def register_envs() -> None:
    """Register worldsim/Maze-v0, worldsim/Neural-v0 and worldsim/Remote-v0 with gymnasium (safe to call
    again)."""
    register(gym)
