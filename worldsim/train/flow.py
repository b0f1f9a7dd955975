"""The teacher's objective: rectified flow with diffusion forcing (docs/design.md §7.2), one optimizer step, and
clips encoded to latents. The training loop lives in teacher.py; self-forcing reuses `encode_clips`."""

from __future__ import annotations

import torch

from worldsim.model.autoencoder import Autoencoder, frames_to_model
from worldsim.train.corrupt import ContextRecipe, sample_levels


def sample_t(
    shape: tuple[int, ...],
    *,
    shift: float,
    context_prob: float,
    context_max: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Independent noise level per frame (diffusion forcing), the plain recipe: `corrupt.sample_levels`
    with a fraction `context_prob` of frames at a context level in [0, context_max]."""
    recipe = ContextRecipe(prob=context_prob, max=context_max)
    return sample_levels(shape, shift=shift, recipe=recipe, device=device, generator=generator)[0]


def token_change(z0: torch.Tensor, cap: float = 4.0) -> torch.Tensor:
    """How much each latent token changed from the frame before, `[B,F,h,w]`: the mean over channels of
    |z_t - z_(t-1)| (clean latents; unit std per channel), capped; 0 for a clip's first frame."""
    change = (z0[:, 1:] - z0[:, :-1]).abs().mean(2).clamp_max(cap)  # [B,F-1,h,w]
    return torch.cat([torch.zeros_like(change[:, :1]), change], 1)


def flow_matching_loss(
    model,
    z0: torch.Tensor,
    t: torch.Tensor,
    keys: torch.Tensor,
    drop_keys: torch.Tensor | None,
    noise: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    change: torch.Tensor | None = None,
    share: float = 0.0,
) -> torch.Tensor:
    """MSE between the predicted and true velocity v = noise - x0 at x_t = (1 - t) x0 + t noise.

    z0 [B,F,C,h,w] clean latents, t [B,F], keys [B,F,K] bool, drop_keys [B,F] bool (null key state),
    mask [B,F] (1 = in the loss; the corrupted context frames of corrupt.py are 0) or None (all).
    `change [B,F,h,w]` (`token_change`) and `share` (`--motion-share`): the loss is (1 - share) x the
    mean over tokens plus share x the mean weighted by each token's change. Where little of a frame
    moves (an Atari ball and paddle on a still screen) the plain mean is nearly all background, and a
    model scores well while ignoring the keys; the share puts the loss where the frame changes.
    """
    if noise is None:
        noise = torch.randn_like(z0)
    tt = t[:, :, None, None, None].to(z0.dtype)  # [B,F] -> [B,F,1,1,1]
    x_t = (1 - tt) * z0 + tt * noise
    v = model(x_t, t, keys, drop_keys)
    err = (v.float() - (noise - z0).float()).pow(2)
    moving = change is not None and share > 0
    if mask is None and not moving:
        return err.mean()
    per_token = err.mean(2)  # [B,F,h,w]
    keep = torch.ones_like(per_token) if mask is None else mask[:, :, None, None].expand_as(per_token).float()
    loss = (per_token * keep).sum() / keep.sum().clamp_min(1.0)
    if moving:
        w = change.float() * keep
        # no token changed (a still batch): the plain mean alone
        on_moving = (per_token * w).sum() / w.sum().clamp_min(1e-6)
        loss = torch.where(w.sum() > 0, (1 - share) * loss + share * on_moving, loss)
    return loss


def train_step(
    fwd,
    model,
    opt,
    z0,
    t,
    keys,
    drop,
    *,
    grad_clip: float,
    amp,
    noise=None,
    mask=None,
    change=None,
    share=0.0,
):
    """One optimizer step; returns (loss, grad norm) as tensors (no host sync).

    `fwd` is what runs the forward (the model, or its DDP / compiled wrapper), `model` the plain module
    whose parameters are clipped. Under DDP the gradients are the mean over ranks by the time backward
    returns, so the clip and the step see the gradient of the whole global batch, as one process would.
    """
    with amp:
        loss = flow_matching_loss(fwd, z0, t, keys, drop, noise, mask, change, share)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss, gnorm


@torch.no_grad()
def encode_clips(ae: Autoencoder, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames [B,F,H,W,3] -> normalised latents [B,F,C,h,w] (fp32)."""
    B, Fr = frames.shape[:2]
    x = frames_to_model(frames.flatten(0, 1))  # [B*F,3,H,W]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)
    with amp:
        z = ae.encode(x)
    return z.float().unflatten(0, (B, Fr))  # [B*F,C,h,w] -> [B,F,C,h,w]


def validation_loss(ema, z, t, keys, noise, amp) -> float:
    """The loss of `ema` on fixed validation latents, noise levels and noise (a host sync: not per step)."""
    with amp:
        return flow_matching_loss(ema, z, t, keys, None, noise).item()
