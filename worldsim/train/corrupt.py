"""What the teacher's context is made of: noise levels per frame, and the corruptions that teach it to
recover from its own mistakes (docs/design.md §7.2).

At inference every frame after the first few is the model's own output, with its own errors: blur, a drift
of the mean colour, a wall a little off. A teacher trained only on true frames as context has never seen
those and compounds them (the idle view dissolves in seconds). Three remedies, each a flag:

* strong context noise (`aug_prob`, `aug_max`): a fraction of the context frames get a level up to ~0.5
  instead of <= `context_max`; the level is conditioned as always, so this is plain diffusion forcing
  over a wider range (GameNGen found noise on the context up to 0.7 critical for long rollouts);
* a colour offset (`offset`): a constant per latent channel added to some context frames, the
  low-frequency error that shows as the view brightening or darkening over minutes; the frames after
  them are still trained on the true latents, so the model learns not to carry an offset forward;
* own predictions (`own_prob`): some rows' context frames are replaced by the model's own one-pass
  prediction of them from a noised copy (no gradient), the error the model actually makes.

A corrupted frame is not a sample of the data at its level: it is left out of the loss (the mask), and
only the frames after it learn from it.
Shapes: B batch, F frames, C h w latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worldsim.errors import UserError


@dataclass(frozen=True)
class ContextRecipe:
    prob: float = 0.5  # fraction of frames at a context (small) noise level
    max: float = 0.1  # context levels are uniform in [0, max] ...
    aug_prob: float = 0.0  # ... or, for this fraction of the context frames, uniform in [0, aug_max]
    aug_max: float = 0.5
    offset: float = 0.0  # std of the per-channel offset on `offset_prob` of the context frames
    offset_prob: float = 0.25
    own_prob: float = 0.0  # fraction of rows whose context frames are the model's own predictions
    own_levels: tuple[float, float] = (0.3, 0.7)  # the noise a predicted frame was denoised from

    @classmethod
    def from_flags(cls, args) -> ContextRecipe:
        """The recipe a teacher's `--context-*` / `--own-prob` flags ask for, checked (and its
        `--motion-share`, the objective's weighting of what moves: flow.flow_matching_loss)."""
        recipe = cls(prob=args.context_prob, max=args.context_max, aug_prob=args.context_aug_prob,
                     aug_max=args.context_aug_max, offset=args.context_offset,
                     offset_prob=args.context_offset_prob, own_prob=args.own_prob)  # fmt: skip
        recipe.check()
        if not 0.0 <= getattr(args, "motion_share", 0.0) < 1.0:
            raise UserError(
                f"--motion-share must be in [0, 1) (0: the plain mean over tokens), got {args.motion_share}"
            )
        return recipe

    def check(self) -> None:
        for name in ("prob", "aug_prob", "offset_prob", "own_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise UserError(f"--context-{name.replace('_', '-')} must be in [0, 1], got {v}")
        for name in ("max", "aug_max"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"--context-{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.offset < 0:
            raise UserError(f"--context-offset must be >= 0, got {self.offset}")

    @property
    def corrupts(self) -> bool:
        return (self.offset > 0 and self.offset_prob > 0) or self.own_prob > 0


def sample_levels(
    shape: tuple[int, ...],
    *,
    shift: float,
    recipe: ContextRecipe,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent noise level per frame (diffusion forcing) and which frames are context: `(t, ctx)`.

    Logit-normal t, shifted toward noise by `shift` (as the deployed schedule). A fraction `recipe.prob`
    of frames get a context level instead: at inference the context is (nearly) clean, so every frame
    should often see near-clean frames before it, not only other noisy ones.
    """
    u = torch.randn(shape, device=device, generator=generator).sigmoid()
    t = shift * u / (1 + (shift - 1) * u)
    ctx = torch.rand(shape, device=device, generator=generator) < recipe.prob
    top: float | torch.Tensor = recipe.max
    if recipe.aug_prob > 0:  # drawn only then: the plain recipe's levels stay those of earlier runs
        strong = torch.rand(shape, device=device, generator=generator) < recipe.aug_prob
        top = torch.where(strong, recipe.aug_max, recipe.max)
    t_ctx = torch.rand(shape, device=device, generator=generator) * top
    return torch.where(ctx, t_ctx, t), ctx


@torch.no_grad()
def corrupt_context(
    model, z0: torch.Tensor, ctx: torch.Tensor, keys: torch.Tensor, recipe: ContextRecipe
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(z, mask)`: `z0 [B,F,C,h,w]` with some context frames (`ctx [B,F]`) corrupted as `recipe` says,
    and the loss mask `[B,F]` (0 on the corrupted frames); `(z0, None)` when the recipe corrupts nothing.

    `model(x, t, keys, drop)` predicts the velocity (the training forward, run here without gradient on
    a fixed number of rows, so a compiled forward sees one shape)."""
    if not recipe.corrupts:
        return z0, None
    B, F = ctx.shape
    z, bad = z0, torch.zeros_like(ctx)
    rows = round(recipe.own_prob * B)
    if rows:
        zr, kr = z0[:rows], keys[:rows]
        lo, hi = recipe.own_levels
        t = lo + (hi - lo) * torch.rand(rows, F, device=z0.device)
        tt = t[:, :, None, None, None]
        x = (1 - tt) * zr + tt * torch.randn_like(zr)
        pred = x - tt * model(x, t, kr, None).float()  # x0 = x_t - t v: the one-pass clean prediction
        own = torch.zeros_like(ctx)
        own[:rows] = ctx[:rows]
        z = torch.where(own[:, :, None, None, None], torch.cat([pred, z0[rows:]]), z)
        bad = bad | own
    if recipe.offset > 0 and recipe.offset_prob > 0:
        shifted = ctx & ~bad & (torch.rand(B, F, device=z0.device) < recipe.offset_prob)
        delta = recipe.offset * torch.randn(B, F, z0.shape[2], 1, 1, device=z0.device)
        z = z + delta * shifted[:, :, None, None, None]
        bad = bad | shifted
    return z, (~bad).float()
