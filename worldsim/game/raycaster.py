"""Batched first-person raycaster in torch: the same tensor program on CPU and GPU.

No Python loop runs over games, rays or pixels. Walls: every grid-line crossing of every ray is
tested at once (`max_cells` crossings per axis, both axes in one `[2, B, W, M]` program) and the
first solid one wins. Pixels: each pixel computes one index into a uint8 palette of pre-lit colours
(every texel of every wall kind at `FOG_LEVELS` fog levels and both side shades, the floor and
ceiling per row, the sprites), then a single gather produces the frame. Sprites are depth-tested
against the wall z-buffer; per screen column the nearest `sprite_layers` are composited.

Vocabulary: B games, H x W pixels, M crossings per axis, S sprites, L sprite layers, T texels.
"""

from __future__ import annotations

import functools
import math

import torch

from worldsim.game.config import GameConfig
from worldsim.game.level import Level
from worldsim.game.textures import SPRITE_SCALE, TEXELS, sprite_textures, wall_textures

FOG_LEVELS = 64  # fog is quantised to this many brightness levels (steps of ~1/64: no visible bands)
FOG_STEPS = 32  # fog level lookup: distance buckets per cell
FOG_CELLS = 96  # ... up to this distance; beyond it the fog is total
_NEAR = 0.05  # sprites closer than this (cells) are clipped
_FAR = 1.0e4  # distance of a ray that hit nothing within view: pure fog


