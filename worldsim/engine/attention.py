"""Cached attention backends the engine hands to `DiT.forward_cached(attend=)`: the model itself only
knows SDPA (`worldsim.model.dit.sdpa_cached`); flash-attn and the Triton ring kernel are applied from here.

Each backend falls back to SDPA where it cannot express the pass: flash-attn takes only a valid-prefix
mask (not a staged pass, not a model with local layers); the ring kernel runs without gradient, on
CUDA (or TRITON_INTERPRET=1) and on the shapes `worldsim.kernels.ring_attention.supported` takes.
"""

from __future__ import annotations

import torch

from worldsim.model import attention as attn_lib
from worldsim.model.dit import CachedAttend, sdpa_cached
from worldsim.model.kvcache import CacheView

# the training forward's choices have no cached kernel of their own: SDPA
CACHED_BACKENDS = ("sdpa", "flex", "flash", "triton")


def flash_cached(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, view: CacheView, local: bool
) -> torch.Tensor:
    """flash-attn over the cache's valid prefix (slots fill in order), where that is the read mask."""
    prefix_only = view.local_mask is None and not view.staged  # a local window / staging is no prefix
    if prefix_only and q.is_cuda and attn_lib.flash_available():
        return attn_lib.flash_prefix(q, k, v, view.valid_tokens)
    return sdpa_cached(q, k, v, view, local)


def triton_cached(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, view: CacheView, local: bool
) -> torch.Tensor:
    """The Triton ring kernel (kernels/ring_attention.py): it skips whole masked frames (sparse layers)."""
    # triton (heavy, optional) comes with the kernel module: imported when this backend first runs
    from worldsim.kernels.common import available
    from worldsim.kernels.ring_attention import ring_attention, supported

    fmask = view.local_frame_mask if local else view.frame_mask  # [R, Fq, S+W(+Fb)] bool
    if not torch.is_grad_enabled() and available(q) and supported(q, fmask):
        return ring_attention(q, k, v, fmask)
    return sdpa_cached(q, k, v, view, local)


def cached_attention(name: str) -> CachedAttend | None:
    """The cached backend for a config's `attention` name (None: the model's SDPA)."""
    if name not in CACHED_BACKENDS:
        raise ValueError(f"attention backend {name!r}; pick one of {', '.join(CACHED_BACKENDS)}")
    return {"flash": flash_cached, "triton": triton_cached}.get(name)
