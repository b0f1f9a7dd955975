"""The frame function: one frame (block) of generation against the KV cache, written once.

`next_frame` runs every denoising pass of the sampler, the cache write of the finished block and the
cache advance; `prime` fills a cache with context. Everything that generates calls them: `NeuralWorld`
eagerly (a subset of cache rows), the engine inside one CUDA graph (all rows, an `active` mask), the
self-forcing rollout with gradient through one exit pass. See docs/design.md §5.

Per block: noise -> `sampler(model, noise, schedule)`, where `model(x, t, n)` is pass `n` of the block
-> the finished latent enters the cache at the context noise level. Two ways to write it:
  * unfolded (`pending=None`): a write pass `dit.forward_cached(z_ctx, t_ctx, keys, cache)`;
  * folded (`pending` given): the finished block waits in `pending` and enters the ring inside the
    next block's first pass (one forward over [pending, new], `forward_cached(pending=True)`); every
    pass is staged. `steps` passes per block instead of `steps + 1`, the same values.
Pass hooks: `passes(n)` is called before pass `n` (both branches of a guided pass share it) and
`passes(WRITE_PASS)` before a write pass: per-pass fp8 activation scales hang on it (engine/fp8.py).
`attend` is the cached attention backend, handed to `forward_cached` (None: SDPA).
Nothing here reads a tensor on the host or allocates by data, so the engine can capture it.
Shapes: B batch (cache rows), R rows stepped, Fb frames per block, C h w latent, K keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from worldsim.model.dit import CachedAttend, DiT
from worldsim.model.kvcache import KVCache
from worldsim.sampling import add_noise, sample_euler

WRITE_PASS = -1  # the pass index of a cache write (the fp8 layers' last activation scale)
PassHook = Callable[[int], None]
Level = float | torch.Tensor  # a noise level: a float, or `[R,Fb]` per row (diffusion-forced context)


@dataclass
class Pending:
    """The pending (finished, not yet cached) block of every cache row: static tensors, updated in place."""

    z: torch.Tensor  # [B,Fb,C,h,w] latents, already at the context noise level
    t: torch.Tensor  # [B,Fb] their noise level (the context noise)
    keys: torch.Tensor  # [B,Fb,K] bool
    drop: torch.Tensor  # [B,Fb] bool: the null-key state (context from frames of unknown keys)
    no_drop: torch.Tensor  # [B,Fb] bool, all false: the new block's drop flags in the folded pass

    @classmethod
    def empty(cls, dit: DiT, batch_size: int, device: torch.device, dtype: torch.dtype) -> Pending:
        cfg = dit.cfg
        Fb, C, (h, w) = cfg.block_frames, cfg.latent_channels, cfg.latent_hw
        flags = torch.zeros(batch_size, Fb, dtype=torch.bool, device=device)
        return cls(
            z=torch.zeros(batch_size, Fb, C, h, w, device=device, dtype=dtype),
            t=torch.full((batch_size, Fb), cfg.context_noise, device=device, dtype=dtype),
            keys=torch.zeros(batch_size, Fb, cfg.num_keys, dtype=torch.bool, device=device),
            drop=flags,
            no_drop=flags.clone(),
        )

    def pick(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(z, t, keys, drop) of the given rows (all when None)."""
        parts = (self.z, self.t, self.keys, self.drop)
        return parts if rows is None else tuple(p.index_select(0, rows) for p in parts)

    def update(
        self,
        z: torch.Tensor,
        keys: torch.Tensor,
        drop: torch.Tensor | None = None,
        *,
        t: torch.Tensor,
        rows: torch.Tensor | None = None,
        active: torch.Tensor | None = None,
    ) -> None:
        """The finished block `z [R,Fb,...]` (already noised to its levels `t [R,Fb]`) with `keys`, `drop`
        becomes pending for `rows` (None = all) or, on all rows, for the `active` ones (long `[B]`)."""
        drop = self.no_drop[: z.shape[0]] if drop is None else drop
        t = t.to(self.t.dtype)
        if active is not None:
            on = active.bool()  # [B]
            self.z.copy_(torch.where(on.view(-1, *[1] * (z.ndim - 1)), z, self.z))
            self.t.copy_(torch.where(on[:, None], t, self.t))
            self.keys.copy_(torch.where(on[:, None, None], keys, self.keys))
            self.drop.copy_(torch.where(on[:, None], drop, self.drop))
        elif rows is None:
            self.z.copy_(z)
            self.t.copy_(t)
            self.keys.copy_(keys)
            self.drop.copy_(drop)
        else:
            self.z.index_copy_(0, rows, z)
            self.t.index_copy_(0, rows, t)
            self.keys.index_copy_(0, rows, keys.bool())
            self.drop.index_copy_(0, rows, drop)


