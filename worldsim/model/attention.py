"""Block-causal sliding-window attention: the one visibility rule and the backends that apply it.

`visible` is THE rule. The training forward builds its dense mask (SDPA) or block mask (FlexAttention)
from it, and the KV cache builds its read mask from it, so training and inference attend alike.
Backends: "sdpa" (torch SDPA with a bool mask; always there), "flex" (FlexAttention with a block mask;
compiled on CUDA), "flash" (flash-attn, only for cached reads, whose mask is a valid prefix).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from worldsim.model.config import ModelConfig

log = logging.getLogger(__name__)


def visible(q_frame: torch.Tensor, k_frame: torch.Tensor, block_frames: int, window: int) -> torch.Tensor:
    """May a token of frame `q_frame` attend to a token of frame `k_frame`? (sinks are handled apart)

    Block-causal (a block = `block_frames` frames, full attention inside it) and windowed: the query
    sees the last `window // block_frames` blocks, its own included. Negative `k_frame` = empty slot.
    Written with plain tensor ops so FlexAttention's mask_mod can call it too.
    """
    qb = q_frame // block_frames
    kb = k_frame // block_frames
    return (k_frame >= 0) & (kb <= qb) & (qb - kb < window // block_frames)


def frame_mask(
    q_frames: torch.Tensor, k_frames: torch.Tensor, *, sinks: int, block_frames: int, window: int
) -> torch.Tensor:
    """Frame-level mask `[..., Fq, sinks + Fk]` from frame indices `q_frames [..., Fq]`, `k_frames [..., Fk]`.

    The first `sinks` key columns are the sink frames: visible to every query.
    """
    m = visible(q_frames.unsqueeze(-1), k_frames.unsqueeze(-2), block_frames, window)
    sink = m.new_ones(*m.shape[:-1], sinks)
    return torch.cat([sink, m], dim=-1)


def expand_frame_mask(mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Frame-level `[..., Fq, Fk]` -> token-level `[..., Fq*N, Fk*N]` bool mask."""
    n = tokens_per_frame
    return mask.repeat_interleave(n, dim=-2).repeat_interleave(n, dim=-1)


def sequence_mask(
    frames: int, tokens_per_frame: int, *, sinks: int, block_frames: int, window: int, device=None
) -> torch.Tensor:
    """Token-level mask `[F*N, (sinks + F)*N]` for a training clip of `frames` frames (frame i at i)."""
    f = torch.arange(frames, device=device)
    return expand_frame_mask(
        frame_mask(f, f, sinks=sinks, block_frames=block_frames, window=window), tokens_per_frame
    )


# ---------------------------------------------------------------------------------------------------
# Sparse attention: per-layer windows (docs/design.md §8). Local layers use the same rule with a shorter window,
# so a frame is visible or not as a whole: whole 64-token tiles are skipped, never parts of one.
# ---------------------------------------------------------------------------------------------------


def mask_windows(cfg: ModelConfig) -> tuple[int, ...]:
    """The distinct windows the layers use: `(window,)` dense, `(window, local_window)` sparse."""
    return tuple(sorted({cfg.layer_window(i) for i in range(cfg.depth)}, reverse=True))


def frame_masks(q_frames: torch.Tensor, k_frames: torch.Tensor, cfg: ModelConfig) -> dict[int, torch.Tensor]:
    """Frame-level masks `{window: [..., Fq, sinks + Fk]}`, one per distinct layer window (at most two);
    layer i uses `masks[cfg.layer_window(i)]`. This is what the ring kernel takes to skip whole frames."""
    return {
        w: frame_mask(q_frames, k_frames, sinks=cfg.sinks, block_frames=cfg.block_frames, window=w)
        for w in mask_windows(cfg)
    }


def layer_frame_mask(
    q_frames: torch.Tensor, k_frames: torch.Tensor, cfg: ModelConfig, layer: int
) -> torch.Tensor:
    """Frame-level mask `[..., Fq, sinks + Fk]` of layer `layer` (its own window: local or global)."""
    return frame_mask(
        q_frames, k_frames, sinks=cfg.sinks, block_frames=cfg.block_frames, window=cfg.layer_window(layer)
    )


# ---------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask -> additive float mask (0 / -inf). SDPA runs about 1.4x faster with it on CPU."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q `[B,H,Lq,Dh]`, k/v `[B,H,Lk,Dh]`, mask (bool, or additive float from `additive`)
    broadcastable to `[B,H,Lq,Lk]` -> `[B,H,Lq,Dh]`. Every query must see at least one key."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@functools.lru_cache(maxsize=32)
def flex_block_mask(
    frames: int, tokens_per_frame: int, sinks: int, block_frames: int, window: int, device: str
):
    """FlexAttention BlockMask for a training clip; the same rule as `sequence_mask`."""
    from torch.nn.attention.flex_attention import create_block_mask

    n, s = tokens_per_frame, sinks * tokens_per_frame

    def mask_mod(b, h, q_idx, kv_idx):
        kf = (kv_idx - s) // n
        return (kv_idx < s) | visible(q_idx // n, kf, block_frames, window)

    lq, lk = frames * n, s + frames * n
    return create_block_mask(mask_mod, None, None, lq, lk, device=device)


@functools.cache
def _flex_fn(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """FlexAttention; compiled on CUDA (eager flex is a slow reference path, fine for CPU tests)."""
    return _flex_fn(q.is_cuda)(q, k, v, block_mask=block_mask)


@functools.cache
def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def flash_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """flash-attn over the first `lengths[b]` keys of each row (the cache's valid prefix).

    q `[B,H,Lq,Dh]`, k/v `[B,H,Lk,Dh]`, lengths int `[B]` -> `[B,H,Lq,Dh]`. CUDA + fp16/bf16 only.
    """
    from flash_attn import flash_attn_with_kvcache

    out = flash_attn_with_kvcache(
        q.transpose(1, 2),  # [B,Lq,H,Dh]
        k.transpose(1, 2),
        v.transpose(1, 2),
        cache_seqlens=lengths.to(torch.int32),
        causal=False,
    )
    return out.transpose(1, 2)
