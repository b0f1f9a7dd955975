"""One block of generation as a pure function of static tensors (what the engine captures as a graph).

`block_step` runs every denoising pass, the write pass of the finished block and the cache advance for
ALL cache rows at once (`rows=None`: static shapes, no gathers), so it can be captured once and
replayed whatever sessions are active: rows outside `active` still compute, but their frame counter
does not move. That is exact: a pass only writes the ring slot of the row's current frame, which the
row's next real pass rewrites before reading, and the frame it overwrote (n - window) is no longer
visible to frame n.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from worldsim.engine.fp8 import WRITE_PASS, count_passes, set_pass
from worldsim.model.dit import DiT
from worldsim.model.kvcache import KVCache
from worldsim.sampling import add_noise


def block_step(
    dit: DiT,
    cache: KVCache,
    sampler: Callable,
    schedule: torch.Tensor,
    noise: torch.Tensor,
    keys: torch.Tensor,
    *,
    active: torch.Tensor | None = None,
    guidance: float = 1.0,
    drop: torch.Tensor | None = None,
    context_noise: float = 0.0,
    write_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate the next block for every cache row; return its latents `x0 [B,Fb,C,h,w]`.

    `noise [B,Fb,C,h,w]` starts the sampler; `keys [B,Fb,K]` bool; `active` long `[B]` (1 = advance this
    row's frame counter, 0 = leave the row as it was; None = all); `drop [B,Fb]` bool, the null-key
    branch used when `guidance != 1`; `write_noise [B,Fb,C,h,w]` noises the write pass when
    `context_noise > 0`. No host sync, no allocation that depends on data: safe to capture.
    """

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = dit.forward_cached(x, t, keys, cache)
        if guidance == 1.0:
            return v
        v_null = dit.forward_cached(x, t, keys, cache, drop_keys=drop)
        return v_null + guidance * (v - v_null)

    x0 = sampler(count_passes(dit, model), noise, schedule)  # [B,Fb,C,h,w]
    t = torch.full(x0.shape[:2], context_noise, device=x0.device, dtype=x0.dtype)  # [B,Fb]
    z = x0
    if context_noise > 0:
        if write_noise is None:
            raise ValueError("block_step: context_noise > 0 needs write_noise [B,Fb,C,h,w]")
        z = add_noise(x0, write_noise, t)
    set_pass(dit, WRITE_PASS)  # per-pass fp8 scales (fp8.py); a Python int: static in the graph
    dit.forward_cached(z, t, keys, cache)  # the write pass: the finished block enters the cache
    Fb = cache.cfg.block_frames
    if active is None:
        cache.length.add_(Fb)
    else:
        cache.length.add_(active * Fb)
    return x0
