"""`worldsim play`: a pygame window on the real game or the neural world (or `--headless`), keyboard,
gamepad or a bot at the keys, optional recording of what the player saw."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from worldsim.cli import computes_alone
from worldsim.cli.options import add_no_verify, check_frame_size
from worldsim.errors import UserError
from worldsim.serve.protocol import MAX_SEED

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "play",
        help="play a world in a window (or headless), with the keyboard, a gamepad or a bot",
        description=(
            "Play in a pygame window: W/S or up/down move, A/D strafe, Q/E or left/right turn, R resets, "
            "P pauses, . makes one frame while paused, H or F1 shows the controls, Esc quits; a gamepad "
            "works too. --world gym:ID plays a Gymnasium env (gym:CartPole-v1; gym:ALE/Breakout-v5 with "
            "ale-py): arrows or WASD and Space for Atari's UP/DOWN/LEFT/RIGHT/FIRE, held together for its "
            "combined actions, number keys 1-9 for other action names. The world runs in its own thread "
            "and hands its newest frame to the window (a remote server's world with --connect). "
            "--headless runs lockstep without a display."
        ),
    )
    p.add_argument(
        "--world",
        default=None,
        metavar="game|neural|gym:ID",
        help="the real game, the model or a Gymnasium env such as gym:ALE/Breakout-v5 (default: neural "
        "if a shipped checkpoint fits the device)",
    )
    p.add_argument(
        "--checkpoint", default=None, metavar="NAME|PATH", help="neural checkpoint (implies --world neural)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="game seed (spawn); default 0, or the replayed recording's"
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second the world steps at (default 30; a gym world played in this process: the "
        "env's own real-time speed, 15 for Atari at frame skip 4)",
    )
    p.add_argument(
        "--size", type=int, default=64, help="frame size in pixels for the game and gym worlds (default 64)"
    )
    p.add_argument("--context-noise", type=float, default=None, metavar="T",
                   help="neural world: the noise level finished frames enter the cache at, instead of the checkpoint's (0.1: standing still the view keeps its brightness, walking it moves less; docs/experiments/context_noise_h200)")  # fmt: skip
    p.add_argument("--idle-context-noise", type=float, default=None, metavar="T",
                   help="neural world: the level for frames made while no key is held, instead of the checkpoint's (walking keeps the other level; a student trained at 0.1 holds a still view there, the shipped ones do not: docs/experiments/idle_context_noise)")  # fmt: skip
    p.add_argument(
        "--scale", type=int, default=None, help="integer window scale (default: the largest that fits)"
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda for neural if present)"
    )
    p.add_argument("--record", default=None, metavar="FILE", help="record what you see to a .wsrec file")
    p.add_argument("--headless", action="store_true", help="no window: lockstep play for --frames frames")
    p.add_argument(
        "--frames", type=int, default=None, help="stop after this many frames (needed with --headless)"
    )
    p.add_argument(
        "--connect", default=None, metavar="ADDR", help="play a remote server, e.g. tcp://127.0.0.1:5555"
    )
    p.add_argument(
        "--bot", default=None, metavar="random-sticky|replay:FILE", help="let a bot press the keys"
    )
    p.add_argument(
        "--server",
        action="store_true",
        help="step the world in an embedded server and play it as its client (the networked path, in "
        "one process; the default steps it in a thread of this process)",
    )
    p.add_argument(
        "--no-server", action="store_true", help="the default: no embedded server (kept for scripts)"
    )
    p.add_argument(
        "--vs-bench",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="headless: after play, time the same world stepping flat out for SECONDS and print play's "
        "frames/s as a ratio of it",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for the world this process steps (default: 1 on a CPU, where more "
        "threads spin against the window and the server for cores; all cores for --headless without a "
        "server; 0 keeps torch's default)",
    )
    p.add_argument("--no-gamepad", action="store_true", help="ignore joysticks")
    p.add_argument(
        "--screenshot", default=None, metavar="PNG", help="save the window (frame + HUD) when play ends"
    )
    add_no_verify(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------------


def _check_args(args: argparse.Namespace) -> None:
    if args.fps is not None and not 0 < args.fps <= 240:
        raise UserError(f"--fps {args.fps}: must be in (0, 240]; 30 is the usual")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames {args.frames}: must be >= 1")
    if args.headless and args.frames is None:
        raise UserError("--headless needs --frames N (how many frames to play without a window)")
    if args.headless and args.screenshot:
        raise UserError("--screenshot needs the window; drop --headless")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be >= 1, or 0 for torch's default")
    if args.scale is not None and args.scale < 1:
        raise UserError(f"--scale {args.scale}: must be an integer >= 1")
    check_frame_size(args.size)
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UserError(
            f"--seed {args.seed}: must be in [0, {MAX_SEED}] (it picks the spawn); 0 is the default"
        )
    if args.world is not None:
        from worldsim.worlds import check_kind  # torch: loaded when play runs, not for --help

        check_kind(args.world)
    if args.world not in (None, "neural") and args.checkpoint:
        raise UserError("--checkpoint is for --world neural; drop one of them")
    if args.connect and (
        args.world or args.checkpoint or args.no_server or args.server or args.threads is not None
    ):
        raise UserError(
            "--connect plays the server's world; drop --world/--checkpoint/--server/--no-server/--threads"
        )
    if args.server and args.no_server:
        raise UserError("--server and --no-server contradict each other; drop one")
    if args.vs_bench < 0 or (args.vs_bench and not args.headless):
        raise UserError(f"--vs-bench {args.vs_bench:g}: seconds > 0 of a bench after --headless play")
    if args.vs_bench and (args.connect or args.server):
        raise UserError("--vs-bench times the world this process steps; drop --connect/--server")
    if (
        args.bot
        and args.bot != "random-sticky"
        and not (args.bot.startswith("replay:") and len(args.bot) > 7)
    ):
        raise UserError(f"--bot {args.bot!r}: unknown bot; use 'random-sticky' or 'replay:FILE.wsrec'")
    if args.record and Path(args.record).is_dir():
        raise UserError(f"--record {args.record}: is a directory; pass a file name like play.wsrec")
    if args.record and not Path(args.record).resolve().parent.is_dir():  # found now, not after playing
        raise UserError(
            f"--record {args.record}: folder {Path(args.record).parent} does not exist; create it or pass "
            "a path in an existing folder"
        )
    if args.connect:
        from worldsim.serve.security import check_endpoint  # zmq and torch: only once --connect is given

        check_endpoint(args.connect, "--connect", bind=False)


def _default_device(args: argparse.Namespace, world: str | None) -> str:
    if args.device:
        return args.device
    if world is not None and world != "neural":
        return "cpu"  # one game renders faster on the CPU than a GPU launch costs; gym envs run there
    from worldsim.device import default_device  # torch: loaded when play runs, not for --help

    return str(default_device())


def torch_threads(args: argparse.Namespace, device: str) -> int | None:
    """Intra-op threads for the world stepped here: --threads, else 1 on a CPU (None: torch's default),
    except headless play without a server, which has the cores to itself.

    On a CPU shared with the window and the server loop, OpenMP workers spin-wait against them for
    cores: one thread made batched steps ~5x faster on 2 cores (the serving engineer's measurement).
    """
    if args.threads is not None:
        return args.threads or None
    import torch

    if computes_alone(args):  # headless, no server: nothing to spin against (OpenMP waits actively then)
        return None
    return 1 if torch.device(device).type == "cpu" else None


def choose_world(args: argparse.Namespace) -> tuple[str, str | None]:
    """The world to play and its checkpoint: explicit flags, else the shipped checkpoint, else the game."""
    if args.world not in (None, "neural"):
        return args.world, None
    if args.world == "neural" or args.checkpoint:
        return "neural", args.checkpoint
    from worldsim.checkpoint import default_checkpoint  # torch: loaded when play runs, not for --help

    device = _default_device(args, None)
    found = default_checkpoint(device)
    if found is None:
        log.info(
            "playing the real game: no shipped checkpoint fits device %s (train one, or pass --checkpoint)",
            device,
        )
        return "game", None
    log.info("playing the neural world: checkpoint %s on %s", found, device)
    return "neural", str(found)


class LazyRecorder:
    """Opens the RecordingWriter at the first frame, when the source knows the world's size and keys."""

    def __init__(self, path: str, source, *, seed: int | None, extra: dict) -> None:
        from worldsim.record import RecordingWriter

        self._writer_cls = RecordingWriter
        self.path, self.source, self.seed, self.extra = path, source, seed, extra
        self.writer = None

    def write(self, frame_number, keys, frame, **kw) -> None:
        if self.writer is None:
            info = self.source.info
            self.writer = self._writer_cls(
                self.path,
                world=info.world,
                height=info.height,
                width=info.width,
                key_names=info.key_names,
                fps=info.fps,
                seed=self.seed,
                checkpoint_hash=info.checkpoint_hash,
                extra={**self.extra, **({"checkpoint": info.checkpoint} if info.checkpoint else {})},
            )
        self.writer.write(frame_number, keys, frame, **kw)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _replay_seed(spec: str | None) -> int | None:
    if not spec or not spec.startswith("replay:"):
        return None
    from worldsim.record import RecordingReader

    path = spec[len("replay:") :]
    if not Path(path).is_file():
        raise UserError(f"--bot {spec}: no such file; pass the path of a .wsrec recording")
    reader = RecordingReader(path)
    reader.close()
    return reader.header.get("seed")


def build_source(args: argparse.Namespace, kind: str | None, checkpoint: str | None):
    """The frame source and what must be stopped after it (an embedded server, if any)."""
    from worldsim.controllers.sources import ClientSource, WorldSource
    from worldsim.worlds import world_factory  # torch: loaded when play runs, not for --help

    if args.connect:
        return ClientSource(args.connect, args.fps or DEFAULT_FPS), None
    device = _default_device(args, kind)
    threads = torch_threads(args, device)
    extra = {}
    if args.context_noise is not None:
        if kind != "neural":
            raise UserError(f"--context-noise is for the neural world; --world {kind} has no KV cache")
        extra["context_noise"] = args.context_noise
    if args.idle_context_noise is not None:
        if kind != "neural":
            raise UserError(f"--idle-context-noise is for the neural world; --world {kind} has no KV cache")
        extra["idle_context_noise"] = args.idle_context_noise
    make = world_factory(kind, checkpoint=checkpoint, size=args.size, device=device, **extra)
    if args.server:
        from worldsim.serve import Server  # zmq (heavy, optional): only for the networked path

        made = []

        def make_and_keep(batch_size: int):
            made.append(make(batch_size))
            return made[-1]

        # One player; a second slot lets a reconnect in before the old session expires. The world
        # is built with batch = max_sessions, so more slots would cost a neural world memory.
        server = Server(
            make_and_keep,
            bind="tcp://127.0.0.1:0",
            fps=args.fps or DEFAULT_FPS,
            max_sessions=2,
            torch_threads=threads,
        )
        server.start()
        source = ClientSource(
            server.address, args.fps or DEFAULT_FPS, local_world=lambda: made[-1] if made else None
        )
        return source, server
    world = make(1)
    fps = args.fps or world.describe().get("env_fps") or DEFAULT_FPS  # a gym world: the env's real time
    return WorldSource(world, fps, checkpoint=checkpoint), None


def vs_bench_line(summary, world, seconds: float) -> str:
    """Time `world` stepping flat out (the benchmark's own loop) right after play, in the same process
    and thread setting, and say play's frames/s as a ratio of it."""
    from worldsim.bench.timing import measure_world  # torch: loaded when play runs, not for --help

    bench = measure_world(world, seconds)
    ratio = summary.fps / bench["fps"] if bench["fps"] > 0 else float("nan")
    return f"bench of the same world: {bench['fps']:.1f} frames/s; play / bench = {ratio:.2f}"


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from worldsim.controllers.bots import make_bot
    from worldsim.controllers.headless import run_headless
    from worldsim.controllers.window import Window

    seed = args.seed if args.seed is not None else _replay_seed(args.bot)
    seed = 0 if seed is None else int(seed)
    kind, checkpoint = (None, None) if args.connect else choose_world(args)
    if kind == "neural" and args.size != 64:
        log.warning("--size %d ignored: a neural world's frame size comes from its checkpoint", args.size)
    source, server = build_source(args, kind, checkpoint)
    recorder = None
    threads_before = None
    if server is None and not args.connect:  # the worker thread steps the world in this process
        threads = torch_threads(args, _default_device(args, kind))
        if threads is not None:
            import torch

            threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)  # process-wide, restored when play ends (as the server does)
    try:
        if args.record:
            recorder = LazyRecorder(
                args.record,
                source,
                seed=seed,
                extra={"level": "default", "client": "worldsim play", "headless": bool(args.headless)},
            )
        bot = None
        if args.bot:
            # The bot needs the world's key names, which a server tells only once connected: the play
            # loops call this with them.
            def bot(key_names):
                return make_bot(args.bot, key_names, seed=seed)

        bench_line = None
        if args.headless:
            summary = run_headless(source, frames=args.frames, seed=seed, bot=bot, recorder=recorder)
            if args.vs_bench:
                bench_line = vs_bench_line(summary, source.world, args.vs_bench)
        else:
            window = Window(
                source,
                seed=seed,
                scale=args.scale,
                bot=bot,
                recorder=recorder,
                max_frames=args.frames,
                gamepad=not args.no_gamepad,
                screenshot=args.screenshot,
            )
            summary = window.run()
    finally:
        if recorder is not None:
            recorder.close()
        source.close()
        if server is not None:
            server.stop()
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)
    print(summary.line())
    if bench_line is not None:
        print(bench_line)
    if args.record:
        print(f"recorded {summary.frames} frames to {args.record}")
    if args.screenshot:
        print(f"saved the window to {args.screenshot}")
    return 0
