"""`worldsim bench game|neural|serve|train|cli`: speed benchmarks that print a table and optionally write JSON
(never timed tests). Each target has its own flags; the benchmark itself lives in worldsim/bench/<target>.py.

The old one-list spelling (`bench --world neural ...`, `bench --serve`, `bench --train`) still parses,
with a warning naming the new form; its flags are hidden from `--help`.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from worldsim.cli.options import add_no_verify

log = logging.getLogger(__name__)


def _common(p, *, batch_help: str | None = None) -> None:
    """--device, --seconds, --json (and --batch, whose default each target picks)."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to measure (default 5)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    if batch_help:
        p.add_argument("--batch", type=int, default=None, help=batch_help)


def add_game_arguments(p) -> None:
    p.add_argument("--size", type=int, default=64, help="frame size in pixels, default 64")
    p.add_argument("--world", default="game", metavar="game|gym:ID",
                   help="the raycaster (default) or a Gymnasium env such as gym:ALE/Breakout-v5 (on the CPU)")  # fmt: skip
    _common(p, batch_help="games stepped together (default 1)")


def add_neural_arguments(p) -> None:
    p.add_argument("--checkpoint", default=None, help="checkpoint name or path (default: the shipped one)")
    p.add_argument("--sessions", type=int, default=1, help="sessions stepped together (default 1)")
    _common(p)
    p.add_argument("--compare", action="store_true",
                   help="eager vs graph, dense vs sparse, bf16 vs 8-bit in one table (and a PNG beside --json)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="--compare: small shapes (a CPU smoke run)")
    p.add_argument("--eager", action="store_true", help="time the eager step, not the CUDA graph")
    p.add_argument("--kernels", action="store_true", help="use the Triton kernels where wired")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising passes per frame (default: the checkpoint's)")  # fmt: skip
    p.add_argument("--no-fold", action="store_true",
                   help="a separate cache-write pass per frame (default: folded into the next frame's first pass)")  # fmt: skip
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "both"], default="auto",
                   help="activations (default auto: what play uses; bf16 on CUDA, and on a CPU whose bf16 matmuls win); both: fp32 vs bf16 alternating in one process, with their ratio")  # fmt: skip
    add_no_verify(p)


def add_serve_arguments(p) -> None:
    p.add_argument(
        "--world", default="game", metavar="game|neural|gym:ID", help="the world served (default game)"
    )
    p.add_argument("--clients", type=int, default=4, help="real-time clients, one process each (default 4)")
    p.add_argument("--checkpoint", default=None, help="checkpoint name or path (neural world)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (game world), default 64")
    _common(p)
    add_no_verify(p)


def add_train_arguments(p) -> None:
    p.add_argument("--preset", default=None, help="model preset (test, tiny, base; default tiny)")
    _common(p, batch_help="clips per step (default: the preset's: test 4, tiny 64, base 32)")
    p.add_argument("--compare", action="store_true",
                   help="today's live eager step vs the store, compiled, flex, with the ratio (and a PNG beside --json)")  # fmt: skip
    p.add_argument("--source", choices=["live", "store"], default="store",
                   help="render+encode every step (live) or sample the latent store (default)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT (static shapes)")
    p.add_argument("--attention", choices=["sdpa", "flex"], default=None,
                   help="the training forward's attention backend (default sdpa)")  # fmt: skip
    p.add_argument("--clip-frames", type=int, default=None, help="frames per clip (default 1.5 x window)")


def add_cli_arguments(p) -> None:
    p.add_argument("--runs", type=int, default=5, help="fresh interpreters to time (default 5)")


TARGETS = {
    "game": (
        "frames/s of the batched raycaster (physics + render), or of a Gymnasium env (--world gym:ID)",
        add_game_arguments,
    ),
    "neural": ("frames/s, latency and memory of the neural world's per-frame step", add_neural_arguments),
    "serve": (
        "a server and real-time clients on loopback: per-client fps, latency, drops",
        add_serve_arguments,
    ),
    "train": ("the teacher's training step: clips/s, ms per part, FLOP use on CUDA", add_train_arguments),
    "cli": (
        "how long `worldsim --help` takes in a fresh interpreter, and whether it loads torch",
        add_cli_arguments,
    ),
}


class _Hidden:
    """Every target's flags on `bench` itself, each once and hidden from --help: the old spelling."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser, self.seen = parser, set()

    def add_argument(self, *names: str, **kw) -> None:
        if names[0] not in self.seen:
            self.seen.add(names[0])
            self.parser.add_argument(*names, **{**kw, "help": argparse.SUPPRESS})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed: the real game, the neural world, the server under load, or training",
        description="Speed benchmarks: `worldsim bench game|neural|serve|train|cli --help` lists each one's flags.",
    )
    targets = p.add_subparsers(dest="target", metavar="<target>")
    for name, (help_line, add_arguments) in TARGETS.items():
        add_arguments(targets.add_parser(name, help=help_line, description=help_line))
    hidden = _Hidden(p)
    hidden.add_argument("--serve", action="store_true")
    hidden.add_argument("--train", action="store_true")
    for _, add_arguments in TARGETS.values():
        add_arguments(hidden)
    p.set_defaults(func=run)


def old_spelling_target(args: argparse.Namespace) -> str:
    """The target the old one-list spelling names, with a warning that says the new form."""
    world = "game" if args.world.startswith("gym:") else args.world
    target = "serve" if args.serve else "train" if args.train else world
    old = "--serve" if args.serve else "--train" if args.train else f"--world {args.world}"
    new = f"{target} --world {args.world}" if target == "serve" and args.world != "game" else target
    log.warning(
        "`worldsim bench %s` is deprecated and goes in the next release: use `worldsim bench %s`", old, new
    )
    return target


def run(args: argparse.Namespace) -> int:
    target = args.target or old_spelling_target(args)
    return importlib.import_module(f"worldsim.bench.{target}").run(args)
