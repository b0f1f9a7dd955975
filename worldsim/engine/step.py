"""One block of generation as a pure function of static tensors (what the engine captures as a graph).

`block_step` runs every denoising pass, the write pass of the finished block and the cache advance for
ALL cache rows at once (`rows=None`: static shapes, no gathers), so it can be captured once and
replayed whatever sessions are active: rows outside `active` still compute, but their frame counter
does not move. That is exact: a pass only writes the ring slot of the row's current frame, which the
row's next real pass rewrites before reading, and the frame it overwrote (n - window) is no longer
visible to frame n.

Folded (`pending` given, block_frames 1 or more): the previous block, finished and PENDING, is written
into the ring by the first denoising pass (`DiT.forward_cached(pending=True)`); every pass keeps the
new block's K/V in the cache's staging rows; the new block becomes the pending one (active rows only)
instead of a write pass: `steps` passes per block. An inactive row's passes rewrite its pending block's
slots with the same values and touch nothing else of the ring (the staging rows are scratch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from worldsim.engine.fp8 import WRITE_PASS, count_passes, set_pass
from worldsim.model.dit import DiT
from worldsim.model.kvcache import KVCache
from worldsim.sampling import add_noise


@dataclass
class Pending:
    """The pending (finished, not yet cached) block of every row: static tensors, updated in place."""

    z: torch.Tensor  # [B,Fb,C,h,w] latents, already at the context noise level
    t: torch.Tensor  # [B,Fb] their noise level (the context noise)
    keys: torch.Tensor  # [B,Fb,K] bool
    drop: torch.Tensor  # [B,Fb] bool: the null-key state (context from frames of unknown keys)

    def update(self, z: torch.Tensor, keys: torch.Tensor, active: torch.Tensor | None) -> None:
        """The finished block `z` (noised) with `keys` becomes pending for the `active` rows (None = all)."""
        if active is None:
            self.z.copy_(z)
            self.keys.copy_(keys)
            self.drop.zero_()
            return
        on = active.bool()  # [B]
        self.z.copy_(torch.where(on.view(-1, *[1] * (z.ndim - 1)), z, self.z))
        self.keys.copy_(torch.where(on[:, None, None], keys, self.keys))
        self.drop.logical_and_(~on[:, None])


def _advance(cache: KVCache, active: torch.Tensor | None) -> None:
    Fb = cache.cfg.block_frames
    if active is None:
        cache.length.add_(Fb)
    else:
        cache.length.add_(active * Fb)


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
    pending: Pending | None = None,
) -> torch.Tensor:
    """Generate the next block for every cache row; return its latents `x0 [B,Fb,C,h,w]`.

    `noise [B,Fb,C,h,w]` starts the sampler; `keys [B,Fb,K]` bool; `active` long `[B]` (1 = advance this
    row's frame counter, 0 = leave the row as it was; None = all); `drop [B,Fb]` bool, the null-key
    branch used when `guidance != 1`; `write_noise [B,Fb,C,h,w]` noises the write pass when
    `context_noise > 0`. `pending` folds the write pass (see the module docstring); `write_noise` then
    noises the new pending block. No host sync, no allocation that depends on data: safe to capture.
    """
    staged = pending is not None
    first = [staged]  # the first pass of a folded step carries the pending block

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if first[0]:
            first[0] = False
            v = dit.forward_cached(
                torch.cat([pending.z, x], 1), torch.cat([pending.t, t], 1), torch.cat([pending.keys, keys], 1),
                cache, drop_keys=torch.cat([pending.drop, torch.zeros_like(pending.drop)], 1), pending=True,
            )  # fmt: skip
        else:
            v = dit.forward_cached(x, t, keys, cache, staged=staged)
        if guidance == 1.0:
            return v
        v_null = dit.forward_cached(x, t, keys, cache, drop_keys=drop, staged=staged)
        return v_null + guidance * (v - v_null)

    x0 = sampler(count_passes(dit, model), noise, schedule)  # [B,Fb,C,h,w]
    t = torch.full(x0.shape[:2], context_noise, device=x0.device, dtype=x0.dtype)  # [B,Fb]
    z = x0
    if context_noise > 0:
        if write_noise is None:
            raise ValueError("block_step: context_noise > 0 needs write_noise [B,Fb,C,h,w]")
        z = add_noise(x0, write_noise, t)
    if pending is not None:
        pending.update(z, keys, active)
        _advance(cache, active)
        return x0
    set_pass(dit, WRITE_PASS)  # per-pass fp8 scales (fp8.py); a Python int: static in the graph
    dit.forward_cached(z, t, keys, cache)  # the write pass: the finished block enters the cache
    _advance(cache, active)
    return x0