def heading_tables(units: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit view direction and unit right vector per integer heading, each `[units, 2]`.

    Computed in float64 and rounded once, so a heading always gives bit-identical vectors.
    """
    a = torch.arange(units, dtype=torch.float64) * (2 * math.pi / units)
    forward = torch.stack([a.cos(), a.sin()], -1)
    right = torch.stack([-a.sin(), a.cos()], -1)  # +90 degrees in a y-down map
    return forward.float().to(device), right.float().to(device)


def floor_nonneg(x: torch.Tensor) -> torch.Tensor:
    """floor() for x >= 0, by truncating cast.

    The per-frame path avoids float floor/trunc/round/exp: on torch 2.13 CPU they go parallel even
    on a few thousand elements, and the idle OpenMP worker then spins, which on a busy 2-core
    machine costs far more than the op (measured: ~8 ms for floor on 3072 floats with 2 threads,
    3 us with 1). min/max/topk along a dim are avoided too, as a precaution of the same kind.
    """
    return x.int().to(x.dtype)


def _lit(color: torch.Tensor, gain: torch.Tensor, fog: torch.Tensor) -> torch.Tensor:
    """color [..., 3] at brightness gain [...] fading into fog [3] -> [..., 3]."""
    return color * gain[..., None] + fog * (1 - gain[..., None])


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=4)
def _lit_atlases(side_shade: float, fog_color: tuple[float, float, float]):
    """Pre-lit uint8 atlases (built once per lighting): walls [side 2][fog level][kind][v][u] -> [N, 3],
    sprites [fog level][kind][v: T + 2, a clear row above and below][u] -> [N, 3], sprite alpha [N] bool."""
    T, LV = TEXELS, FOG_LEVELS
    fog = torch.tensor(fog_color)
    gains = torch.arange(LV, dtype=torch.float32) / (LV - 1)
    side = torch.tensor([1.0, side_shade])
    walls = wall_textures()  # [kinds, T, T, 3]
    wall_pal = _lit(walls[None, None], (side[:, None] * gains)[:, :, None, None, None], fog)
    sprites = sprite_textures()  # [kinds, T, T, 4]
    pad = torch.zeros(sprites.shape[0], 1, T, 4)
    sprites = torch.cat([pad, sprites, pad], dim=1)  # [kinds, T + 2, T, 4]
    sprite_pal = _lit(sprites[None, ..., :3], gains[:, None, None, None], fog)
    alpha = (sprites[..., 3] > 0.5).flatten()
    return _to_u8(wall_pal).reshape(-1, 3), _to_u8(sprite_pal).reshape(-1, 3), alpha


class Raycaster:
    """Renders `[B, H, W, 3]` uint8 views of one level from poses (pos `[B, 2]`, heading `[B]`)."""

    def __init__(self, level: Level, height: int, width: int, cfg: GameConfig, device: torch.device) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"frame size must be at least 8x8 pixels, got {height}x{width}")
        self.level, self.height, self.width, self.cfg, self.device = level, height, width, cfg, device
        T, LV = TEXELS, FOG_LEVELS
        f32 = dict(dtype=torch.float32, device=device)
        fog = torch.tensor(cfg.fog_color, dtype=torch.float64)
        self.forward, self.right = heading_tables(cfg.heading_units, device)

        # ---- level: flat grid; cell (x, y) is grid[y * Gx + x] ------------------------------
        self.gx, self.gy = level.width, level.height
        self.grid = torch.tensor(level.grid, dtype=torch.long, device=device).flatten()
        # per axis (x crossings, y crossings): flat-index strides of the along / across cell
        self.stride_p = torch.tensor([1.0, self.gx], **f32).view(2, 1, 1, 1)
        self.stride_q = torch.tensor([self.gx, 1.0], **f32).view(2, 1, 1, 1)
        self.k = torch.arange(1, cfg.max_cells + 1, **f32)  # [M] crossing numbers

        # ---- per-size constants ---------------------------------------------------------------
        focal = (width / 2) / math.tan(math.radians(cfg.fov_degrees) / 2)  # pixels per unit at depth 1
        cols = torch.arange(width, dtype=torch.float64) + 0.5
        rows = torch.arange(height, dtype=torch.float64) + 0.5
        self.col_tan = ((cols - width / 2) / focal).float().to(device)  # [W] lateral / depth
        pf = (rows - height / 2) / focal  # [H] drop below the eye / depth
        pf = torch.where(pf.abs() < 1e-9, torch.full_like(pf, 1e-9), pf)
        self.row_pf = pf.float().to(device)  # [H]
        self.eye = cfg.wall_height / 2  # the eye is half a wall above the floor
        self.wall_rows = (pf * (T / cfg.wall_height)).float().to(device)  # [H] texel rows per cell of depth
        row_dist = self.eye / pf.abs()  # [H] distance of the floor / ceiling each row sees
        self.row_dist = row_dist.float().to(device)
        # fog level by distance bucket: a lookup, not exp() per frame (see floor_nonneg)
        buckets = torch.arange(FOG_STEPS * FOG_CELLS + 1, dtype=torch.float64) / FOG_STEPS
        fog_levels = (torch.exp(-cfg.fog_density * buckets) * (FOG_LEVELS - 1) + 0.5).long()
        self.fog_table = fog_levels.to(device)  # [FOG_STEPS * FOG_CELLS + 1]

        # ---- the palette: every colour a pixel can take, uint8 [N, 3] -------------------------
        wall_pal, sprite_pal, alpha = _lit_atlases(cfg.side_shade, tuple(cfg.fog_color))
        kinds = wall_pal.shape[0] // (2 * LV * T * T)
        self.wall_kind_size = T * T
        self.wall_level_size = kinds * T * T
        self.sprite_alpha = alpha.to(device)  # [kinds * (T + 2) * T]
        self.sprite_level_size = alpha.numel()
        # floor and ceiling: [row][checker parity]
        row_gain = torch.exp(-cfg.fog_density * row_dist)  # [H]
        below = (pf > 0)[:, None]
        base = torch.where(below, torch.tensor(cfg.floor_color), torch.tensor(cfg.ceiling_color))  # [H, 3]
        contrast = torch.where(below, cfg.floor_contrast, cfg.floor_contrast / 2)  # [H, 1]
        checker = torch.stack([base * (1 - contrast), base * (1 + contrast)], 1)  # [H, 2, 3]
        row_pal = _to_u8(_lit(checker, row_gain[:, None].expand(-1, 2), fog)).reshape(-1, 3)
        self.sprite_offset = wall_pal.shape[0]
        self.row_offset = self.sprite_offset + sprite_pal.shape[0]
        self.palette = torch.cat([wall_pal, sprite_pal, row_pal]).to(device)  # [N, 3] uint8
        self.row_base = (self.row_offset + 2 * torch.arange(height, dtype=torch.int32)).to(
            device
        )  # [H] palette row entries

        # ---- sprites: positions [S, 2], atlas offsets [S], world scale [S] ---------------------
        s = level.sprites
        self.num_sprites = len(s)
        self.layers = min(cfg.sprite_layers, self.num_sprites)
        self.sprite_xy = torch.tensor([[x, y] for x, y, _ in s], **f32).reshape(-1, 2)
        self.sprite_base = torch.tensor([k * (T + 2) * T for _, _, k in s], dtype=torch.long, device=device)
        self.sprite_scale = torch.tensor([SPRITE_SCALE[k] for _, _, k in s], **f32)

    # -----------------------------------------------------------------------------------------
    def cells(self, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
        """Wall kind at float cell coordinates, clamped into the grid; same shape as cx."""
        ix = cx.clamp(0, self.gx - 1).long()
        iy = cy.clamp(0, self.gy - 1).long()
        return self.grid.take(iy * self.gx + ix)

    def _walls(self, pos: torch.Tensor, ray: torch.Tensor):
        """First wall along each ray. pos [B, 2], ray [2, B, W] (x, y components, depth-normalised).

        Returns distance [B, W] (perpendicular, _FAR if none), kind [B, W], side [B, W] (1 = a
        horizontal grid line), the position along the wall face [B, W] and whether to mirror the
        texture column [B, W].
        """
        p = pos.t()[:, :, None]  # [2, B, 1] coordinate along each axis
        q = p.flip(0)  # [2, B, 1] the other coordinate
        dp = torch.where(ray.abs() < 1e-9, 1e-9, ray)  # [2, B, W]
        dq = dp.flip(0)
        step = torch.ones_like(dp).copysign(dp)  # [2, B, W]
        base = floor_nonneg(p)  # [2, B, 1]
        # crossing k is the line base + k (forward) or base + 1 - k (backward): the cell it enters
        # is base + k or base - k along the axis
        line = torch.addcmul((base + 0.5)[..., None], step[..., None], self.k - 0.5)  # [2, B, W, M]
        t = (line - p[..., None]) / dp[..., None]  # [2, B, W, M] distance to each crossing
        q_at = torch.addcmul(q[..., None], t, dq[..., None])  # [2, B, W, M]
        cell_p = torch.addcmul(base[..., None], step[..., None], self.k)
        # int() truncates, which equals floor for every crossing up to the first hit (all inside the
        # grid, >= 0); see floor_nonneg
        flat = (cell_p * self.stride_p).add_(q_at.int() * self.stride_q)
        # Rays leave the grid only after hitting its solid border, so crossings that index outside
        # it come after the first hit and never matter: clamping the flat index is enough.
        flat = flat.clamp_(0, self.grid.numel() - 1).int()
        kind = self.grid.index_select(0, flat.reshape(-1)).view(flat.shape)  # [2, B, W, M]
        first = (kind > 0).to(torch.uint8).argmax(-1, keepdim=True)  # [2, B, W, 1]
        kind = kind.gather(-1, first).squeeze(-1)  # [2, B, W]
        dist = torch.where(kind > 0, t.gather(-1, first).squeeze(-1), _FAR)
        q_hit = q_at.gather(-1, first).squeeze(-1)
        side = (dist[1] < dist[0]).long()  # [B, W] 1 = the y crossing is nearer (ties: x)
        dist = torch.minimum(dist[0], dist[1])
        side_ = side[None]
        kind = kind.gather(0, side_).squeeze(0)
        along = q_hit.gather(0, side_).squeeze(0)
        # keep textures unmirrored: flip u when the ray runs +x on an x face or -y on a y face
        flip = torch.where(side.bool(), ray[1] < 0, ray[0] > 0)
        return dist, kind, side, along, flip

    def _fog_level(self, dist: torch.Tensor) -> torch.Tensor:
        """Fog level (0 = all fog .. FOG_LEVELS - 1 = none) of distances >= 0, same shape, long."""
        bucket = (dist * FOG_STEPS + 0.5).clamp_(max=FOG_STEPS * FOG_CELLS).int()
        return self.fog_table.index_select(0, bucket.reshape(-1)).view(bucket.shape)

    @torch.no_grad()
    def render(self, pos: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
        """pos `[B, 2]` float (cells), heading `[B]` long (heading units) -> frames `[B, H, W, 3]` uint8."""
        T = TEXELS
        fwd, right = self.forward[heading], self.right[heading]  # [B, 2] each
        ray = torch.addcmul(fwd.t()[..., None], right.t()[..., None], self.col_tan)  # [2, B, W]

        # ---- walls: one palette base index per column, one texel row per pixel ----
        dist, kind, side, along, flip = self._walls(pos, ray)
        tex_u = (along.frac() * T).long().clamp_(0, T - 1)  # along >= 0 wherever a wall is drawn
        tex_u = torch.where(flip, T - 1 - tex_u, tex_u)
        level = self._fog_level(dist)  # [B, W]
        texel = (kind - 1).clamp_(min=0) * self.wall_kind_size + tex_u
        column = ((side * FOG_LEVELS + level) * self.wall_level_size + texel).int()  # [B, W]
        v = self.wall_rows[:, None] * dist[:, None, :]  # [B, H, W] texel rows from the wall's middle
        on_wall = v.abs() < T / 2
        wall = (v + T / 2).int().mul_(T).add_(column[:, None, :])  # garbage off the wall: masked next

        # ---- floor and ceiling: a faint per-cell checker that moves with the player ----
        px, py = pos[:, 0, None, None], pos[:, 1, None, None]  # [B, 1, 1]
        fx = torch.addcmul(px, self.row_dist[:, None], ray[0][:, None, :])  # [B, H, W] world x seen
        fy = torch.addcmul(py, self.row_dist[:, None], ray[1][:, None, :])
        # int() truncates: equal to floor wherever the floor is visible (inside the level, >= 0)
        index = fx.int().add_(fy.int()).bitwise_and_(1).add_(self.row_base[:, None])
        index = torch.where(on_wall, wall, index)  # [B, H, W] palette index

        # ---- sprites: per column, the `layers` nearest visible ones, drawn far to near ----
        if self.layers:
            index = self._sprites(index, pos, fwd, right, dist)
        return self.palette.index_select(0, index.reshape(-1)).view(*index.shape, 3)  # [B, H, W, 3] uint8

    def _sprites(self, index, pos, fwd, right, dist) -> torch.Tensor:
        T = TEXELS
        rel = self.sprite_xy[None] - pos[:, None, :]  # [B, S, 2]
        depth = rel[..., 0] * fwd[:, 0, None] + rel[..., 1] * fwd[:, 1, None]  # [B, S]
        lateral = rel[..., 0] * right[:, 0, None] + rel[..., 1] * right[:, 1, None]
        scale = self.sprite_scale[:, None]  # [S, 1]
        u = (self.col_tan * depth[..., None] - lateral[..., None]) / scale + 0.5  # [B, S, W]
        d = depth[..., None].expand_as(u)
        visible = (u >= 0) & (u < 1) & (d > _NEAR) & (d < dist[:, None, :])
        key = torch.where(visible, d, math.inf)  # [B, S, W]
        nearest = []
        for _ in range(self.layers):  # the L nearest per column
            i = key.argmin(1, keepdim=True)  # [B, 1, W]
            nearest.append(i)
            key = key.scatter(1, i, math.inf)
        near = torch.cat(nearest, 1)  # [B, L, W] nearest first
        near_depth = torch.where(visible.gather(1, near), d.gather(1, near), math.inf)
        seen = near_depth < math.inf
        near_depth = torch.where(seen, near_depth, 1.0)
        su = (u.gather(1, near) * T).long().clamp_(0, T - 1)  # [B, L, W]
        sc = self.sprite_scale[near]  # [B, L, W]
        # texel row (+1 for the transparent pad row) = a * drop + b; unseen columns -> row 0 (clear)
        a = torch.where(seen, near_depth * T / sc, 0.0)
        b = torch.where(seen, (sc - self.eye) * T / sc + 1, 0.0)
        texel = (self.sprite_base[near] + su).int()  # [B, L, W]
        level = self._fog_level(near_depth)
        shade = (self.sprite_offset + level * self.sprite_level_size).int()  # [B, L, W]
        for layer in reversed(range(self.layers)):  # far to near; a fixed, small count
            rows = torch.addcmul(
                b[:, layer, None, :], self.row_pf[:, None], a[:, layer, None, :]
            )  # [B, H, W]
            atlas = rows.clamp_(0, T + 1).int().mul_(T).add_(texel[:, layer, None, :])
            opaque = self.sprite_alpha.index_select(0, atlas.reshape(-1)).view(atlas.shape)
            index = torch.where(opaque, atlas.add_(shade[:, layer, None, :]), index)
        return index
