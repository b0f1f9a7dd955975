"""Timing a world's step (shared by the neural and the dense-vs-sparse benchmarks): a warm-up, then
latency percentiles with a host sync after every step, then frames/s unsynced; peak GPU memory.
Numbers are measured, never derived."""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from collections.abc import Callable

import torch

from worldsim.train.common import write_json

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # deliberate host sync: the clock must see finished work


def time_steps(
    step: Callable[[int], object], device: torch.device, seconds: float, *, min_steps: int = 5
) -> dict:
    """Time `step(i)` for ~`seconds` (after a warm-up): latency percentiles (synced) and steps/s."""
    device = torch.device(device)
    warm_end = time.perf_counter() + min(1.0, seconds / 4)
    i = 0
    while i < 3 or time.perf_counter() < warm_end:  # the first step captures the graph
        step(i)
        i += 1
    _sync(device)
    lat: list[float] = []
    end = time.perf_counter() + seconds / 2
    while len(lat) < min_steps or time.perf_counter() < end:
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        lat.append(time.perf_counter() - t0)
        i += 1
    n, chunk = 0, 2
    start = time.perf_counter()
    while True:
        for _ in range(chunk):
            step(i)
            i += 1
        n += chunk
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 2 and n >= min_steps:
            break
        chunk = min(chunk * 2, 128)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "steps_per_s": n / elapsed,
        "ms_p50": q[49] * 1e3,
        "ms_p99": q[98] * 1e3,
        "ms_mean": elapsed / n * 1e3,
        "timed_steps": n + len(lat),
    }


def memory_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()  # the previous row's world (graph <-> world is a reference cycle) frees its memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure_world(world, seconds: float) -> dict:
    """Frames/s (all sessions together), per-frame latency and peak GPU memory of `world.step`."""
    device, B = world.device, world.batch_size
    gen = torch.Generator().manual_seed(0)
    stream = (torch.rand(64, B, world.num_keys, generator=gen) < 0.3).to(device)  # a changing key stream
    world.reset(list(range(B)))
    r = time_steps(lambda i: world.step(stream[i % 64]), device, seconds)
    r.update(fps=r["steps_per_s"] * B, fps_per_session=r["steps_per_s"], sessions=B)
    r["gpu_mib"] = memory_mib(device)
    return r


def environment(device: torch.device) -> dict:
    """Where a row was measured: device, its name, threads, CPU count, torch version."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def fps_text(fps: float | None) -> str:
    """A frames/s figure for a log line: one decimal, or "-" for a row that failed."""
    return "-" if fps is None else f"{fps:.1f}"


def write_json_logged(path: str, obj: dict) -> None:
    """`obj` to `path` atomically (a reader never sees half a file), and say so."""
    write_json(obj, path)
    log.info("wrote %s", path)
