"""Attention of one block's queries over the KV ring cache, skipping whole frames the mask hides.

The cache holds `S + W` frames of `N` tokens (sinks first, then the ring, in slot order) and its keys
are stored fully rotated (the temporal RoPE is periodic in the window: see worldsim/model/rope.py), so
a read needs no re-rotation. Visibility is frame-level (`frame_mask`: `[B, Fq, S+W]`, the same rule
the cache's token mask is expanded from), so a query tile of one frame either attends to a key frame's
N tokens or skips them without loading them: block-sparse at frame granularity. Empty slots during
filling, frames out of the window and any sparser frame-level pattern all cost nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from worldsim.kernels.common import available, interpreting

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def ring_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_mask: torch.Tensor
) -> torch.Tensor:
    """q `[B,H,Fq*N,Dh]`, k/v `[B,H,(S+W)*N,Dh]`, frame_mask bool `[B,Fq,S+W]` -> `[B,H,Fq*N,Dh]`."""
    Fq, Fk = frame_mask.shape[-2:]
    n = q.shape[2] // Fq
    m = frame_mask.repeat_interleave(n, dim=-2).repeat_interleave(n, dim=-1)  # [B, Fq*N, Fk*N]
    bias = torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill_(~m, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])


if triton is not None:

    @triton.jit
    def _ring_attn_kernel(
        Q, K, V, MASK, O, qk_scale,  # noqa: E741 - the kernel names its pointers Q K V O
        s_qb, s_qh, s_qm, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_om, s_mb, s_mq,
        H, N, n_kv_frames,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)  # a tile of BLOCK_M query rows, inside one query frame
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :])
        if UPCAST:
            q = q.to(tl.float32)
        q_frame = (pid_m * BLOCK_M) // N
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for j in range(0, n_kv_frames):
            visible = tl.load(MASK + b * s_mb + q_frame * s_mq + j)
            if visible != 0:  # a hidden frame: its K/V are never loaded
                for start in range(0, N, BLOCK_N):
                    offs_n = j * N + start + tl.arange(0, BLOCK_N)
                    k = tl.load(K + b * s_kb + h * s_kh + offs_n[:, None] * s_kn + offs_d[None, :])
                    v = tl.load(V + b * s_vb + h * s_vh + offs_n[:, None] * s_vn + offs_d[None, :])
                    if UPCAST:
                        k, v = k.to(tl.float32), v.to(tl.float32)
                    s = (
                        tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
                    )  # [BLOCK_M, BLOCK_N], log2 units
                    m_new = tl.maximum(m_i, tl.max(s, 1))
                    p = tl.exp2(s - m_new[:, None])
                    alpha = tl.exp2(m_i - m_new)
                    l_i = l_i * alpha + tl.sum(p, 1)
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                    m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(
            O + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_d[None, :], acc.to(O.dtype.element_ty)
        )


def _tile(n: int) -> int:
    """The largest power-of-two tile (16..64) dividing `n` tokens, 0 when there is none."""
    for t in (64, 32, 16):
        if n % t == 0:
            return t
    return 0


def supported(q: torch.Tensor, frame_mask: torch.Tensor) -> bool:
    """Shapes the kernel takes: N a multiple of 16, head dim a power of two >= 16."""
    Fq = frame_mask.shape[-2]
    n, dh = q.shape[2] // Fq, q.shape[-1]
    return q.shape[2] % Fq == 0 and _tile(n) > 0 and dh >= 16 and dh & (dh - 1) == 0


def ring_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_mask: torch.Tensor
) -> torch.Tensor:
    """Block-sparse cached attention (see the module docstring); the reference where the kernel can't run.

    Every query frame must see at least one key frame (its own block always is).
    """
    B, H, Lq, Dh = q.shape
    if frame_mask.ndim != 3 or frame_mask.shape[0] != B or Lq % frame_mask.shape[1]:
        raise ValueError(
            f"ring_attention: frame_mask must be [B, Fq, S+W] with Fq dividing {Lq} queries, "
            f"got {tuple(frame_mask.shape)} for q {tuple(q.shape)}"
        )
    Fk = frame_mask.shape[2]
    if k.shape != (B, H, k.shape[2], Dh) or k.shape[2] % Fk or v.shape != k.shape:
        raise ValueError(
            f"ring_attention: k/v must be [B, H, (S+W)*N, Dh], got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if triton is None or not available(q) or not supported(q, frame_mask):
        return ring_attention_reference(q, k, v, frame_mask)
    N = Lq // frame_mask.shape[1]
    if k.shape[2] != Fk * N:
        raise ValueError(f"ring_attention: the cache holds {k.shape[2]} tokens, expected {Fk} frames x {N}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    mask = frame_mask.to(torch.int8).contiguous()
    out = torch.empty_like(q)
    tile = _tile(N)
    _ring_attn_kernel[(Lq // tile, B * H)](
        q, k, v, mask, out, 1.0 / math.sqrt(Dh) * 1.4426950408889634,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        mask.stride(0), mask.stride(1), H, N, Fk,
        BLOCK_M=tile, BLOCK_N=tile, HEAD_DIM=Dh,
        # the Triton interpreter (3.9) computes tl.dot of bf16/fp16 wrongly: fp32 dots there only
        UPCAST=interpreting() and q.dtype != torch.float32,
        # fp32 stays fp32 (torch does not use TF32 by default either); half types use the tensor cores
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    return out
