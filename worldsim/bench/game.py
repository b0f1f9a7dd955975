"""`worldsim bench game`: frames per second of the batched raycaster (physics + render), or of a batch
of Gymnasium envs (`--world gym:ID`: env step, frame, resize), stepped through the same `World` loop."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch

from worldsim.cli.options import check_frame_size
from worldsim.device import resolve_device
from worldsim.errors import UserError
from worldsim.world import World
from worldsim.worlds import check_kind, make_world

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # deliberate host sync: the clock must see finished work


def measure(
    size: int,
    batch: int,
    device: str | torch.device,
    seconds: float,
    level: str = "default",
    world_kind: str = "game",
) -> dict:
    """Step `batch` games of `size` x `size` under a changing key stream for ~`seconds`; return figures."""

    device = torch.device(device)
    world = make_world(world_kind, batch_size=batch, size=size, level=level, device=device)
    try:
        return {**_measure(world, batch, device, seconds), "world": world_kind, "level": level}
    finally:
        world.close()


def _measure(world: World, batch: int, device: torch.device, seconds: float) -> dict:
    # a fixed, changing key stream: 64 random multi-hot rows per game, cycled (sticky-free on purpose)
    gen = torch.Generator().manual_seed(0)
    stream = (torch.rand(64, batch, world.num_keys, generator=gen) < 0.3).to(device)
    world.reset(list(range(batch)))
    warmup_end = time.perf_counter() + min(1.0, seconds / 4)
    n = 0
    while n < 5 or time.perf_counter() < warmup_end:
        world.step(stream[n % 64])
        n += 1
    _sync(device)
    steps, chunk = 0, 4
    start = time.perf_counter()
    while True:
        for _ in range(chunk):
            world.step(stream[steps % 64])
            steps += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        chunk = min(chunk * 2, 256) if elapsed < seconds / 8 else chunk
    return {
        "fps": steps * batch / elapsed,
        "ms_per_step": elapsed / steps * 1e3,
        "size": world.height,
        "batch": batch,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "steps": steps,
        "seconds": elapsed,
        "torch": torch.__version__,
    }


def run(args: argparse.Namespace) -> int:
    kind = getattr(args, "world", "game")  # the old spelling (`bench --world game`) has it too
    check_kind(kind)
    if kind == "neural":
        raise UserError(
            "`bench game --world` takes game or gym:ID; time the model with `worldsim bench neural`"
        )
    gym = kind != "game"
    if gym and args.device not in (None, "cpu"):
        raise UserError(f"--device {args.device}: a gym world steps its envs on the CPU; drop --device")
    device = "cpu" if gym else str(resolve_device(args.device))
    args.batch = 1 if args.batch is None else args.batch
    check_frame_size(args.size)
    if args.batch < 1 or args.seconds <= 0:
        raise UserError(f"need --batch >= 1 and --seconds > 0; got {args.batch}, {args.seconds}")
    r = measure(args.size, args.batch, device, args.seconds, world_kind=kind)
    header = f"{'world':>20} {'size':>9} {'batch':>6} {'device':>10} {'frames/s':>11} {'ms/step':>9}"
    row = f"{kind:>20} {r['size']:>4}x{r['size']:<4} {r['batch']:>6} {r['device']:>10} {r['fps']:>11.0f} {r['ms_per_step']:>9.3f}"
    print(header)
    print(row)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(r, f, indent=2)
        os.replace(tmp, args.json)  # atomic: a reader never sees half a file
        log.info("wrote %s", args.json)
    return 0