def _advance(cache: KVCache, rows: torch.Tensor | None, active: torch.Tensor | None) -> None:
    cache.advance(rows, active=active)  # with `active`, all rows, only the active ones move (static shapes)


def _levels(level: Level, like: torch.Tensor) -> torch.Tensor:
    """`level` as `[R,Fb]` noise levels in `like`'s dtype. A float is filled on the device (no host copy:
    this runs inside the engine's CUDA graph capture)."""
    if isinstance(level, float | int):
        return torch.full(like.shape[:2], float(level), device=like.device, dtype=like.dtype)
    return level.to(device=like.device, dtype=like.dtype).expand(like.shape[:2]).contiguous()


def write_level(cfg, keys: torch.Tensor) -> Level:
    """The noise level finished frames with `keys [R,Fb,K]` enter the cache at: `cfg.context_noise`, and
    `cfg.idle_context_noise` (when set) for the frames made while no key was held, as `[R,Fb]` levels
    (device arithmetic: no host read, so the engine's graph captures it)."""
    idle, level = cfg.idle_context_noise, cfg.context_noise
    if idle is None or idle == level:
        return level
    held = keys.any(-1).to(torch.float32)  # [R,Fb]
    return held * (level - idle) + idle


def _noised(z: torch.Tensor, t: torch.Tensor, level: Level, noise: torch.Tensor | None) -> torch.Tensor:
    """`z` at noise level `t` (the context noise): unchanged at level 0, else noised with `noise`."""
    if isinstance(level, float | int) and level == 0:
        return z
    if noise is None:
        raise ValueError(
            f"a cache write at context noise {level} needs its noise [R,Fb,C,h,w] (write_noise=)"
        )
    return add_noise(z, noise, t)


def write(
    dit: DiT,
    cache: KVCache,
    z: torch.Tensor,
    keys: torch.Tensor,
    *,
    level: Level = 0.0,
    noise: torch.Tensor | None = None,
    drop: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    passes: PassHook | None = None,
    attend: CachedAttend | None = None,
) -> None:
    """The write pass: the finished block `z [R,Fb,C,h,w]` enters the cache at noise `level` (noised
    with `noise`), then the cache advances. Never carries gradient (the cache stores values)."""
    t = _levels(level, z)
    z = _noised(z, t, level, noise)
    if passes is not None:
        passes(WRITE_PASS)
    with torch.no_grad():
        dit.forward_cached(z, t, keys, cache, rows=rows, drop_keys=drop, attend=attend)
    _advance(cache, rows, active)


def prime(
    dit: DiT,
    cache: KVCache,
    z: torch.Tensor,
    keys: torch.Tensor,
    *,
    drop: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    pending: Pending | None = None,
    level: float = 0.0,
    noise: torch.Tensor | None = None,
    passes: PassHook | None = None,
    attend: CachedAttend | None = None,
) -> None:
    """Empty the cache rows `rows` (None = all) and write context latents `z [R,T*Fb,C,h,w]` (keys
    `[R,T*Fb,K]`, null-key flags `drop [R,T*Fb]`, write noise `noise` like `z`) into them block by
    block, in order. Folded (`pending`): the last block stays pending, for the next frame's first pass."""
    cache.reset(rows)
    Fb = dit.cfg.block_frames
    for f in range(0, z.shape[1], Fb):
        sl = slice(f, f + Fb)
        d = None if drop is None else drop[:, sl]
        n = None if noise is None else noise[:, sl]
        if pending is not None and f + Fb >= z.shape[1]:
            t = _levels(level, z[:, sl])
            pending.update(_noised(z[:, sl], t, level, n), keys[:, sl], d, t=t, rows=rows)
            cache.advance(rows)
        else:
            write(dit, cache, z[:, sl], keys[:, sl], level=level, noise=n, drop=d, rows=rows,
                  passes=passes, attend=attend)  # fmt: skip


