"""`worldsim collect`: make a training dataset from the game, from recordings, or from a Gymnasium env."""

from __future__ import annotations

import argparse

from worldsim.cli.options import check_frame_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="write a dataset of (frames, keys) clips: from the game, .wsrec recordings, or a Gymnasium env",
        description=(
            "Default: render clips from the real game with the scripted explorer. --from-recording cuts "
            ".wsrec recordings of the game into clips; --env ID (or --world gym:ID) plays a Gymnasium env "
            "(rgb_array render, Discrete or MultiBinary actions) with a policy mix of 16-48-step segments: "
            "random actions (25% of the steps), sticky keys held 2-12 steps (55%) and one action held "
            "through the segment (20%: worldsim/data/policy.py MIX); envs with FIRE press it at every episode start and lost life. "
            "Episodes restart inside clips; the reset frame is flagged and has all keys off. The dataset is "
            "compressed shards with a manifest (meta.json: env, keys, size, counts, policy, frame skip)."
        ),
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="new dataset folder (meta.json + compressed .npz shards)"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-recording", nargs="+", metavar="FILE", help=".wsrec recordings of the real game")
    src.add_argument("--env", metavar="ID", help="a Gymnasium env id, e.g. CartPole-v1 or ALE/Breakout-v5")
    src.add_argument("--world", metavar="gym:ID", help="the same as --env ID")
    p.add_argument("--clips", type=int, default=64, help="clips to collect (game, --env), default 64")
    p.add_argument("--frames", type=int, default=32, help="frames per clip, default 32")
    p.add_argument(
        "--size", type=int, default=64, help="frame size S (SxS) for the game and --env, default 64"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for spawns and the explorer/policy, default 0")
    p.add_argument("--device", default="cpu", help="device the game renders on (cpu, cuda), default cpu")
    p.add_argument("--level", default="default", help="'default' or an int procedural level seed")
    p.add_argument("--batch", type=int, default=64, help="games rendered together (game), default 64")
    p.add_argument("--any-world", action="store_true", help="accept recordings of worlds other than the game")
    p.add_argument("--frame-skip", type=int, default=None, metavar="N",
                   help="--env: env steps per recorded frame (ALE: the emulator's frameskip, default v5's 4; "
                        "other envs repeat the action, default 1)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="--env: envs played in parallel processes, each with its own seed (default 1)")  # fmt: skip
    p.set_defaults(func=run)


def _level(value: str) -> str | int:
    from worldsim.errors import UserError

    if value == "default":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--level must be 'default' or an int procedural seed, got '{value}'") from None


def run(args: argparse.Namespace) -> int:
    if args.world is not None:
        from worldsim.errors import UserError

        if not args.world.startswith("gym:") or len(args.world) == 4:
            raise UserError(
                f"--world {args.world}: collect plays a Gymnasium env, e.g. --world gym:CartPole-v1"
            )
        args.env = args.world[4:]
    if not args.from_recording:  # recordings keep their own size
        check_frame_size(args.size)
    if args.from_recording:
        from worldsim.data.collect import collect_recordings

        out = collect_recordings(args.from_recording, args.out, frames=args.frames, any_world=args.any_world)
    elif args.env:
        from worldsim.data.gym import collect_env

        out = collect_env(args.env, args.out, clips=args.clips, frames=args.frames, size=args.size, seed=args.seed,
                          frame_skip=args.frame_skip, workers=args.workers)  # fmt: skip
    else:
        from worldsim.data.collect import collect_game

        out = collect_game(
            args.out,
            clips=args.clips,
            frames=args.frames,
            size=args.size,
            seed=args.seed,
            device=args.device,
            level=_level(args.level),
            batch=args.batch,
        )
    from worldsim.data.dataset import Dataset

    ds = Dataset(out)
    mb = sum(s.get("bytes", 0) for s in ds.meta["shards"]) / 2**20
    print(f"wrote {out}: {len(ds)} clips of {ds.frames} frames, {ds.width}x{ds.height}, keys {ds.key_names}, "
          f"{ds.meta.get('episode_count')} episodes, {mb:.1f} MiB")  # fmt: skip
    return 0
