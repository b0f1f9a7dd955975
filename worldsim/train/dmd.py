"""Distribution matching distillation (DMD / DMD2) losses for the self-forcing student (docs/design.md §7.3).

The teacher is the real score, a critic trained on the student's own rollouts the fake score. Both see
the generated clip after its context (the frames before it: real, or generated earlier in a streamed
rollout), through the full-clip `DiT.forward` with the deployed block-causal window. The context is
noised at the context noise level as the cache holds it (the teacher was trained on context noised at
the level it is told), the generated frames at an independent level each (diffusion forcing). Flow convention of sampling.py:
x_t = (1 - t) x0 + t noise, v = noise - x0, so x0 = x_t - t v.
Shapes: B batch, Fc context frames, F generated frames, C h w latents, K keys.
"""

from __future__ import annotations

import torch

from worldsim.sampling import add_noise


def _clip(ctx_z, ctx_keys, x, keys):
    """Context then generated frames: latents `[B,Fc+F,C,h,w]`, keys `[B,Fc+F,K]`."""
    return torch.cat([ctx_z, x], 1), torch.cat([ctx_keys, keys], 1)


def _context(ctx_z: torch.Tensor, context_noise: float) -> torch.Tensor:
    """The context latents at the context noise level (fresh noise: as a cache write noises them)."""
    if context_noise == 0.0:
        return ctx_z
    t = torch.full(ctx_z.shape[:2], context_noise, device=ctx_z.device, dtype=ctx_z.dtype)
    return add_noise(ctx_z, torch.randn_like(ctx_z), t)


def _levels(ctx_z: torch.Tensor, t: torch.Tensor, context_noise: float) -> torch.Tensor:
    tc = torch.full(ctx_z.shape[:2], context_noise, device=t.device, dtype=t.dtype)
    return torch.cat([tc, t], 1)  # [B,Fc+F]


def sample_levels(shape, lo: float, hi: float, device, generator=None) -> torch.Tensor:
    """Independent noise levels `[B,F]` uniform in [lo, hi] (DMD avoids the extremes)."""
    return lo + (hi - lo) * torch.rand(shape, device=device, generator=generator)


def dmd_loss(
    x0: torch.Tensor,
    ctx_z: torch.Tensor,
    ctx_keys: torch.Tensor,
    keys: torch.Tensor,
    teacher,
    critic,
    t: torch.Tensor,
    *,
    context_noise: float = 0.0,
    guidance: float = 1.0,
    row_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """DMD generator loss for generated latents `x0 [B,F,C,h,w]` (with gradient) at levels `t [B,F]`.

    The gradient of the returned loss w.r.t. x0 is the normalized DMD gradient
    (x0_fake - x0_real) / mean|x0 - x0_real| (DMD2), per clip; `guidance` > 1 applies key guidance to
    the teacher; `row_weight [B]` scales each clip's gradient (0: the clip leaves the DMD term, as idle
    rollouts do with `--idle-dmd 0`). Returns (loss, figures for the log).
    """
    Fc = ctx_z.shape[1]
    with torch.no_grad():
        xt = add_noise(x0.detach(), torch.randn_like(x0), t)
        z, k = _clip(_context(ctx_z, context_noise), ctx_keys, xt, keys)
        tt = _levels(ctx_z, t, context_noise)
        v_real = teacher(z, tt, k)[:, Fc:]
        if guidance != 1.0:
            drop = torch.ones(tt.shape, dtype=torch.bool, device=tt.device)
            v_null = teacher(z, tt, k, drop)[:, Fc:]
            v_real = v_null + guidance * (v_real - v_null)
        v_fake = critic(z, tt, k)[:, Fc:]
        tb = t[..., None, None, None].to(xt.dtype)  # [B,F,1,1,1]
        x0_real, x0_fake = xt - tb * v_real, xt - tb * v_fake
        scale = (x0.detach() - x0_real).abs().float().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
        grad = (x0_fake - x0_real).float() / scale
        if row_weight is not None:
            grad = grad * row_weight.to(grad.device, grad.dtype).view(-1, 1, 1, 1, 1)
        grad = grad.to(x0.dtype)
        target = (x0.detach() - grad).float()
    loss = 0.5 * (x0.float() - target).pow(2).sum() / x0.shape[0]  # d loss / d x0 = grad / B
    return loss / x0[0].numel(), {"dmd_grad_norm": grad.float().pow(2).mean().sqrt().item()}


def critic_loss(
    critic,
    x0: torch.Tensor,
    ctx_z: torch.Tensor,
    ctx_keys: torch.Tensor,
    keys: torch.Tensor,
    t: torch.Tensor,
    *,
    context_noise: float = 0.0,
) -> torch.Tensor:
    """Flow matching of the critic on the student's generated frames `x0 [B,F,...]` (detached) at `t [B,F]`."""
    Fc = ctx_z.shape[1]
    x0 = x0.detach()
    noise = torch.randn_like(x0)
    z, k = _clip(_context(ctx_z, context_noise), ctx_keys, add_noise(x0, noise, t), keys)
    v = critic(z, _levels(ctx_z, t, context_noise), k)[:, Fc:]
    return (v.float() - (noise - x0).float()).pow(2).mean()
