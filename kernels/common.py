"""What every kernel module needs: is Triton importable, and may it run on this tensor?"""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(t: torch.Tensor) -> bool:
    """True when a Triton kernel can take `t`: CUDA tensors, or any tensor under TRITON_INTERPRET=1."""
    return triton_importable() and (t.is_cuda or interpreting())
