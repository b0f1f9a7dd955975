"""The student's autoregressive rollout for self-forcing (docs/design.md §7.3): the frame
function of inference (worldsim/frame.py), frame after frame, with gradient where training needs it.

Per frame: noise -> Euler steps of the deployed schedule against the ring-buffer `KVCache` -> the cache
write of the finished latent at the context noise level. The write stays a separate pass (inference
folds it into the next frame's first pass: the same values up to fp32 rounding), so an exit pass never
carries gradient into the previous frame's cache write. Training differences, and only these:
  * an exit step (per frame) ends the denoising early: the frame is the clean prediction
    x0 = x_t - t v at that step (at the last step this IS the Euler step to t = 0, so an exit at the
    last step reproduces inference exactly);
  * only the exit pass keeps gradient (it backpropagates into its block's K/V and the sinks); earlier
    steps and the cache write run without it, and cached K/V are stored detached;
  * `context` = "self" writes the student's own frames into the cache (self-forcing); "true" writes
    the real game's latents and "diffusion-forced" writes them noised at a random level: the baselines
    that train on ground-truth history.
`rollout` primes the cache with real context and generates; `continue_rollout` generates on from what
the cache already holds, so a streamed rollout (streaming.py) is the same rollout cut into chunks.
Shapes: B batch, F frames, C latent channels, h w latent grid, K keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from worldsim.frame import next_frame, prime
from worldsim.model.kvcache import KVCache
from worldsim.sampling import sample_euler
from worldsim.train.options import CONTEXTS


def _write_noise(z: torch.Tensor, level: float | torch.Tensor, gen) -> torch.Tensor | None:
    if isinstance(level, float) and level == 0.0:
        return None
    return torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=gen)


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
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Generate F frames after real context `ctx_z [B,Fc,C,h,w]` on `keys [B,F,K]`; returns `[B,F,C,h,w]`.

    `noise [B,F,C,h,w]`: the starting noise of each frame; `schedule [steps+1]` noise levels 1 -> 0;
    `generator` draws the cache writes' noise (context, then frame by frame); `options` are those of
    `continue_rollout` (exit steps, gradient, what the cache holds).
    """
    prime_context(dit, cache, ctx_z, ctx_keys, context_noise=context_noise, generator=generator)
    return continue_rollout(dit, cache, keys, noise, schedule, context_noise=context_noise, generator=generator,
                            **options)  # fmt: skip


def prime_context(
    dit,
    cache: KVCache,
    ctx_z: torch.Tensor,
    ctx_keys: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    context_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> None:
    """Restart cache rows `rows` (None = all) from real context `ctx_z [R,Fc,C,h,w]`, keys `[R,Fc,K]`,
    written at the context noise level as inference writes it (no gradient)."""
    with torch.no_grad():
        prime(dit, cache, ctx_z, ctx_keys, rows=rows, level=context_noise,
              noise=_write_noise(ctx_z, context_noise, generator))  # fmt: skip


def continue_rollout(
    dit,
    cache: KVCache,
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
    """The next F frames `[B,F,C,h,w]` of every cache row on `keys [B,F,K]`, after whatever the cache
    holds (rows may be at different depths: each row's frame counter places its frames). A rollout split
    into pieces gives the frames of one uninterrupted `rollout` (streaming).

    `noise [B,F,C,h,w]`: the starting noise of each frame; `exit_steps` (F ints in [0, steps)): the step
    whose clean prediction is the frame (None = the last step for every frame, i.e. inference). `grad`:
    keep gradient through each frame's exit pass. `context` (see the module docstring) needs
    `true_z [B,F,C,h,w]` unless "self"; "diffusion-forced" calls `level_fn(f)` -> `[B,1]` noise levels
    of the true frame written for frame f. `generator` draws the cache writes' noise.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context={context!r}; pick one of {CONTEXTS}")
    if context != "self" and true_z is None:
        raise ValueError(f"context={context!r} writes the true frames into the cache: pass true_z")
    F = keys.shape[1]
    steps = schedule.shape[0] - 1
    if exit_steps is None:
        exit_steps = [steps - 1] * F
    exit_steps = [int(e) for e in exit_steps]  # host ints: each picks the schedule its frame runs
    if len(exit_steps) != F or min(exit_steps) < 0 or max(exit_steps) >= steps:
        raise ValueError(f"exit_steps must be {F} steps in [0, {steps}), got {exit_steps}")
    out = []
    for f in range(F):
        sl = slice(f, f + 1)
        write_z = None if context == "self" else true_z[:, sl]
        level = level_fn(f) if context == "diffusion-forced" else context_noise
        x0 = next_frame(
            dit, cache, sample_euler, schedule, keys[:, sl], noise[:, sl], level=level,
            write_noise=_write_noise(noise[:, sl], level, generator), write_z=write_z,
            exit_step=exit_steps[f], grad=grad,
        )  # fmt: skip
        out.append(x0)
    return torch.cat(out, dim=1)  # [B,F,C,h,w]
