"""Swap the DiT's blocks to fused-kernel variants from outside (the model code stays pure).

`fuse_adaln(dit)` turns every `Block` into a `FusedAdaLNBlock`: the same function and parameters, with
`LN(x) * (1 + scale) + shift` done by one Triton kernel (kernels/adaln_norm.py) where it can run (CUDA),
the PyTorch reference elsewhere. Undone by `unfuse(dit)`. The benchmark decides where it is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from worldsim.kernels import adaln_layernorm
from worldsim.model.dit import Block, DiT


class FusedAdaLNBlock(Block):
    """`Block` with its two modulated LayerNorms fused (the state dict and the math are unchanged)."""

    def forward(self, x: torch.Tensor, mod: torch.Tensor, attend: Callable) -> torch.Tensor:
        B, F, N, D = x.shape
        m = (mod + self.table).unsqueeze(2)  # [B,F,1,6,D]
        shift1, scale1, gate1, shift2, scale2, gate2 = m.unbind(3)  # each [B,F,1,D]
        h = adaln_layernorm(x, shift1, scale1, self.norm1.eps)
        x = x + gate1 * self.attn(h.view(B, F * N, D), attend).view(B, F, N, D)
        h = adaln_layernorm(x, shift2, scale2, self.norm2.eps)
        return x + gate2 * self.mlp(h)


def fuse_adaln(dit: DiT) -> int:
    """Use the fused adaLN + LayerNorm kernel in every block of `dit` (in place); return how many."""
    n = 0
    for blk in dit.blocks:
        if type(blk) is Block:
            blk.__class__ = FusedAdaLNBlock
            n += 1
    return n


def unfuse(dit: DiT) -> None:
    """Back to the plain PyTorch blocks."""
    for blk in dit.blocks:
        if type(blk) is FusedAdaLNBlock:
            blk.__class__ = Block
