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
from worldsim.gym_env import env_frame, key_names, make_env

log = logging.getLogger(__name__)

ATARI_HZ = 60  # the emulator's frame rate: an Atari dataset's fps is this over the frame skip


def open_env(env_id: str, frame_skip: int | None) -> tuple[object, int, int]:
    """(env, steps repeated per recorded frame by collect, frame skip in all): `gym_env.make_env`'s env,
    whose ALE games skip frames themselves (v5's own 4) and every other env repeats the action."""
    if frame_skip is not None and (not isinstance(frame_skip, int) or frame_skip < 1):
        raise UserError(f"--frame-skip must be an int >= 1, got {frame_skip!r}")
    made = make_env(env_id, frameskip=frame_skip, where=f"--env {env_id}")
    return made.env, made.repeats, made.frameskip


def env_kwargs(ale: bool, frame_skip: int | None) -> dict:
    """What collect changes in an env's own settings. ALE: no sticky actions in the emulator (v5 repeats the
    previous action a quarter of the time, so a recorded key would not be the one played; the policy mix
    holds keys itself), and the frame skip asked for."""
    if not ale:
        return {}
    return {"repeat_action_probability": 0.0, **({} if frame_skip is None else {"frameskip": frame_skip})}


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
        pending = (env_frame(env, obs, size, f"--env {env_id}"), np.zeros(len(names), bool), True)
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
                pending = (env_frame(env, obs, size, f"--env {env_id}"), keys, reset)
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

        names = list(key_names(env, f"--env {env_id}"))
        discrete = isinstance(env.action_space, spaces.Discrete)
        ale = "ale_py" in str(getattr(env.spec, "entry_point", ""))
        fps = ATARI_HZ if ale else env.metadata.get("render_fps")
        obs, _ = env.reset(seed=seed)
        env_frame(env, obs, size, f"--env {env_id}")  # a wrong render fails here, before any worker starts
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
