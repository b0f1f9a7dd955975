"""Fused adaLN modulation + LayerNorm: `LN(x) * (1 + scale) + shift` in one pass over the tokens.

The DiT blocks (worldsim/model/dit.py) apply it twice per block with a per-FRAME modulation shared by
the frame's N tokens: unfused it is a LayerNorm, a multiply-add and their temporaries (3 kernels and two
round trips of `[B,F,N,D]` through memory); fused, each token row is read once and written once, with
the statistics in fp32. LayerNorm without affine weights, as the blocks use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from worldsim.kernels.common import available

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference path still works
    triton = None


def adaln_layernorm_reference(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """x `[B,F,N,D]`, shift/scale `[B,F,1,D]` -> `[B,F,N,D]` (what dit.Block computes, unfused)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale) + shift


if triton is not None:

    @triton.jit
    def _adaln_ln_kernel(
        X, SHIFT, SCALE, Y, D, N, stride_xr, stride_sh, stride_sc, eps, BLOCK_D: tl.constexpr
    ):
        row = tl.program_id(0)  # one token row of [B*F*N, D]
        frame = row // N  # its frame in [B*F]: the modulation row
        cols = tl.arange(0, BLOCK_D)
        m = cols < D
        x = tl.load(X + row * stride_xr + cols, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / D
        xc = tl.where(m, x - mean, 0.0)
        var = tl.sum(xc * xc, axis=0) / D
        rstd = 1.0 / tl.sqrt(var + eps)
        sh = tl.load(SHIFT + frame * stride_sh + cols, mask=m, other=0.0).to(tl.float32)
        sc = tl.load(SCALE + frame * stride_sc + cols, mask=m, other=0.0).to(tl.float32)
        y = xc * rstd * (1.0 + sc) + sh
        tl.store(Y + row * stride_xr + cols, y.to(Y.dtype.element_ty), mask=m)


def _frames_view(t: torch.Tensor, B: int, F_: int, D: int, name: str) -> torch.Tensor:
    if t.shape not in ((B, F_, 1, D), (B, F_, D)):
        raise ValueError(
            f"adaln_layernorm: {name} must be [B, F, 1, D] = {(B, F_, 1, D)}, got {tuple(t.shape)}"
        )
    t = t.reshape(B * F_, D)  # a view for dit's unbind() slices (frame stride 6*D)
    return t if t.stride(-1) == 1 else t.contiguous()


def adaln_layernorm(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Fused `LN(x) * (1 + scale) + shift`; x `[B,F,N,D]`, shift/scale `[B,F,1,D]` (per frame).

    Runs the Triton kernel where `worldsim.kernels.available(x)`, the reference otherwise (same function).
    """
    if x.ndim != 4:
        raise ValueError(f"adaln_layernorm: x must be [B, F, N, D], got {tuple(x.shape)}")
    if not available(x) or triton is None:
        return adaln_layernorm_reference(x, shift, scale, eps)
    B, F_, N, D = x.shape
    sh = _frames_view(shift, B, F_, D, "shift")
    sc = _frames_view(scale, B, F_, D, "scale")
    x2 = x.reshape(B * F_ * N, D)  # [B*F*N, D]
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty((B * F_ * N, D), device=x.device, dtype=x.dtype)
    block = triton.next_power_of_2(D)
    warps = 4 if block <= 1024 else 8
    _adaln_ln_kernel[(B * F_ * N,)](
        x2, sh, sc, y, D, N, x2.stride(0), sh.stride(0), sc.stride(0), eps, BLOCK_D=block, num_warps=warps
    )
    return y.view(B, F_, N, D)
