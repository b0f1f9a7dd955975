"""The Gymnasium side of a gym world: making an env by id (ale-py's Atari ids registered on demand, with
the frame skip and sticky actions a world wants), its key names and its frames at size x size.

Atari defaults (ale-py's `AtariEnv`): frame skip 4, the v5 default (15 env steps per second of the
arcade's 60 Hz); sticky actions off (`repeat_action_probability` 0.0, where v5 has 0.25): with them a
quarter of the frames ignore the keys pressed, which a player feels as lag and which blurs what a world
model learns from the keys. Pass `repeat_action_probability=0.25` for the v5 benchmark protocol.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from worldsim.errors import UserError

log = logging.getLogger(__name__)

GYM_PREFIX = "gym:"  # how `--world` names a gym world: gym:ALE/Breakout-v5, gym:CartPole-v1
ATARI_FRAMESKIP = 4
ATARI_STICKY = 0.0
ATARI_FIX = 'pip install -e ".[atari]" (ale-py)'


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """An `[H, W, 3]` uint8 frame as `[size, size, 3]`."""
    from PIL import Image

    if frame.shape[:2] == (size, size):
        return frame
    # BOX averages every source pixel under a target pixel: no aliasing when shrinking a 600x400 render.
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BOX))


def _register_atari(env_id: str, where: str) -> bool:
    """Register ale-py's ids with gymnasium; False when ale-py is missing (an error for an ALE/ id)."""
    try:
        import ale_py  # optional extra: only Atari ids need it
    except ImportError:
        if env_id.startswith("ALE/"):
            raise UserError(f"{where}: Atari envs need ale-py; {ATARI_FIX}") from None
        return False
    import gymnasium

    gymnasium.register_envs(ale_py)
    return True


class MadeEnv(NamedTuple):
    env: Any
    frameskip: int  # env frames per world frame
    repeats: int  # env.step calls per world frame (1 where the env skips frames itself)
    sticky: float | None  # Atari's repeat_action_probability (None: not an Atari env)
    fps: float | None  # world frames per second of real time, where the env says


def make_env(
    env_id: str,
    *,
    frameskip: int | None = None,
    repeat_action_probability: float | None = None,
    where: str | None = None,
) -> MadeEnv:
    """`gymnasium.make(env_id, render_mode="rgb_array")` with the frame skip the env does itself (ALE) or
    its caller does by repeating each action `repeats` times (every other env). Errors are one line that
    starts with `where` (default "--world gym:ID"; collect would say "--env ID")."""
    import gymnasium  # heavy, optional for most verbs: only a gym world loads it

    where = where or f"--world {GYM_PREFIX}{env_id}"
    if frameskip is not None and (not isinstance(frameskip, int) or frameskip < 1):
        raise UserError(f"{where}: frameskip must be an int >= 1, got {frameskip!r}; 4 is Atari's usual")
    if repeat_action_probability is not None and not 0.0 <= repeat_action_probability <= 1.0:
        raise UserError(
            f"{where}: repeat_action_probability must be in [0, 1], got {repeat_action_probability!r}"
        )
    if env_id.startswith("ALE/"):
        _register_atari(env_id, where)
    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as e:
        hint = ""
        if not env_id.startswith("ALE/") and not _register_atari(env_id, where):
            hint = f" (Atari ids like ALE/Breakout-v5 need ale-py: {ATARI_FIX})"
        try:
            spec = gymnasium.spec(env_id)
        except gymnasium.error.Error:
            raise UserError(f"{where}: {e}{hint}") from None
    atari = str(spec.entry_point).startswith("ale_py")
    if atari:
        skip = ATARI_FRAMESKIP if frameskip is None else frameskip
        sticky = ATARI_STICKY if repeat_action_probability is None else float(repeat_action_probability)
        kwargs = {"frameskip": skip, "repeat_action_probability": sticky}
        repeats = 1  # the emulator skips frames itself, far faster than stepping it from Python
    else:
        if repeat_action_probability is not None:
            raise UserError(f"{where}: repeat_action_probability is an Atari (ale-py) option")
        skip, sticky, kwargs = frameskip or 1, None, {}
        repeats = skip
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
    except (gymnasium.error.Error, TypeError, ValueError) as e:
        raise UserError(f"{where}: cannot make it ({e})") from None
    # Real time: the arcade runs at 60 Hz; another env's render_fps is one env step's rate.
    env_fps = 60.0 if atari else env.metadata.get("render_fps")
    return MadeEnv(env, skip, repeats, sticky, float(env_fps) / skip if env_fps else None)


def key_names(env, where: str) -> tuple[str, ...]:
    """Discrete(n): one-hot keys named by the env's action meanings (`env.unwrapped.get_action_meanings()`,
    Atari's NOOP, FIRE, RIGHT ...) or `action_0..`; MultiBinary(n): multi-hot `key_0..`."""
    from gymnasium import spaces

    space = env.action_space
    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        meanings = getattr(env.unwrapped, "get_action_meanings", None)
        names = tuple(str(m) for m in meanings()) if callable(meanings) else ()
        if len(names) == n and len(set(names)) == n:
            return names
        return tuple(f"action_{i}" for i in range(n))
    if isinstance(space, spaces.MultiBinary) and len(space.shape) == 1:
        return tuple(f"key_{i}" for i in range(int(space.shape[0])))
    raise UserError(
        f"{where}: action space {space} is not supported; a gym "
        "world needs Discrete(n) or a 1-D MultiBinary(n) (wrap others in a gymnasium.ActionWrapper)"
    )


def observes_rgb(env) -> bool:
    """Whether the env's observation is itself the RGB frame (Atari's), so no render() is needed."""
    from gymnasium import spaces

    space = env.observation_space
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[2] == 3
    )


def rgb_frame(frame: object, where: str) -> np.ndarray:
    """`frame` if it is an `[H, W, 3]` uint8 image, else a one-line error naming `where` (the flag)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        got = (
            type(frame).__name__
            if not isinstance(frame, np.ndarray)
            else f"{frame.dtype} {list(frame.shape)}"
        )
        raise UserError(
            f"{where}: render() returned {got}; it needs an env whose rgb_array render (or observation) "
            "gives uint8 [H, W, 3] frames"
        )
    return frame


def render_rgb(env, where: str) -> np.ndarray:
    """The env's rgb_array render, checked (`rgb_frame`)."""
    return rgb_frame(env.render(), where)


def env_frame(env, obs, size: int, where: str) -> np.ndarray:
    """The env's frame now, `[size, size, 3]` uint8: its observation where that is the RGB image,
    else its rgb_array render."""
    frame = rgb_frame(obs, where) if observes_rgb(env) else render_rgb(env, where)
    return resize_frame(frame, size)
