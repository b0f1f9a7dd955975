"""Loader throughput (a benchmark, not a test): `python -m worldsim.data.throughput [--device cuda]`.

Prints frames/s of make_loader from the game on the fly and, with --dataset DIR, from a dataset folder.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from worldsim.data.loader import make_loader
from worldsim.device import default_device


def measure(source: str, *, batch: int, frames: int, size: int, device: str, seconds: float) -> float:
    it = make_loader(source, batch=batch, frames=frames, size=size, device=device)
    next(it)  # warm-up: world construction, first allocations, CUDA context
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f, _ = next(it)
        n += f.shape[0] * f.shape[1]
    sync()  # deliberate host sync: the clock must include the last clip's work
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=str(default_device()))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument(
        "--dataset", default=None, metavar="DIR", help="also time loading from this dataset folder"
    )
    args = p.parse_args(argv)
    rows = {
        "game": measure(
            "game",
            batch=args.batch,
            frames=args.frames,
            size=args.size,
            device=args.device,
            seconds=args.seconds,
        )
    }
    if args.dataset:
        rows["dataset"] = measure(
            args.dataset,
            batch=args.batch,
            frames=args.frames,
            size=args.size,
            device=args.device,
            seconds=args.seconds,
        )
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(
        f"make_loader throughput on {name}: batch {args.batch}, {args.frames} frames, {args.size}x{args.size}"
    )
    for source, fps in rows.items():
        print(f"  {source:8s} {fps:12,.0f} frames/s")
    print(json.dumps({"device": name, **vars(args), "frames_per_s": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
