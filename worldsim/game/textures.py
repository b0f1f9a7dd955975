"""Procedural wall textures and sprite images, drawn deterministically in torch on the CPU.

Every texture is built from integer hashes (no RNG state), always on the CPU, then moved to the
render device: the same pixels on every machine. Detail is deliberately moderate (bricks 8 texels
tall, planks 8 wide): a 64x64 frame shows a close wall at ~2 pixels per texel, and finer patterns
would only alias.
"""

from __future__ import annotations

import math

import torch

TEXELS = 32  # texture side in texels, walls and sprites alike

# Wall kinds, in grid order: kind k (k >= 1) of a level grid is WALL_KINDS[k - 1].
WALL_KINDS: tuple[str, ...] = ("brick", "stone", "wood", "metal", "moss", "tile")
# Sprite kinds: a level sprite (x, y, kind) draws SPRITE_KINDS[kind].
SPRITE_KINDS: tuple[str, ...] = ("pillar", "lamp", "plant", "barrel", "crystal", "tree")
# World size of each sprite kind (cells): its square image spans scale x scale, standing on the floor.
SPRITE_SCALE: tuple[float, ...] = (1.3, 1.1, 0.75, 0.6, 0.8, 1.3)


# ---------------------------------------------------------------------------------------------
# noise helpers
# ---------------------------------------------------------------------------------------------


def _hash(x: torch.Tensor, y: torch.Tensor, salt: int) -> torch.Tensor:
    """Integer hash of (x, y, salt) -> float in [0, 1). Kept under 2**63 at every product."""
    m = 0xFFFFFFFF
    h = (x.long() * 374761393 + y.long() * 668265263 + salt * 2246822519) & m
    h = ((h ^ (h >> 13)) * 1274126177) & m
    h = (h ^ (h >> 16)) & m
    return (h & 0xFFFF).float() / 65536.0


