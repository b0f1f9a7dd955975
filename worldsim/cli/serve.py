"""`worldsim serve`: serve a World over ZeroMQ; `worldsim keys DIR`: make CURVE key pairs for it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal

from worldsim.cli.options import add_no_verify, check_frame_size

DEFAULT_BIND = "tcp://127.0.0.1:5555"

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the real game or the neural world to players and agents over ZeroMQ",
        description=(
            "One ROUTER socket; real-time sessions tick at their fps, lockstep sessions step on request; "
            "all due sessions share one batched World.step. Protocol: docs/protocol.md. Binds loopback "
            "by default; another address needs --keys DIR (see `worldsim keys`) or --insecure."
        ),
    )
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"ZeroMQ endpoint to bind (default {DEFAULT_BIND})")
    p.add_argument(
        "--world",
        default=None,
        metavar="game|neural|gym:ID",
        help="what makes the frames: the real game, the model or a Gymnasium env such as "
        "gym:ALE/Breakout-v5 (default: game, or neural with --checkpoint)",
    )
    p.add_argument(
        "--checkpoint", default=None, help="neural world: checkpoint name or path (default: best shipped)"
    )
    p.add_argument(
        "--size", type=int, default=64, help="game and gym worlds: frame size in pixels (default 64)"
    )
    p.add_argument("--level", default="default", help="game world: 'default' or an int procedural seed")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the world's choice)")
    p.add_argument(
        "--gpus",
        default=None,
        metavar="all|N",
        help="one engine per GPU on cuda:0..N-1 behind this endpoint; sessions go to the least-loaded one",
    )
    p.add_argument(
        "--engines",
        type=int,
        default=1,
        help="engines (batched worlds) on --device, each with --max-sessions sessions (default 1)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=16,
        help="sessions per engine (each engine's batch size; the server takes engines x this)",
    )
    p.add_argument(
        "--max-per-client",
        type=int,
        default=4,
        help="sessions one connection (under --keys: one client key) may hold at once (default 4)",
    )
    p.add_argument(
        "--fps", type=float, default=30.0, help="real-time tick rate and the cap a client may ask for"
    )
    p.add_argument("--record-dir", default=None, metavar="DIR", help="record every session to DIR/*.wsrec")
    p.add_argument(
        "--keys", default=None, metavar="DIR", help="require CURVE keys from DIR (`worldsim keys DIR`)"
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without keys")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for the world (default 1: on a CPU shared with clients more threads "
        "spin against them and raise latency; 0 keeps torch's default)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds of silence before a session expires")
    add_no_verify(p)
    p.set_defaults(func=run_serve)

    k = sub.add_parser(
        "keys",
        help="make CURVE key pairs for `worldsim serve --keys DIR`",
        description=(
            "Creates DIR/server.key(_secret) if missing and a client pair DIR/NAME.key(_secret), and "
            "allow-lists the client by copying its public key to DIR/authorized/. Give a client "
            "server.key and its own NAME.key_secret; keep server.key_secret on the server."
        ),
    )
    k.add_argument("dir", help="key directory")
    k.add_argument("--client", default="client", help="client key name (default: client)")
    k.set_defaults(func=run_keys)


def run_serve(args: argparse.Namespace) -> int:
    from worldsim.errors import UserError
    from worldsim.serve import Server, world_factory
    from worldsim.worlds import check_kind

    check_frame_size(args.size)
    world = args.world or ("neural" if args.checkpoint else "game")
    check_kind(world)
    if world != "neural" and args.checkpoint:
        raise UserError("--checkpoint is for --world neural; drop it or pass --world neural")
    level: str | int = int(args.level) if args.level.lstrip("-").isdigit() else args.level
    if world == "game":
        check_game_args(args.size, level)
    elif world != "neural":
        if args.level != "default":
            raise UserError(f"--level is for --world game; a gym world ({world}) has the env's own levels")
    elif args.size != 64 or args.level != "default":
        log.warning(
            "--size %d / --level %s ignored: a neural world's frames and level come from its checkpoint",
            args.size,
            args.level,
        )
    from worldsim.serve.engines import on_device

    factories = [
        on_device(
            world_factory(world, checkpoint=args.checkpoint, size=args.size, level=level, device=device),
            device,
        )
        for device in engine_devices(args.gpus, args.engines, args.device)
    ]
    server = Server(
        factories,
        bind=args.bind,
        max_sessions=args.max_sessions,
        max_per_client=args.max_per_client,
        fps=args.fps,
        record_dir=args.record_dir,
        keys_dir=args.keys,
        insecure=args.insecure,
        session_timeout_s=args.timeout,
        torch_threads=args.threads or None,
    )

    def stop(signum: int, _frame: object) -> None:
        # Finish the current tick, say bye to every client and close the recordings; a second
        # Ctrl-C interrupts at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def engine_devices(gpus: str | None, engines: int, device: str | None) -> list[str | None]:
    """The device of each engine: cuda:0..N-1 for `--gpus all|N`, else `--engines` times `--device`."""
    from worldsim.errors import UserError

    if engines < 1:
        raise UserError(f"--engines must be >= 1, got {engines}")
    if gpus is None:
        if device is not None:
            from worldsim.device import resolve_device  # torch: only the verbs that need it load it

            resolve_device(device)  # one line naming --device and the fix when this machine lacks it
        return [device] * engines
    if device is not None or engines != 1:
        raise UserError("--gpus picks the devices and the engine count; drop --device and --engines")
    import torch

    have = torch.cuda.device_count()
    if gpus == "all":
        n = have
    elif gpus.isdigit() and int(gpus) >= 1:
        n = int(gpus)
    else:
        raise UserError(f"--gpus must be 'all' or a count >= 1, got {gpus!r}")
    if have == 0:
        raise UserError(f"--gpus {gpus} but torch sees no GPU; on CPU use --engines N --device cpu")
    if n > have:
        raise UserError(f"--gpus {gpus} but torch sees {have} GPU(s); use --gpus all or a count <= {have}")
    return [f"cuda:{i}" for i in range(n)]


MAX_GAME_SIZE = 1024  # frame side in pixels: 16 sessions of 1024x1024 are ~50 MB of frames a tick


def check_game_args(size: int, level: str | int) -> None:
    """--size and --level of the real game, checked before anything is built or allocated."""
    from worldsim.errors import UserError
    from worldsim.game.world import resolve_level

    if not 8 <= size <= MAX_GAME_SIZE:
        raise UserError(
            f"--size {size}: frames must be 8 to {MAX_GAME_SIZE} pixels a side; 64 or 128 are the usual"
        )
    try:
        resolve_level(level)
    except ValueError:
        raise UserError(
            f"--level {level!r}: use 'default' or an int procedural seed (e.g. --level 3)"
        ) from None


def run_keys(args: argparse.Namespace) -> int:
    from worldsim.serve.security import make_keys

    made = make_keys(args.dir, client=args.client)
    print(f"server public key: {made['server_public']}  (give to clients)")
    print(f"client key pair:   {made['client_secret']}  (allow-listed in {args.dir}/authorized/)")
    print(f"serve with: worldsim serve --bind tcp://0.0.0.0:5555 --keys {args.dir}")
    return 0
