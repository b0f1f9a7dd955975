"""`worldsim bench`: speed benchmarks that print a table and optionally write JSON (never timed tests)."""

from __future__ import annotations

import argparse
import importlib

from worldsim.cli.options import add_no_verify


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed: the real game, the neural world, or the server under load",
        description=(
            "Speed benchmarks. `--world game` times the raycaster; `--world neural` times the model's "
            "per-frame step; `--serve` starts a server and real-time clients on loopback."
        ),
    )
    p.add_argument("--world", choices=["game", "neural"], default="game", help="which world to time")
    p.add_argument("--serve", action="store_true", help="benchmark the ZeroMQ server with --clients clients")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (game world), default 64")
    p.add_argument("--batch", type=int, default=None,
                   help="games stepped together (game world, default 1); clips per step (--train, default: the "
                        "preset's: test 4, tiny 64, base 32)")  # fmt: skip
    p.add_argument("--sessions", type=int, default=1, help="sessions stepped together (neural world)")
    p.add_argument("--clients", type=int, default=4, help="real-time clients (with --serve)")
    p.add_argument("--checkpoint", default=None, help="checkpoint name or path (neural world)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to measure")
    p.add_argument(
        "--compare",
        action="store_true",
        help="neural: eager vs graph, dense vs sparse, bf16 vs 8-bit; --train: today's live eager step vs "
        "the store, compiled, flex, with the ratio",
    )
    p.add_argument("--quick", action="store_true", help="neural --compare: small shapes (a CPU smoke run)")
    p.add_argument("--eager", action="store_true", help="neural: time the eager step, not the CUDA graph")
    p.add_argument("--kernels", action="store_true", help="neural: use the Triton kernels where wired")
    p.add_argument("--steps", type=int, default=None,
                   help="neural: denoising passes per frame (default: the checkpoint's)")  # fmt: skip
    p.add_argument("--no-fold", action="store_true",
                   help="neural: a separate cache-write pass per frame (default: folded into the next frame's first pass)")  # fmt: skip
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "both"], default="auto",
                   help="neural: activations (default auto: what play uses; bf16 on CUDA, and on a CPU whose bf16 matmuls win); both: fp32 vs bf16 alternating in one process, with their ratio")  # fmt: skip
    p.add_argument("--train", action="store_true",
                   help="time the teacher's training step (clips/s, ms per part, FLOP use on CUDA)")  # fmt: skip
    p.add_argument("--preset", default=None, help="--train: model preset (test, tiny, base; default tiny)")
    p.add_argument("--source", choices=["live", "store"], default="store",
                   help="--train: render+encode every step (live) or sample the latent store (default)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="--train: torch.compile the DiT (static shapes)")
    p.add_argument("--attention", choices=["sdpa", "flex"], default=None,
                   help="--train: the training forward's attention backend (default sdpa)")  # fmt: skip
    p.add_argument(
        "--clip-frames", type=int, default=None, help="--train: frames per clip (default 1.5 x window)"
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    add_no_verify(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = "serve" if args.serve else "train" if args.train else args.world
    module = importlib.import_module(f"worldsim.bench.{target}")
    return module.run(args)
