"""Per-frame convolutional autoencoder: frames <-> a small latent grid the DiT works on (docs/design.md §4).

No temporal compression: one frame in, one latent grid out. The encoder may be heavy (it runs on
training data and on reset); the decoder runs every generated frame, so it is kept light.
`encode` returns latents normalised per channel (stored mean/std buffers) so the DiT sees unit variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.model.bounds import Spec, check_fields

# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------

MAX_IMAGE_SIDE = 4096  # pixels
_SIZES: Spec = {
    "latent_channels": (int, 1, 1024), "downsample": (int, 2, 64), "base_channels": (int, 1, 4096),
    "max_channels": (int, 1, 4096), "encoder_blocks": (int, 0, 16), "decoder_channels": (int, 1, 4096),
    "decoder_min_channels": (int, 1, 4096), "decoder_blocks": (int, 0, 16),
}  # fmt: skip


@dataclass
class AutoencoderConfig:
    image_size: int | tuple[int, int] = 64  # frame height/width in pixels (int = square)
    latent_channels: int = 16  # C of the latent grid
    downsample: int = 8  # spatial factor: 8 for 64x64 (8x8 grid), 16 for large frames
    base_channels: int = 32  # encoder width at full resolution, doubled per level (capped)
    max_channels: int = 256  # cap on encoder width
    encoder_blocks: int = 1  # residual blocks per encoder level
    decoder_channels: int = 128  # decoder width at the latent resolution, halved per level
    decoder_min_channels: int = 32  # floor on decoder width
    decoder_blocks: int = 1  # residual blocks per decoder level (only the lower half of the levels)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        s = self.image_size
        sides = (s,) if isinstance(s, int) else s if isinstance(s, tuple) and len(s) == 2 else None
        if sides is None or not all(
            isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= MAX_IMAGE_SIDE for v in sides
        ):
            raise ValueError(
                f"AutoencoderConfig.image_size must be an int or [height, width] of ints in "
                f"[8, {MAX_IMAGE_SIDE}], got {s!r}"
            )
        check_fields(self, _SIZES, "AutoencoderConfig")
        h, w = self.hw
        if self.downsample < 2 or self.downsample & (self.downsample - 1):
            raise ValueError(
                f"AutoencoderConfig.downsample must be a power of two >= 2, got {self.downsample}"
            )
        if h % self.downsample or w % self.downsample:
            raise ValueError(
                f"AutoencoderConfig.image_size {h}x{w} must be divisible by downsample={self.downsample}; "
                f"pick a size that is a multiple of {self.downsample}"
            )
        for name in (
            "latent_channels",
            "base_channels",
            "max_channels",
            "decoder_channels",
            "decoder_min_channels",
        ):
            v = getattr(self, name)
            if v < 1:
                raise ValueError(f"AutoencoderConfig.{name} must be >= 1, got {v}")
        for name in ("base_channels", "max_channels", "decoder_channels", "decoder_min_channels"):
            v = getattr(self, name)
            if v % 8:
                raise ValueError(
                    f"AutoencoderConfig.{name} must be a multiple of 8 (GroupNorm groups), got {v}"
                )
        if self.encoder_blocks < 0 or self.decoder_blocks < 0:
            raise ValueError("AutoencoderConfig.encoder_blocks/decoder_blocks must be >= 0")

    @property
    def hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def levels(self) -> int:
        return int(math.log2(self.downsample))

    @property
    def latent_hw(self) -> tuple[int, int]:
        h, w = self.hw
        return h // self.downsample, w // self.downsample


AE_PRESETS: dict[str, AutoencoderConfig] = {
    "test": AutoencoderConfig(
        image_size=32, latent_channels=4, downsample=8, base_channels=8, max_channels=32,
        decoder_channels=32, decoder_min_channels=8,
    ),
    "tiny": AutoencoderConfig(image_size=64, latent_channels=16, downsample=8, max_channels=96),
    "base": AutoencoderConfig(
        image_size=128, latent_channels=32, downsample=16, base_channels=32, max_channels=192,
        encoder_blocks=2, decoder_channels=192,
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4) if c >= 4 else 1, c)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chans = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.levels + 1)]
        self.conv_in = nn.Conv2d(3, chans[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(cfg.levels):
            layers += [ResBlock(chans[i], chans[i]) for _ in range(cfg.encoder_blocks)]
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
        layers += [ResBlock(chans[-1], chans[-1]) for _ in range(max(1, cfg.encoder_blocks))]
        self.body = nn.Sequential(*layers)
        self.norm_out = _norm(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], cfg.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))


class Decoder(nn.Module):
    """Nearest 2x upsampling + 3x3 conv per level; residual blocks only at the cheap low resolutions."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        L = cfg.levels
        chans = [max(cfg.decoder_channels // 2**i, cfg.decoder_min_channels) for i in range(L + 1)]
        self.conv_in = nn.Conv2d(cfg.latent_channels, chans[0], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(chans[0], chans[0]) for _ in range(cfg.decoder_blocks)]
        for i in range(L):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
            ]
            if i + 1 < (L + 1) // 2 + 1:  # residual blocks at the lower half of the resolutions only
                layers += [ResBlock(chans[i + 1], chans[i + 1]) for _ in range(cfg.decoder_blocks)]
            else:
                layers.append(nn.SiLU())
        self.body = nn.Sequential(*layers)
        self.norm_out = _norm(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))


# ---------------------------------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------------------------------


class Autoencoder(nn.Module):
    """`encode(x [B,3,H,W] in [-1,1]) -> z [B,C,h,w]` (unit-variance per channel); `decode(z) -> x`."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # Per-channel latent statistics, set by `set_latent_stats` after training (identity until then).
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                m.weight.data.mul_(0.7)
                nn.init.zeros_(m.bias)
        # Residual branches start as identity so the deep stack trains from step 0.
        for m in self.modules():
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.conv2.weight)

    # raw latents (what the autoencoder itself trains on) ----------------------------------------
    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # [B,3,H,W] -> [B,C,h,w]

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # [B,C,h,w] -> [B,3,H,W]

    # normalised latents (what the DiT sees) -------------------------------------------------------
    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.to(z.dtype)[:, None, None], self.latent_std.to(z.dtype)[:, None, None]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode_raw(x)
        mean, std = self._stats(z)
        return (z - mean) / std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return self.decode_raw(z * std + mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def set_latent_stats(self, x: torch.Tensor, batch: int = 64) -> None:
        """Measure per-channel mean/std of raw latents over frames `x [B,3,H,W]` and store them."""
        zs = torch.cat([self.encode_raw(x[i : i + batch]).float() for i in range(0, x.shape[0], batch)])
        self.latent_mean.copy_(zs.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(zs.std(dim=(0, 2, 3)).clamp_min(1e-4))


# ---------------------------------------------------------------------------------------------------
# uint8 frames <-> model range
# ---------------------------------------------------------------------------------------------------


def frames_to_model(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `[..., H, W, 3]` -> float `[..., 3, H, W]` in [-1, 1]."""
    return frames.movedim(-1, -3).float().div(127.5).sub(1.0)


def model_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float `[..., 3, H, W]` in [-1, 1] -> uint8 `[..., H, W, 3]` (clamped, rounded)."""
    return x.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
