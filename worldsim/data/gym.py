"""Turn any Gymnasium env with an rgb_array render and Discrete/MultiBinary actions into a dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldsim.data.dataset import DatasetWriter
from worldsim.errors import UserError
from worldsim.gym_env import render_rgb
from worldsim.gym_env import resize_frame as _resize

log = logging.getLogger(__name__)


def key_names_for(space: object, env_id: str) -> list[str]:
    """Discrete(n) -> one-hot `action_0..action_{n-1}`; MultiBinary(n) -> `key_0..key_{n-1}`."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return [f"action_{i}" for i in range(int(space.n))]
    if isinstance(space, spaces.MultiBinary) and len(space.shape) == 1:
        return [f"key_{i}" for i in range(int(space.shape[0]))]
    raise UserError(
        f"--env {env_id}: action space {space} is not supported; collect needs Discrete(n) or a 1-D "
        "MultiBinary(n) (wrap other spaces in a gymnasium.ActionWrapper that maps keys to actions)"
    )


class StickyRandom:
    """A random policy that holds each choice for a random number of steps (numpy, one env)."""

    def __init__(self, space: object, seed: int, hold: tuple[int, int] = (2, 12)) -> None:
        from gymnasium import spaces

        self.discrete = isinstance(space, spaces.Discrete)
        self.n = int(space.n) if self.discrete else int(space.shape[0])
        self.rng = np.random.default_rng(seed)
        self.hold = hold
        self._left = np.zeros(1 if self.discrete else self.n, np.int64)
        self._state = np.zeros(self.n, bool)

    def act(self) -> tuple[object, np.ndarray]:
        """The env action and the keys [K] bool that record it."""
        self._left -= 1
        expired = self._left <= 0
        if self.discrete:
            if expired[0]:
                self._state[:] = False
                self._state[self.rng.integers(self.n)] = True
                self._left[0] = self.rng.integers(self.hold[0], self.hold[1] + 1)
            return int(np.argmax(self._state)), self._state.copy()
        fresh = self.rng.random(self.n) < 0.5
        self._state = np.where(expired, fresh, self._state)
        self._left = np.where(expired, self.rng.integers(self.hold[0], self.hold[1] + 1, self.n), self._left)
        return self._state.astype(np.int8), self._state.copy()


def collect_env(
    env_id: str,
    out: str | Path,
    *,
    clips: int,
    frames: int,
    size: int,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Play `env_id` with a sticky random policy and save `clips` clips of `frames` frames at size x size.

    keys[t] is the action that produced frames[t]; when an episode ends the env resets and the reset
    frame has all keys off, so clips run across episodes with the boundary visible in the keys.
    """
    import gymnasium

    for name, value in (("clips", clips), ("frames", frames), ("size", size)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} must be an int >= 1, got {value!r}")
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array")
    except gymnasium.error.Error as e:
        raise UserError(f"--env {env_id}: {e}") from None
    try:
        names = key_names_for(env.action_space, env_id)
        policy = StickyRandom(env.action_space, seed)
        env.reset(seed=seed)
        first = render_rgb(env, f"--env {env_id}")
        writer = DatasetWriter(
            out,
            key_names=names,
            height=size,
            width=size,
            frames=frames,
            source=f"gymnasium env={env_id} seed={seed} sticky-random",
            fps=env.metadata.get("render_fps"),
        )
        pending = (_resize(first, size), np.zeros(len(names), bool))
        episodes = 1
        for _ in tqdm(range(clips), unit="clip", desc=f"collect {env_id}", disable=not progress):
            clip_f = np.empty((frames, size, size, 3), np.uint8)
            clip_k = np.empty((frames, len(names)), bool)
            for t in range(frames):
                clip_f[t], clip_k[t] = pending
                action, keys = policy.act()
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()
                    episodes += 1
                    keys = np.zeros(len(names), bool)
                pending = (_resize(render_rgb(env, f"--env {env_id}"), size), keys)
            writer.add(clip_f[None], clip_k[None])
        log.info("--env %s: %d clips from %d episodes", env_id, clips, episodes)
        return writer.close()
    finally:
        env.close()
