"""Turn any Gymnasium env with an rgb_array render and Discrete/MultiBinary actions into a dataset
(`worldsim collect --env ID`), in parallel processes if asked."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldsim.data.dataset import DatasetWriter, check_new_folder, write_meta
from worldsim.data.policy import MixedPolicy, describe_mix
from worldsim.errors import UserError
from worldsim.gym_env import render_rgb
from worldsim.gym_env import resize_frame as _resize

log = logging.getLogger(__name__)

ATARI_HZ = 60  # the emulator's frame rate: an Atari dataset's fps is this over the frame skip


def key_names_for(space: object, env_id: str, meanings: list[str] | None = None) -> list[str]:
    """Discrete(n) -> one-hot keys named by the env's action meanings (Atari: NOOP, FIRE, RIGHT, ...) or
    `action_0..action_{n-1}`; MultiBinary(n) -> `key_0..key_{n-1}`."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        if meanings and len(meanings) == n and len(set(meanings)) == n:
            return [str(m) for m in meanings]
        return [f"action_{i}" for i in range(n)]
    if isinstance(space, spaces.MultiBinary) and len(space.shape) == 1:
        return [f"key_{i}" for i in range(int(space.shape[0]))]
    raise UserError(
        f"--env {env_id}: action space {space} is not supported; collect needs Discrete(n) or a 1-D "
        "MultiBinary(n) (wrap other spaces in a gymnasium.ActionWrapper that maps keys to actions)"
    )


def open_env(env_id: str, frame_skip: int | None) -> tuple[object, int, int]:
    """(env, steps repeated per recorded frame by collect, frame skip in all). ALE envs skip frames
    themselves (`frameskip`: the emulator repeats the action; v5's own is 4); any other env repeats the
    action `frame_skip` times (default 1)."""
    import gymnasium

    if frame_skip is not None and (not isinstance(frame_skip, int) or frame_skip < 1):
        raise UserError(f"--frame-skip must be an int >= 1, got {frame_skip!r}")
    if env_id.startswith("ALE/"):
        try:  # the Atari games register themselves on import: an optional extra
            import ale_py

            gymnasium.register_envs(ale_py)
        except ImportError:
            raise UserError(f'--env {env_id}: Atari envs need ale-py; pip install -e ".[atari]"') from None
    try:
        spec = gymnasium.spec(env_id)
        ale = "ale_py" in str(spec.entry_point)
        env = gymnasium.make(env_id, render_mode="rgb_array", **env_kwargs(ale, frame_skip))
    except gymnasium.error.Error as e:
        raise UserError(f"--env {env_id}: {e}") from None
    if ale:
        return env, 1, int(env.spec.kwargs.get("frameskip", 1)) if env.spec else 1
    return env, frame_skip or 1, frame_skip or 1


def env_kwargs(ale: bool, frame_skip: int | None) -> dict:
    """What collect changes in an env's own settings. ALE: no sticky actions in the emulator (v5 repeats the
    previous action a quarter of the time, so a recorded key would not be the one played; the policy mix
    holds keys itself), and the frame skip asked for."""
    if not ale:
        return {}
    return {"repeat_action_probability": 0.0, **({} if frame_skip is None else {"frameskip": frame_skip})}


def action_meanings(env: object) -> list[str] | None:
    """Atari-style names of the Discrete actions (`get_action_meanings()`), None where the env has none."""
    get = getattr(getattr(env, "unwrapped", env), "get_action_meanings", None)
    return list(get()) if callable(get) else None


def _frame(env: object, obs: object, env_id: str) -> np.ndarray:
    """The env's picture: an RGB observation itself (Atari: no second render), else render()."""
    if isinstance(obs, np.ndarray) and obs.ndim == 3 and obs.shape[2] == 3 and obs.dtype == np.uint8:
        return obs
    return _render(env, env_id)


def _part_seed(seed: int, worker: int) -> int:
    return int(np.random.SeedSequence([seed, worker]).generate_state(1)[0])


_tick = None  # called once per clip written: moves the progress bar (set per process)


def _init_worker(counter) -> None:
    """A pool worker's start: count clips in the counter the parent's progress bar reads."""
    global _tick

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    _tick = tick


