"""Triton kernels for the per-frame path, each next to the PyTorch reference it must match.

`available()` says whether the Triton path can run on a tensor's device (CUDA, or any device with
TRITON_INTERPRET=1 for the CPU tests); callers fall back to the reference otherwise.
"""

from worldsim.kernels.adaln_norm import adaln_layernorm, adaln_layernorm_reference
from worldsim.kernels.common import available
from worldsim.kernels.ring_attention import ring_attention, ring_attention_reference

__all__ = [
    "adaln_layernorm",
    "adaln_layernorm_reference",
    "available",
    "ring_attention",
    "ring_attention_reference",
]
