"""The activation dtype of the CPU engine: bf16 where this CPU's bf16 matmuls win, timed once per process."""

from __future__ import annotations

import functools
import logging
import os
import time

import torch

log = logging.getLogger(__name__)
CPU_DTYPE_ENV = "WORLDSIM_CPU_DTYPE"  # "fp32" or "bf16": overrides the timed choice of cpu_prefers_bf16()


@functools.cache
def cpu_prefers_bf16(rows: int = 64, width: int = 256, repeats: int = 30) -> bool:
    """Whether this CPU multiplies the engine's matrices at least 1.3x faster in bf16 than in fp32 (CPUs
    with bf16 units: AVX512-BF16, AMX, Arm BF16; elsewhere bf16 is emulated and slower). Timed once per
    process at the tiny preset's MLP shape (`[rows, width] x [width, 4 width]`, median of `repeats`,
    ~30 ms); `WORLDSIM_CPU_DTYPE=fp32|bf16` overrides it. Measured on our 2-core CPU (AVX512-BF16):
    2.45x per matmul, 1.12-1.18x per frame of `tiny-student`, quick eval within 0.25 dB of fp32 at every
    horizon and 0.4 points of action following (docs/experiments/cpu_bf16/). The timing runs on one
    thread whatever the process has set (and restores it): with two threads and OpenMP's passive wait
    (a process that plays or serves) every small matmul pays the workers' wake-up, which hid the 3.4x of
    bf16 behind ~2x and made the window play fp32 at 17.7 frames/s instead of bf16 at 30-32 (2 cores)."""
    forced = os.environ.get(CPU_DTYPE_ENV, "").strip().lower()
    if forced in ("fp32", "bf16"):
        return forced == "bf16"
    if forced:
        raise ValueError(f"{CPU_DTYPE_ENV}={forced!r}: use fp32 or bf16 (or leave it unset to time both)")

    def median_s(dtype: torch.dtype) -> float:
        x, w = torch.randn(rows, width, dtype=dtype), torch.randn(4 * width, width, dtype=dtype)
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            times.append(time.perf_counter() - t0)
        return sorted(times)[repeats // 2]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32, bf16 = median_s(torch.float32), median_s(torch.bfloat16)
    finally:
        torch.set_num_threads(threads)
    log.debug("CPU matmul [%d,%d]x[%d,%d]: fp32 %.0f us, bf16 %.0f us", rows, width, width, 4 * width,
              fp32 * 1e6, bf16 * 1e6)  # fmt: skip
    return bf16 * 1.3 <= fp32


def engine_dtype(device: torch.device | str) -> torch.dtype | None:
    """The activation dtype the fastest engine uses on `device`: None (the world's default: bf16 on CUDA,
    fp32 on CPU), or bf16 on a CPU where `cpu_prefers_bf16()`."""
    return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_prefers_bf16() else None
