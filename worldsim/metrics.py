"""Image fidelity metrics in torch, per item: PSNR (any range) and SSIM (uint8 frames, gaussian window),
shared by training (the autoencoder's held-out PSNR) and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """PSNR in dB per item of `[B, ...]` images whose range is `peak` wide (255: uint8 frames; 2: model
    images in [-1, 1]); identical images give 100 dB."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, 10 * torch.log10(peak**2 / mse.clamp_min(1e-12)), torch.full_like(mse, 100.0))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per item of uint8 frames `[B,H,W,3]` (Wang et al. 2004: gaussian 11x11, sigma 1.5, K1 .01, K2 .03).

    Computed per channel on [0, 1] values with 'valid' filtering, then averaged over pixels and channels.
    The window shrinks for frames smaller than it.
    """
    x = a.movedim(-1, 1).float() / 255.0  # [B,H,W,3] -> [B,3,H,W]
    y = b.movedim(-1, 1).float() / 255.0
    size = min(window, x.shape[-2], x.shape[-1])
    g = _gaussian_window(size, sigma, x.device)
    C = x.shape[1]
    kh = g.view(1, 1, size, 1).expand(C, 1, size, 1)  # separable: rows then columns, per channel

    kw = g.view(1, 1, 1, size).expand(C, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=C), kw, groups=C)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