def _grid(n: int = TEXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Texel coordinates v (row) and u (column), each [T, T] long."""
    r = torch.arange(n)
    return r[:, None].expand(n, n), r[None, :].expand(n, n)


def _smooth_noise(cells: int, salt: int, n: int = TEXELS) -> torch.Tensor:
    """Tileable value noise [T, T] in [0, 1): bilinear over a `cells` x `cells` lattice."""
    v, u = _grid(n)
    fv, fu = v.float() * cells / n, u.float() * cells / n
    iv, iu = fv.floor().long(), fu.floor().long()
    tv, tu = fv - iv, fu - iu
    tv, tu = tv * tv * (3 - 2 * tv), tu * tu * (3 - 2 * tu)

    def lattice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _hash(a % cells, b % cells, salt)

    top = lattice(iv, iu) * (1 - tu) + lattice(iv, iu + 1) * tu
    bottom = lattice(iv + 1, iu) * (1 - tu) + lattice(iv + 1, iu + 1) * tu
    return top * (1 - tv) + bottom * tv


def _rgb(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b])


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Blend colours a, b [3] by t [T, T] -> [T, T, 3]."""
    return a * (1 - t[..., None]) + b * t[..., None]


# ---------------------------------------------------------------------------------------------
# walls: each returns [T, T, 3] float in [0, 1], indexed [v (down), u (across)]
# ---------------------------------------------------------------------------------------------


def _blocks(v: torch.Tensor, u: torch.Tensor, bw: int, bh: int, stagger: bool):
    """Block ids and in-block coordinates for a (optionally staggered) block pattern."""
    row = v // bh
    shift = (row % 2) * (bw // 2) if stagger else torch.zeros_like(row)
    uu = (u + shift) % TEXELS
    return row, uu // bw, v % bh, uu % bw


def brick() -> torch.Tensor:
    v, u = _grid()
    row, col, bv, bu = _blocks(v, u, 16, 8, stagger=True)
    tone = _hash(row, col, 11)
    base = _mix(_rgb(0.55, 0.22, 0.16), _rgb(0.70, 0.33, 0.22), tone)
    base = base * (0.9 + 0.2 * _smooth_noise(8, 12))[..., None]
    mortar = (bv == 0) | (bu == 0)
    return torch.where(mortar[..., None], _rgb(0.62, 0.60, 0.55), base)


def stone() -> torch.Tensor:
    v, u = _grid()
    row, col, bv, bu = _blocks(v, u, 16, 16, stagger=True)
    tone = _hash(row, col, 21)
    base = _mix(_rgb(0.42, 0.42, 0.44), _rgb(0.58, 0.57, 0.55), tone)
    base = base * (0.8 + 0.3 * _smooth_noise(8, 22))[..., None]
    # bevel: light top/left edge, dark bottom/right edge of each block
    light = (bv == 1) | (bu == 1)
    dark = (bv == 15) | (bu == 15)
    base = torch.where(light[..., None], base * 1.2, base)
    base = torch.where(dark[..., None], base * 0.65, base)
    seam = (bv == 0) | (bu == 0)
    return torch.where(seam[..., None], _rgb(0.18, 0.18, 0.2), base).clamp(0, 1)


def wood() -> torch.Tensor:
    v, u = _grid()
    plank = u // 8
    phase = _hash(plank, plank * 7, 31) * 2 * math.pi
    grain = 0.5 + 0.5 * torch.sin(v.float() * 2 * math.pi / 16 + phase + (u % 8).float() * 0.3)
    tone = _hash(plank, torch.zeros_like(plank), 32)
    base = _mix(_rgb(0.45, 0.28, 0.13), _rgb(0.60, 0.40, 0.20), 0.6 * tone + 0.4 * grain)
    gap = (u % 8) == 0
    return torch.where(gap[..., None], _rgb(0.2, 0.12, 0.06), base)


def metal() -> torch.Tensor:
    v, u = _grid()
    bv, bu = v % 16, u % 16
    base = _rgb(0.40, 0.46, 0.52) * (0.92 + 0.12 * _smooth_noise(4, 41))[..., None]
    base = torch.where(((bv <= 1) | (bu <= 1))[..., None], base * 1.3, base)
    base = torch.where(((bv >= 14) | (bu >= 14))[..., None], base * 0.6, base)
    rivet = ((bv - 3).abs() <= 1) & (((bu - 3).abs() <= 1) | ((bu - 12).abs() <= 1))
    rivet |= ((bv - 12).abs() <= 1) & (((bu - 3).abs() <= 1) | ((bu - 12).abs() <= 1))
    return torch.where(rivet[..., None], _rgb(0.75, 0.78, 0.80), base).clamp(0, 1)


def moss() -> torch.Tensor:
    v, u = _grid()
    row, col, bv, bu = _blocks(v, u, 16, 11, stagger=True)
    tone = _hash(row, col, 51)
    stone_c = _mix(_rgb(0.36, 0.38, 0.33), _rgb(0.48, 0.50, 0.44), tone)
    growth = (_smooth_noise(4, 52) * 0.7 + _smooth_noise(8, 53) * 0.3 - 0.45).clamp(0, 1) * 2.5
    base = _mix(stone_c, _rgb(0.22, 0.50, 0.16), growth.clamp(0, 1))
    seam = (bv == 0) | (bu == 0)
    return torch.where(seam[..., None], _rgb(0.14, 0.18, 0.12), base)


def tile() -> torch.Tensor:
    v, u = _grid()
    bv, bu = v % 16, u % 16
    tone = _hash(v // 16, u // 16, 61)
    base = _mix(_rgb(0.20, 0.52, 0.55), _rgb(0.30, 0.62, 0.62), tone)
    glaze = 1.0 + 0.15 * ((bv < 6) & (bu < 6)).float()
    base = base * glaze[..., None]
    grout = (bv == 0) | (bu == 0)
    return torch.where(grout[..., None], _rgb(0.80, 0.80, 0.74), base).clamp(0, 1)


_WALL_BUILDERS = {"brick": brick, "stone": stone, "wood": wood, "metal": metal, "moss": moss, "tile": tile}


def wall_textures() -> torch.Tensor:
    """All wall kinds, `[len(WALL_KINDS), T, T, 3]` float in [0, 1], on the CPU."""
    return torch.stack([_WALL_BUILDERS[name]() for name in WALL_KINDS]).float()


# ---------------------------------------------------------------------------------------------
# sprites: each returns [T, T, 4] RGBA float, alpha 0 or 1, the object standing on the bottom row
# ---------------------------------------------------------------------------------------------


def _sprite_canvas() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v, u = _grid()
    # texel centres in [-1, 1] across (x) and [0, 1] up from the floor (h)
    x = (u.float() + 0.5) / TEXELS * 2 - 1
    h = 1 - (v.float() + 0.5) / TEXELS
    return x, h, torch.zeros(TEXELS, TEXELS, 4)


def _paint(img: torch.Tensor, mask: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    rgba = torch.cat(
        [color.expand(TEXELS, TEXELS, 3) if color.ndim == 1 else color, torch.ones(TEXELS, TEXELS, 1)], -1
    )
    return torch.where(mask[..., None], rgba, img)


def _cylinder_shade(x: torch.Tensor, half_width: float) -> torch.Tensor:
    """Lambert-ish shading across a vertical cylinder of the given half width, [T, T] in [0.45, 1]."""
    s = (x / half_width).clamp(-1, 1)
    return 0.45 + 0.55 * (1 - s * s).sqrt() * (1 - 0.3 * s)


def pillar() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    shaft = (x.abs() < 0.32) & (h < 0.9)
    caps = (x.abs() < 0.48) & ((h < 0.08) | ((h > 0.88) & (h < 0.97)))
    color = _rgb(0.86, 0.84, 0.78) * _cylinder_shade(x, 0.48)[..., None]
    fluting = ((x * 12).floor() % 2 == 0) & shaft & ~caps
    color = torch.where(fluting[..., None], color * 0.88, color)
    return _paint(img, shaft | caps, color)


def lamp() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    pole = (x.abs() < 0.06) & (h < 0.72)
    foot = (x.abs() < 0.28) & (h < 0.05)
    globe = (x * x + ((h - 0.8) / 1.0) ** 2) < 0.15**2 * 2
    img = _paint(img, pole | foot, _rgb(0.16, 0.16, 0.18))
    glow = _rgb(1.0, 0.92, 0.55) * (1.0 - 0.25 * ((x * x + (h - 0.83) ** 2).sqrt() / 0.21))[..., None]
    return _paint(img, globe, glow.clamp(0, 1))


def plant() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    pot = (h < 0.3) & (x.abs() < 0.3 - 0.25 * (0.3 - h))
    leaves = torch.zeros_like(pot)
    for cx, ch, r in ((0.0, 0.62, 0.3), (-0.3, 0.5, 0.22), (0.3, 0.52, 0.22), (0.0, 0.85, 0.18)):
        leaves |= ((x - cx) ** 2 + (h - ch) ** 2) < r * r
    leaves &= h > 0.28
    leaf_c = _mix(_rgb(0.14, 0.42, 0.12), _rgb(0.30, 0.62, 0.20), _smooth_noise(8, 71))
    img = _paint(img, leaves, leaf_c)
    return _paint(img, pot, _rgb(0.62, 0.32, 0.18) * _cylinder_shade(x, 0.3)[..., None])


def barrel() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    body = (x.abs() < 0.62 - 0.12 * (2 * h - 0.95) ** 2) & (h < 0.95)
    color = _rgb(0.62, 0.38, 0.16) * _cylinder_shade(x, 0.62)[..., None]
    bands = ((h - 0.2).abs() < 0.04) | ((h - 0.75).abs() < 0.04)
    color = torch.where(bands[..., None], _rgb(0.35, 0.36, 0.38) * _cylinder_shade(x, 0.62)[..., None], color)
    staves = ((x * 5).floor() % 2 == 0) & ~bands
    color = torch.where(staves[..., None], color * 0.9, color)
    return _paint(img, body, color)


def crystal() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    base = (x.abs() < 0.35) & (h < 0.15)
    gem = (x.abs() / 0.42 + (h - 0.6).abs() / 0.42) < 1.0
    facet = torch.where(x < 0, 1.0, 0.7) * torch.where(h > 0.6, 1.0, 0.8)
    img = _paint(img, base, _rgb(0.3, 0.3, 0.34))
    return _paint(img, gem & (h > 0.15), _rgb(0.75, 0.30, 0.85) * facet[..., None])


def tree() -> torch.Tensor:
    x, h, img = _sprite_canvas()
    trunk = (x.abs() < 0.1 + 0.05 * (0.5 - h).clamp(min=0)) & (h < 0.55)
    crown = torch.zeros_like(trunk)
    for cx, ch, r in ((0.0, 0.72, 0.34), (-0.36, 0.58, 0.26), (0.36, 0.6, 0.26), (0.0, 0.92, 0.16)):
        crown |= ((x - cx) ** 2 + (h - ch) ** 2) < r * r
    img = _paint(img, trunk, _rgb(0.38, 0.24, 0.12) * _cylinder_shade(x, 0.15)[..., None])
    crown_c = _mix(_rgb(0.10, 0.35, 0.12), _rgb(0.24, 0.55, 0.18), _smooth_noise(8, 81))
    return _paint(img, crown, crown_c * (0.8 + 0.25 * h)[..., None])


_SPRITE_BUILDERS = {
    "pillar": pillar,
    "lamp": lamp,
    "plant": plant,
    "barrel": barrel,
    "crystal": crystal,
    "tree": tree,
}


def sprite_textures() -> torch.Tensor:
    """All sprite kinds, `[len(SPRITE_KINDS), T, T, 4]` float RGBA in [0, 1], on the CPU."""
    return torch.stack([_SPRITE_BUILDERS[name]() for name in SPRITE_KINDS]).float().clamp(0, 1)
