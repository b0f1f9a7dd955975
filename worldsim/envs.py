"""Gymnasium environments: any batch-1 `World` as a `gymnasium.Env`, registered as worldsim/*-v0.

`import worldsim` registers `worldsim/Maze-v0` (the real game) and `worldsim/Neural-v0` (a trained
model). Observations are the frames, `[H, W, 3]`
uint8; actions are the multi-hot keys, `MultiBinary(K)`; reward is 0 (these are world models, not
tasks: wrap them to add one); episodes end only by truncation (`max_episode_steps`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldsim.registration import MAX_EPISODE_STEPS, MAZE_ID, NEURAL_ID, register  # noqa: F401 (the ids, from here too)
from worldsim.world import World
from worldsim.worlds import make_world


class WorldEnv(gym.Env):
    """A `gymnasium.Env` around a `World` of batch size 1. `reset(seed=s)` starts game seed s."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, world: World, render_mode: str | None = "rgb_array") -> None:
        if world.batch_size != 1:
            raise ValueError(
                f"WorldEnv needs a world of batch_size 1, got {world.batch_size}; make it with batch_size=1"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.world = world
        self.render_mode = render_mode
        self.key_names = tuple(world.key_names)
        self.observation_space = spaces.Box(0, 255, (world.height, world.width, 3), np.uint8)
        self.action_space = spaces.MultiBinary(world.num_keys)
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # an explicit seed is the game's seed; otherwise draw one from the env's seeded generator
        game_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        frame = self.world.reset([game_seed])
        self._frame = frame[0].cpu().numpy()
        return self._frame, {"seed": game_seed}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        keys = torch.as_tensor(np.asarray(action, dtype=np.uint8).reshape(1, -1), device=self.world.device)
        frame = self.world.step(keys)
        self._frame = frame[0].cpu().numpy()
        info = {}
        blocked = getattr(self.world, "blocked", None)
        if isinstance(blocked, torch.Tensor):
            info["blocked"] = bool(blocked[0])
        return self._frame, 0.0, False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self) -> None:
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
    """Register worldsim/Maze-v0 and worldsim/Neural-v0 with gymnasium (safe to call again)."""
    register(gym)
