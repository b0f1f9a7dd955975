"""The student's autoregressive rollout for self-forcing (DESIGN §6.3), through the inference cache code.

Per frame, exactly as `NeuralWorld.step` does it: noise -> Euler steps of the deployed schedule, each a
`DiT.forward_cached` pass against the ring-buffer `KVCache` -> one write pass of the finished latent at
the context noise level -> `cache.advance()`. (NeuralWorld folds that write pass into the next frame's
first pass by default: the same values up to fp32 rounding. The rollout keeps it separate, so an exit
pass never carries gradient into the previous frame's cache write.) Training differences, and only these:
  * an exit step (per frame) ends the denoising early: the frame is the clean prediction
    x0 = x_t - t v at that step (at the last step this IS the Euler step to t = 0, so an exit at the
    last step reproduces inference exactly);
  * only the exit pass keeps gradient (it backpropagates into its block's K/V and the sinks); earlier
    steps and the cache write run without it, and cached K/V are stored detached;
  * `context` = "self" writes the student's own frames into the cache (self-forcing); "true" writes
    the real game's latents and "diffusion-forced" writes them noised at a random level: the baselines
    that train on ground-truth history.
Shapes: B batch, F frames, C latent channels, h w latent grid, K keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from worldsim.model.kvcache import KVCache
from worldsim.sampling import add_noise

CONTEXTS = ("self", "true", "diffusion-forced")


def prime(dit, cache: KVCache, z: torch.Tensor, keys: torch.Tensor, context_noise: float) -> None:
    """Empty the cache and write real context latents `z [B,Fc,C,h,w]` (keys `[B,Fc,K]`) in order."""
    cache.reset()
    with torch.no_grad():
        for i in range(z.shape[1]):
            write(dit, cache, z[:, i : i + 1], keys[:, i : i + 1], context_noise, None)


def write(dit, cache: KVCache, z: torch.Tensor, keys: torch.Tensor, level: float | torch.Tensor, gen) -> None:
    """The write pass: finished block `z [B,1,C,h,w]` enters the cache at noise level `level`, then advance.

    `level` a float (the config's context noise) or a `[B,1]` tensor (diffusion-forced baseline).
    """
    t = torch.as_tensor(level, device=z.device, dtype=z.dtype).expand(z.shape[:2]).contiguous()  # [B,1]
    if not (isinstance(level, float) and level == 0.0):
        z = add_noise(z, torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=gen), t)
    with torch.no_grad():
        dit.forward_cached(z, t, keys, cache)
    cache.advance()


def rollout(
    dit,
    cache: KVCache,
    ctx_z: torch.Tensor,
    ctx_keys: torch.Tensor,
    keys: torch.Tensor,
    noise: torch.Tensor,
    schedule: torch.Tensor,
    *,
    context_noise: float = 0.0,
    exit_steps: torch.Tensor | list[int] | None = None,
    grad: bool = False,
    context: str = "self",
    true_z: torch.Tensor | None = None,
    level_fn: Callable[[int], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate F frames after real context `ctx_z [B,Fc,C,h,w]` on `keys [B,F,K]`; returns `[B,F,C,h,w]`.

    `noise [B,F,C,h,w]`: the starting noise of each frame; `schedule [steps+1]` noise levels 1 -> 0;
    `exit_steps` (F ints in [0, steps)): the step whose clean prediction is the frame (None = the last
    step for every frame, i.e. inference). `grad`: keep gradient through each frame's exit pass.
    `context` (see the module docstring) needs `true_z [B,F,C,h,w]` unless "self"; "diffusion-forced"
    calls `level_fn(f)` -> `[B,1]` noise levels of the true frame written for frame f.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context={context!r}; pick one of {CONTEXTS}")
    if context != "self" and true_z is None:
        raise ValueError(f"context={context!r} writes the true frames into the cache: pass true_z")
    B, F = keys.shape[:2]
    steps = schedule.shape[0] - 1
    if exit_steps is None:
        exit_steps = [steps - 1] * F
    exit_steps = [int(e) for e in exit_steps]  # host ints: the Python loop below branches on them
    if len(exit_steps) != F or min(exit_steps) < 0 or max(exit_steps) >= steps:
        raise ValueError(f"exit_steps must be {F} steps in [0, {steps}), got {exit_steps}")
    prime(dit, cache, ctx_z, ctx_keys, context_noise)
    out = []
    for f in range(F):
        k = keys[:, f : f + 1]  # [B,1,K]
        x = noise[:, f : f + 1]  # [B,1,C,h,w]
        for i in range(exit_steps[f] + 1):
            t = schedule[i].to(x.dtype).expand(B, 1)  # [B,1]
            last = i == exit_steps[f]
            with torch.set_grad_enabled(grad and last):
                v = dit.forward_cached(x, t, k, cache)
            if last:
                x0 = x - schedule[i].to(x.dtype) * v  # the clean prediction (= Euler to t = 0)
            else:
                x = x + (schedule[i + 1] - schedule[i]).to(x.dtype) * v
        out.append(x0)
        if context == "self":
            write(dit, cache, x0.detach(), k, context_noise, generator)
        elif context == "true":
            write(dit, cache, true_z[:, f : f + 1], k, context_noise, generator)
        else:
            write(dit, cache, true_z[:, f : f + 1], k, level_fn(f), generator)
    return torch.cat(out, dim=1)  # [B,F,C,h,w]