def exit_schedule(schedule: torch.Tensor, exit_step: int) -> torch.Tensor:
    """`schedule` cut after step `exit_step` and ending at 0: Euler's last step on it lands on the clean
    prediction x0 = x_t - t v of that step (the full schedule for the last step)."""
    steps = schedule.shape[0] - 1
    if not 0 <= exit_step < steps:
        raise ValueError(f"exit step must be in [0, {steps}), got {exit_step}")
    if exit_step == steps - 1:
        return schedule
    return torch.cat([schedule[: exit_step + 1], schedule.new_zeros(1)])


def next_frame(
    dit: DiT,
    cache: KVCache,
    sampler: Callable,
    schedule: torch.Tensor,
    keys: torch.Tensor,
    noise: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    pending: Pending | None = None,
    guidance: float = 1.0,
    drop: torch.Tensor | None = None,
    level: Level = 0.0,
    write_noise: torch.Tensor | None = None,
    write_z: torch.Tensor | None = None,
    exit_step: int | None = None,
    grad: bool = False,
    passes: PassHook | None = None,
    attend: CachedAttend | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Generate the next block of the cache rows `rows` (long `[R]`, None = all); return its latents
    `x0 [R,Fb,C,h,w]`, or `decode(x0)`.

    `keys [R,Fb,K]` bool; `noise [R,Fb,C,h,w]` starts the sampler on `schedule` (`[steps+1]`, 1 -> 0).
    `active` (long `[B]`, with `rows=None`): only these rows' frame counters and pending blocks move;
    the others compute but change nothing they will read (the engine's graph steps every row).
    `pending`: the folded protocol (module docstring). `guidance` > 1: v = v_null + g (v - v_null), the
    null branch with `drop [R,Fb]` (true = null keys). The finished block enters the cache at noise
    `level` (a float, or `[R,Fb]`), noised with `write_noise`; `write_z` enters instead of it (training
    baselines that cache the true frames). `exit_step` (Euler): the block is the clean prediction at
    that step (`exit_schedule`); `grad` keeps gradient through that last pass only (the rest of the
    block, its write included, runs without).
    """
    if exit_step is not None:
        schedule = exit_schedule(schedule, exit_step)
    if grad and sampler is not sample_euler:
        raise ValueError("gradient through the exit pass needs the Euler sampler (one pass per step)")
    staged = pending is not None
    grad_pass = schedule.shape[0] - 2  # Euler's last pass

    def model(x: torch.Tensor, t: torch.Tensor, n: int) -> torch.Tensor:
        if passes is not None:
            passes(n)
        with torch.set_grad_enabled(grad and n == grad_pass):
            if staged and n == 0:  # the first pass carries the pending block: its cache write
                pz, pt, pk, pd = pending.pick(rows)
                v = dit.forward_cached(
                    torch.cat([pz, x], 1), torch.cat([pt, t], 1), torch.cat([pk, keys], 1), cache,
                    rows=rows, drop_keys=torch.cat([pd, pending.no_drop[: x.shape[0]]], 1),
                    pending=True, attend=attend,
                )  # fmt: skip
            else:
                v = dit.forward_cached(x, t, keys, cache, rows=rows, staged=staged, attend=attend)
            if guidance == 1.0:
                return v
            v_null = dit.forward_cached(
                x, t, keys, cache, rows=rows, drop_keys=drop, staged=staged, attend=attend
            )
            return v_null + guidance * (v - v_null)

    x0 = sampler(model, noise, schedule)  # [R,Fb,C,h,w]
    z = x0.detach() if write_z is None else write_z
    if staged:
        with torch.no_grad():
            t_w = _levels(level, z)
            pending.update(_noised(z, t_w, level, write_noise), keys, t=t_w, rows=rows, active=active)
        _advance(cache, rows, active)
    else:
        write(dit, cache, z, keys, level=level, noise=write_noise, rows=rows, active=active,
              passes=passes, attend=attend)  # fmt: skip
    return x0 if decode is None else decode(x0)