def _collect_part(task: dict) -> dict:
    """One worker: play `task["clips"]` clips with its own env and seed, write shards `shard-wNN-*`."""
    env_id, size, frames, worker = task["env"], task["size"], task["frames"], task["worker"]
    env, repeat, _ = open_env(env_id, task["frame_skip"])
    seed = _part_seed(task["seed"], worker)
    try:
        names = task["key_names"]
        discrete = task["discrete"]
        policy = MixedPolicy(len(names), discrete=discrete, seed=seed, fire=task["fire"])
        writer = DatasetWriter(task["out"], key_names=names, height=size, width=size, frames=frames,
                               source="", prefix=f"shard-w{worker:02d}", new=False)  # fmt: skip
        obs, info = env.reset(seed=seed)
        policy.start()
        episode = worker << 40  # ids unique over the workers
        lives = info.get("lives")
        pending = (_resize(_frame(env, obs, env_id), size), np.zeros(len(names), bool), True)
        for _ in range(task["clips"]):
            clip_f = np.empty((frames, size, size, 3), np.uint8)
            clip_k = np.empty((frames, len(names)), bool)
            clip_e = np.empty(frames, np.int64)
            clip_r = np.empty(frames, bool)
            for t in range(frames):
                clip_f[t], clip_k[t], clip_r[t] = pending
                clip_e[t] = episode
                keys = policy.act()
                action = int(np.argmax(keys)) if discrete else keys.astype(np.int8)
                for _ in range(repeat):
                    obs, _, terminated, truncated, info = env.step(action)
                    if terminated or truncated:
                        break
                reset = terminated or truncated
                if reset:  # the reset frame: all keys off (no key made it) and flagged
                    obs, info = env.reset()
                    episode += 1
                    keys = np.zeros(len(names), bool)
                    policy.start()
                elif info.get("lives") is not None and lives is not None and info["lives"] < lives:
                    policy.start()  # a lost life: FIRE relaunches
                lives = info.get("lives")
                pending = (_resize(_frame(env, obs, env_id), size), keys, reset)
            writer.add(clip_f[None], clip_k[None], clip_e[None], clip_r[None])
            if _tick is not None:
                _tick()
        return {"shards": writer.finish(), "episodes": len(writer.episodes), "steps": policy.counts}
    finally:
        env.close()


def collect_env(
    env_id: str,
    out: str | Path,
    *,
    clips: int,
    frames: int,
    size: int,
    seed: int = 0,
    frame_skip: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Play `env_id` with the policy mix of worldsim/data/policy.py and save `clips` clips of `frames`
    frames at size x size.

    keys[t] is the action that produced frames[t]; when an episode ends the env resets, and the reset
    frame has all keys off and its reset flag set, so clips run across episodes with the boundary
    recorded. `workers` > 1 plays that many envs in processes of their own (each its own seed and
    shards); the clips are split between them.
    """
    out = Path(out)
    for name, value in (("clips", clips), ("frames", frames), ("size", size), ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} must be an int >= 1, got {value!r}")
    check_new_folder(out)
    env, _, skip = open_env(env_id, frame_skip)
    try:
        from gymnasium import spaces

        names = key_names_for(env.action_space, env_id, action_meanings(env))
        discrete = isinstance(env.action_space, spaces.Discrete)
        ale = "ale_py" in str(getattr(env.spec, "entry_point", ""))
        fps = ATARI_HZ if ale else env.metadata.get("render_fps")
        obs, _ = env.reset(seed=seed)
        _frame(env, obs, env_id)  # a wrong render fails here, before any worker starts
    finally:
        env.close()
    workers = min(workers, clips)
    share = [clips // workers + (w < clips % workers) for w in range(workers)]
    base = {"env": env_id, "out": str(out), "frames": frames, "size": size, "seed": seed, "frame_skip": frame_skip,
            "key_names": names, "discrete": discrete, "fire": names.index("FIRE") if "FIRE" in names else None}  # fmt: skip
    tasks = [{**base, "worker": w, "clips": n} for w, n in enumerate(share)]
    out.mkdir(parents=True, exist_ok=True)
    parts = _run_parts(tasks, clips, f"collect {env_id}", progress)
    steps = {k: sum(p["steps"][k] for p in parts) for k in parts[0]["steps"]}
    header = {"key_names": names, "height": size, "width": size, "frames": frames,
              "fps": None if fps is None else fps / skip, "source": f"gymnasium env={env_id} seed={seed} policy mix",
              "env": env_id, "seed": seed, "frame_skip": skip, "workers": workers,
              "env_kwargs": env_kwargs(ale, frame_skip),
              "policy": {**describe_mix(), "fire": base["fire"] is not None, "steps": steps}}  # fmt: skip
    episodes = sum(p["episodes"] for p in parts)
    log.info("--env %s: %d clips from %d episodes", env_id, clips, episodes)
    return write_meta(out, header, [s for p in parts for s in p["shards"]], episodes=episodes)


def _run_parts(tasks: list[dict], clips: int, desc: str, progress: bool) -> list[dict]:
    """Run the collect tasks: in this process for one, else in a process pool with a shared progress bar."""
    global _tick
    with tqdm(total=clips, unit="clip", desc=desc, disable=not progress) as bar:
        if len(tasks) == 1:
            _tick = functools.partial(bar.update, 1)
            try:
                return [_collect_part(tasks[0])]
            finally:
                _tick = None
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: no torch threads or GPU state copied by fork
        counter = ctx.Value("q", 0)
        with ctx.Pool(len(tasks), initializer=_init_worker, initargs=(counter,)) as pool:
            result = pool.map_async(_collect_part, tasks)
            while not result.ready():
                result.wait(0.5)
                bar.update(counter.value - bar.n)
            bar.update(counter.value - bar.n)
            return result.get()


def _render(env: object, env_id: str) -> np.ndarray:
    return render_rgb(env, f"--env {env_id}")
