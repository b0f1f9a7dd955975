"""8-bit storage of float tensors inside checkpoints: a matrix or convolution `k` stored as int8 plus
scales `k.q8scale` (one per index of dim 0 `[d0]`, or for a matrix one per group of `g` columns of each
row `[d0, d1 / g]`), and the DiT's int8 linears (int8 `X.weight` plus `X.scale` per output row); both read
back as floats. The checkpoint format itself is checkpoint.py."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from worldsim.checkpoint_check import Q8_SCALE, stored_scale_fits
from worldsim.errors import UserError


def quantize_stored(
    state: Mapping[str, torch.Tensor], *, min_numel: int = 4096, group: int | None = None
) -> dict[str, torch.Tensor]:
    """`state` with every float tensor of >= 2 dims and >= `min_numel` elements stored as int8 plus
    `.q8scale` scales (symmetric, max-abs): per index of dim 0, or with `group` g per g columns of each
    row of a matrix whose columns g divides (finer: the still view of a student survives it, where one
    scale per row of the DiT blocks' linears loses it, docs/design.md §7.4); the rest unchanged.
    Inverse: the load."""
    if group is not None and group < 1:
        raise ValueError(f"group must be a positive column count, got {group}")
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if not (t.is_floating_point() and t.dim() >= 2 and t.numel() >= min_numel):
            out[k] = t
            continue
        w = t.float()
        if group is not None and w.dim() == 2 and w.shape[1] % group == 0 and w.shape[1] > group:
            wg = w.reshape(w.shape[0], -1, group)  # [d0, G, g]
            scale = wg.abs().amax(-1).clamp_min(1e-12) / 127.0  # [d0, G]
            q = (wg / scale[..., None]).round().clamp(-127, 127).reshape(w.shape)
        else:
            scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
            q = (w / scale.view(-1, *[1] * (w.dim() - 1))).round().clamp(-127, 127)
        out[k] = q.to(torch.int8)
        out[k + Q8_SCALE] = scale.to(t.dtype)
    return out


def dequantize_linear_state(state: Mapping[str, torch.Tensor], *, where: str = "") -> dict[str, torch.Tensor]:
    """`state` with every int8 `X.weight` + `X.scale [out]` pair as one fp32 `X.weight`; floats as fp32."""
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if k.endswith(".scale") and k[: -len(".scale")] + ".weight" in state:
            w = state[k[: -len(".scale")] + ".weight"]
            if w.dtype == torch.int8:
                continue  # folded into its weight below
        if t.dtype == torch.int8 and k.endswith(".weight"):
            scale = state.get(k[: -len(".weight")] + ".scale")
            if scale is None or scale.shape != (t.shape[0],):
                raise UserError(
                    f"{where}/{k} is int8 {tuple(t.shape)} without one scale per row beside it; the file is "
                    f"damaged: re-export it"
                )
            out[k] = t.float() * scale.float()[:, None]
            continue
        out[k] = t.float() if t.is_floating_point() else t
    return out


def dequantize_stored(path: Path, group: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `quantize_stored`: each int8 + `.q8scale` pair as the float tensor it stands for
    (errors name `path` and `group`)."""
    if not any(k.endswith(Q8_SCALE) for k in state):
        return state
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if k.endswith(Q8_SCALE):
            if k[: -len(Q8_SCALE)] not in state:
                raise UserError(
                    f"{path}: {group}/{k} has no int8 tensor beside it; the file is damaged: re-export it"
                )
            continue
        scale = state.get(k + Q8_SCALE)
        if scale is not None:
            if t.dtype != torch.int8 or not stored_scale_fits(t, scale):
                raise UserError(
                    f"{path}: {group}/{k} is stored as {t.dtype} {tuple(t.shape)} with scales "
                    f"{tuple(scale.shape)}; an 8-bit tensor needs int8 and one scale per row (or per group "
                    f"of a row): re-export it"
                )
            if scale.dim() == 2:  # per group of columns
                d0, G = scale.shape
                t = (t.float().reshape(d0, G, -1) * scale.float()[..., None]).reshape(t.shape).to(scale.dtype)
            else:
                t = (t.float() * scale.float().view(-1, *[1] * (t.dim() - 1))).to(scale.dtype)
        out[k] = t
    return out
