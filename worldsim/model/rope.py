"""Rotary position embedding on (x, y) and on the frame index (docs/design.md §4, §6).

The head dim is split into pairs for x, y and time. The time pairs rotate with frequencies
2*pi*k/window (k integer, 1 <= k <= window/2): every temporal rotation is periodic in the window, so a
frame is rotated by `frame % window`, the score between two tokens depends only on their frame distance
modulo the window, and the distances a query can see (`window` consecutive frames) are all distinct
modulo the window. Positions stay in [0, window) forever: frame 10^6 is rotated exactly as frame
10^6 % window, keys enter the KV cache fully rotated once, and nothing is re-rotated at read. (This is
the bounded alternative to re-rotating cached keys at every read: docs/design.md §6.)
"""

from __future__ import annotations

import math

import torch


def split_dims(head_dim: int) -> tuple[int, int, int]:
    """(x dims, y dims, time dims) of a head: 3/8 each for x and y, the rest (>= 1/4) for time."""
    dxy = 2 * ((head_dim * 3 // 8) // 2)
    return dxy, dxy, head_dim - 2 * dxy


def _freqs(dims: int, theta: float, device: torch.device | str | None) -> torch.Tensor:
    # [dims/2] inverse frequencies, highest first
    return 1.0 / theta ** (torch.arange(0, dims, 2, device=device, dtype=torch.float64) / dims)


def spatial_angles(
    grid: tuple[int, int], head_dim: int, theta: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Angles `[N, Dh/2]` for the token grid (row-major), zero on the time pairs."""
    dx, dy, dt = split_dims(head_dim)
    gh, gw = grid
    ys, xs = torch.meshgrid(
        torch.arange(gh, device=device, dtype=torch.float64),
        torch.arange(gw, device=device, dtype=torch.float64),
        indexing="ij",
    )
    ax = xs.reshape(-1, 1) * _freqs(dx, theta, device)  # [N, dx/2]
    ay = ys.reshape(-1, 1) * _freqs(dy, theta, device)  # [N, dy/2]
    at = torch.zeros(gh * gw, dt // 2, device=device, dtype=torch.float64)
    return torch.cat([ax, ay, at], dim=-1).float()


def time_freqs(dims: int, window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[dims/2]` frequencies 2*pi*k/window, k spread geometrically over the integers 1..window/2."""
    n, top = dims // 2, max(1, window // 2)
    k = top ** (torch.arange(n, device=device, dtype=torch.float64) / max(n - 1, 1))
    return 2 * math.pi * k.round().clamp(1, top) / window


def temporal_angles(frames: torch.Tensor, head_dim: int, window: int) -> torch.Tensor:
    """Angles `[..., Dh/2]` for integer frame indices `frames [...]` (any size), zero on the x and y pairs.

    The frame is reduced modulo `window` first (exact: the rotation is periodic in the window), so
    angles are computed from small numbers whatever the frame index.
    """
    dx, dy, dt = split_dims(head_dim)
    f = time_freqs(dt, window, frames.device)
    at = (frames.remainder(window).double().unsqueeze(-1) * f).float()  # [..., dt/2]
    zeros = at.new_zeros(*at.shape[:-1], (dx + dy) // 2)
    return torch.cat([zeros, at], dim=-1)


def time_free_mask(head_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[Dh]` float: 1 on the x/y dims, 0 on the time dims (makes a key position-free in time)."""
    dx, dy, dt = split_dims(head_dim)
    m = torch.ones(head_dim, device=device)
    m[dx + dy :] = 0.0
    return m


def cos_sin(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of `x [..., L, Dh]` by angles given as `cos, sin [..., L, Dh/2]`."""
    xr = x.unflatten(-1, (-1, 2))  # [..., L, Dh/2, 2]
    x0, x1 = xr[..., 0], xr[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)
