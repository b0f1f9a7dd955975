"""8-bit weight matmul: `y = x @ (W_int8 * scale)^T + bias` with W read as int8 (half the bytes of bf16).

At our sizes (64 tokens per session, width 256-2048) a linear of a few sessions is bound by reading its
weight, so reading int8 instead of bf16 is the win to look for. The kernel loads an int8 tile of W,
converts it to x's dtype in registers (exact: |q| <= 127), accumulates x @ W^T in fp32 and applies the
per-output-channel scale and the bias once per output tile (the scale is constant along K, so this is the
dequantized product). `Int8Linear` (worldsim/engine/quant.py) calls it on the shapes where it measured
faster than the PyTorch path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from worldsim.kernels.common import available, interpreting

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference path still works
    triton = None

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def w8_matmul_reference(
    x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x `[M, K]`, w int8 `[N, K]`, scale `[N]`, bias `[N]` -> `[M, N]` in x's dtype (fp32 math)."""
    y = F.linear(x.float(), w.float() * scale.float()[:, None], None if bias is None else bias.float())
    return y.to(x.dtype)


if triton is not None:

    @triton.jit
    def _w8_matmul_kernel(
        X, W, S, BIAS, Y, M, N, K,
        stride_xm, stride_wn, stride_ym,
        HAS_BIAS: tl.constexpr, FP32: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        pid_m, pid_n = tl.program_id(0), tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] rows of x / y
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] rows of W = columns of y
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            x = tl.load(
                X + rm[:, None] * stride_xm + kk[None, :],
                mask=(rm[:, None] < M) & (kk[None, :] < K),
                other=0.0,
            )  # fmt: skip  [BM, BK]
            w = tl.load(
                W + rn[None, :] * stride_wn + kk[:, None],
                mask=(rn[None, :] < N) & (kk[:, None] < K),
                other=0,
            )  # fmt: skip  [BK, BN] int8, W^T's tile
            if FP32 or UPCAST:  # UPCAST: the interpreter's bf16 dot is wrong, it checks the rest
                acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(x, w.to(x.dtype))  # int8 -> bf16/fp16 is exact (|q| <= 127)
        s = tl.load(S + rn, mask=rn < N, other=0.0).to(tl.float32)
        y = acc * s[None, :]
        if HAS_BIAS:
            y += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(
            Y + rm[:, None] * stride_ym + rn[None, :],
            y.to(Y.dtype.element_ty),
            mask=(rm[:, None] < M) & (rn[None, :] < N),
        )


def supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the kernel takes x `[M, K]` and int8 w `[N, K]`: a Triton device (CUDA, or the
    interpreter), x bf16/fp16/fp32 with unit stride along K, w contiguous, K >= 16."""
    return (
        triton is not None
        and available(x)
        and x.ndim == 2
        and x.dtype in DTYPES
        and x.stride(-1) == 1
        and w.dtype == torch.int8
        and w.ndim == 2
        and w.is_contiguous()
        and w.shape[1] == x.shape[1]
        and x.shape[1] >= 16
        and w.device == x.device
    )


def _config(M: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps): small M is weight-bound, so wide N tiles, few rows."""
    if M <= 16:
        return 16, 64, 128, 4
    if M <= 64:
        return 32, 64, 128, 4
    return 64, 128, 64, 8


def w8_matmul(
    x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`x [M, K] @ (w [N, K] int8 * scale [N])^T + bias [N]` -> `[M, N]` in x's dtype (fp32 accumulation).

    The Triton kernel where `supported(x, w)`, the reference otherwise (the same function).
    """
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"w8_matmul: x must be [M, K] and w [N, K], got {tuple(x.shape)}, {tuple(w.shape)}")
    N = w.shape[0]
    if scale.shape != (N,) or (bias is not None and bias.shape != (N,)):
        raise ValueError(f"w8_matmul: scale and bias must be [{N}], got {tuple(scale.shape)}")
    if not supported(x, w):
        return w8_matmul_reference(x, w, scale, bias)
    M, K = x.shape
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    bm, bn, bk, warps = _config(M)
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _w8_matmul_kernel[grid](
        x, w, scale, bias if bias is not None else scale, y, M, N, K,
        x.stride(0), w.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, FP32=x.dtype == torch.float32, UPCAST=interpreting(),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
    )  # fmt: skip
    return y
