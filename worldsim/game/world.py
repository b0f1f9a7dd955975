"""`GameWorld`: B games of the raycaster in one tensor program, behind the `World` interface.

One tick per `step`: turn by whole heading units, move (forward/strafe, diagonals normalised),
collide axis by axis with a square player of half-size `radius` (so it slides along walls), render.
State lives on the device: `pos [B, 2]` float cells, `heading [B]` long units, `blocked [B]` bool.
For training data, `random_poses` + `place` start games anywhere (`reset` keeps the level's seeded
spawn points) and `clearance` tells a scripted player how far the walls are.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import torch

from worldsim.game.config import KEY_MOTION, MAX_FRAME_SIDE, GameConfig
from worldsim.game.level import Level, default_level
from worldsim.game.procgen import procedural_level
from worldsim.game.raycaster import Raycaster
from worldsim.world import KEY_NAMES, World, keys_tensor, normalize_seeds

_EPS = 1e-4  # gap kept between the player's edge and a wall after a collision
SPAWN_TRIES = 16  # uniform tries per pose in its cell before the always-fitting inner box is used
# `clearance` rays: heading offsets in degrees (left, ahead, right), their reach and sample step in cells
PROBE_DEGREES = (-30.0, 0.0, 30.0)
PROBE_REACH = 2.0
PROBE_STEP = 0.125


def resolve_level(level: str | int | Level) -> Level:
    """ "default" -> the default level; an int -> `procedural_level(int)`; a Level passes through.

    A procedural level's name, "procedural-SEED-SIZE", rebuilds it too: the name a world describes
    (and a recording stores) is enough to re-run the game.
    """
    if isinstance(level, Level):
        return level
    if isinstance(level, bool):  # bool is an int; never a seed
        raise ValueError(f"level must be 'default', a Level or an int seed, got {level!r}")
    if isinstance(level, numbers.Integral):
        return procedural_level(int(level))
    if isinstance(level, str):
        if level == "default":
            return default_level()
        if level.lstrip("-").isdigit():
            return procedural_level(int(level))
        named = re.fullmatch(r"procedural-(-?\d+)-(\d+)", level)
        if named:
            return procedural_level(int(named[1]), int(named[2]))
    raise ValueError(f"level must be 'default', a Level or an int procedural seed, got {level!r}")


def _frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, numbers.Integral):
        hw = int(size), int(size)
    elif isinstance(size, Sequence) and len(size) == 2:
        hw = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if not all(1 <= s <= MAX_FRAME_SIDE for s in hw):
        raise ValueError(f"size {size!r}: each side must be 1 to {MAX_FRAME_SIDE} pixels")
    return hw


class GameWorld(World):
    """The real game: `GameWorld(batch_size=1, size=64 | (H, W), level="default" | Level | seed, device="cpu")`."""

    def __init__(
        self,
        batch_size: int = 1,
        size: int | tuple[int, int] = 64,
        level: str | int | Level = "default",
        device: str | torch.device = "cpu",
        *,
        config: GameConfig | None = None,
        key_names: Sequence[str] = KEY_NAMES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.height, self.width = _frame_size(size)
        self.level = resolve_level(level)
        self.device = torch.device(device)
        self.config = config or GameConfig()
        self.key_names = tuple(key_names)
        unknown = [k for k in self.key_names if k not in KEY_MOTION]
        if unknown:
            raise ValueError(f"key names {unknown} have no game motion; use names from {list(KEY_MOTION)}")
        self.renderer = Raycaster(self.level, self.height, self.width, self.config, self.device)
        # [K, 3] what each key adds to (forward, strafe_right, turn_right)
        self.key_motion = torch.tensor([KEY_MOTION[k] for k in self.key_names], device=self.device)
        self.pos = torch.zeros(self.batch_size, 2, device=self.device)
        self.heading = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.blocked = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        hu = self.config.heading_units
        self._open_cells = torch.tensor(self.level.open_cells(), dtype=torch.float32, device=self.device)
        self._corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], device=self.device)
        self._probe_units = torch.tensor([round(d / 360 * hu) for d in PROBE_DEGREES], device=self.device)
        self._probe_dist = (
            torch.arange(1, round(PROBE_REACH / PROBE_STEP) + 1, device=self.device) * PROBE_STEP
        )
        self.reset()

    @property
    def name(self) -> str:
        return "game"

    def describe(self) -> dict:
        return {**super().describe(), "level": self.level.name}

    # ---- World interface ----------------------------------------------------------------------
    def reset(
        self, seeds: Sequence[int] | int | None = None, *, slots: Sequence[int] | None = None
    ) -> torch.Tensor:
        idx = self._slots(slots)
        n = self.batch_size if idx is None else len(idx)
        poses = [self.level.spawn(s, self.config.heading_units) for s in normalize_seeds(seeds, n)]
        pos = torch.tensor([[x, y] for x, y, _ in poses], dtype=torch.float32, device=self.device)
        heading = torch.tensor([h for _, _, h in poses], dtype=torch.long, device=self.device)
        self._write(idx, pos, heading, torch.zeros(n, dtype=torch.bool, device=self.device))
        return self.renderer.render(pos, heading)

    @torch.no_grad()
    def step(self, keys: torch.Tensor, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        idx = self._slots(slots)
        n = self.batch_size if idx is None else len(idx)
        keys = keys_tensor(keys, n, self.num_keys, self.device)
        pos, heading = (self.pos, self.heading) if idx is None else (self.pos[idx], self.heading[idx])
        pos, heading, blocked = self._tick(pos, heading, keys)
        self._write(idx, pos, heading, blocked)
        return self.renderer.render(pos, heading)

    def render(self, slots: Sequence[int] | None = None) -> torch.Tensor:
        """The current view of every game (or of `slots`) without advancing time."""
        idx = self._slots(slots)
        if idx is None:
            return self.renderer.render(self.pos, self.heading)
        return self.renderer.render(self.pos[idx], self.heading[idx])

    # ---- training data: poses anywhere, walls ahead --------------------------------------------
    def random_poses(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n poses uniform over the level's open cells and all headings, drawn on the device from `generator`.

        Returns (pos [n, 2] float cells, heading [n] long units). A cell is drawn uniformly, then a point
        uniform over the part of it where the player's square touches no wall (as the collisions see
        walls), then a heading uniform over `heading_units`. Put games there with `place`.
        """
        dev = self.device
        cells = self._open_cells[
            torch.randint(0, len(self._open_cells), (n,), generator=generator, device=dev)
        ]
        r = self.config.radius + _EPS
        u = torch.rand(n, SPAWN_TRIES + 1, 2, generator=generator, device=dev)
        u[:, -1] = r + u[:, -1] * (1 - 2 * r)  # the last try lies in the cell's inner box: it always fits
        xy = cells[:, None] + u  # [n, tries, 2]
        corners = (xy[:, :, None] + self._corners * r).long()  # [n, tries, 4, 2]; coordinates >= 0
        solid = self.renderer.grid[corners[..., 1] * self.renderer.gx + corners[..., 0]] > 0
        first = (~solid.any(-1)).int().argmax(1)  # the first try that fits, so uniform over the free part
        pos = xy[torch.arange(n, device=dev), first]
        heading = torch.randint(0, self.config.heading_units, (n,), generator=generator, device=dev)
        return pos, heading

    def place(
        self, pos: torch.Tensor, heading: torch.Tensor, *, slots: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Put every game (or `slots`) at pos [n, 2] cells, heading [n] units; returns their frames [n, H, W, 3].

        The poses must leave the player clear of walls (`random_poses` gives such poses).
        """
        idx = self._slots(slots)
        n = self.batch_size if idx is None else len(idx)
        pos = torch.as_tensor(pos, dtype=torch.float32, device=self.device)
        heading = torch.as_tensor(heading, device=self.device)
        if pos.shape != (n, 2) or heading.shape != (n,) or heading.is_floating_point():
            raise ValueError(
                f"place needs pos [{n}, 2] and integer heading [{n}], got {tuple(pos.shape)} and "
                f"{tuple(heading.shape)} {heading.dtype}"
            )
        heading = heading.long() % self.config.heading_units
        self._write(idx, pos, heading, torch.zeros(n, dtype=torch.bool, device=self.device))
        return self.renderer.render(pos, heading)

    def clearance(self) -> torch.Tensor:
        """[B, 3] cells from each player's centre to the first wall along its heading turned by
        PROBE_DEGREES (left, ahead, right), sampled every PROBE_STEP and capped at PROBE_REACH."""
        ray = self.renderer.forward[(self.heading[:, None] + self._probe_units) % self.config.heading_units]
        pts = self.pos[:, None, None] + ray[:, :, None] * self._probe_dist[:, None]  # [B, 3, S, 2]
        free = self.renderer.cells(pts[..., 0], pts[..., 1]) == 0  # [B, 3, S]
        return free.int().cumprod(-1).sum(-1) * PROBE_STEP  # open samples before the first wall

    # ---- physics ------------------------------------------------------------------------------
    def _tick(self, pos: torch.Tensor, heading: torch.Tensor, keys: torch.Tensor):
        cfg = self.config
        # [B, K, 1] * [K, 3] summed over K: forward, strafe_right, turn_right (exact small sums)
        motion = (keys[:, :, None] * self.key_motion).sum(1)
        turn = motion[:, 2].long() * cfg.turn_units  # exact small integers: no rounding needed
        heading = (heading + turn) % cfg.heading_units
        fwd, right = self.renderer.forward[heading], self.renderer.right[heading]  # [B, 2]
        move = fwd * motion[:, 0:1] + right * motion[:, 1:2]  # [B, 2]
        move = move * (move.norm(dim=1, keepdim=True).clamp(min=1.0).reciprocal() * cfg.move_speed)
        x, y = pos[:, 0], pos[:, 1]
        x, hit_x = self._collide(x + move[:, 0], y, move[:, 0], across=False)
        y, hit_y = self._collide(y + move[:, 1], x, move[:, 1], across=True)
        return torch.stack([x, y], dim=1), heading, hit_x | hit_y

    def _collide(self, p: torch.Tensor, q: torch.Tensor, dp: torch.Tensor, across: bool):
        """Move along one axis to p; if the player's leading edge enters a wall cell, stop at it.

        p, q, dp: [B] new coordinate along the axis, the other coordinate, the move along the axis.
        """
        r, gx = self.config.radius, self.renderer.gx
        # cells the leading edge spans; int() truncation is floor here: the player is inside the
        # walled grid, every coordinate >= 0 (see raycaster.floor_nonneg)
        lead = torch.where(dp > 0, p + r, p - r).int()  # [B]
        span = torch.stack([q - r, q + r], dim=-1).int()  # [B, 2]
        flat = lead[:, None] * gx + span if across else span * gx + lead[:, None]
        flat = flat.clamp_(0, self.renderer.grid.numel() - 1)
        solid = self.renderer.grid.index_select(0, flat.view(-1)).view(flat.shape) > 0  # [B, 2]
        hit = (solid[:, 0] | solid[:, 1]) & (dp != 0)
        edge = lead.to(p.dtype)
        stop = torch.where(dp > 0, edge - (r + _EPS), edge + (1 + r + _EPS))
        return torch.where(hit, stop, p), hit

    # ---- helpers ------------------------------------------------------------------------------
    def _slots(self, slots: Sequence[int] | None) -> torch.Tensor | None:
        if slots is None:
            return None
        s = [int(i) for i in slots]
        bad = [i for i in s if not 0 <= i < self.batch_size]
        if bad or len(set(s)) != len(s) or not s:
            raise ValueError(
                f"slots must be distinct game indices in 0..{self.batch_size - 1}, got {list(slots)}"
            )
        return torch.tensor(s, dtype=torch.long, device=self.device)

    def _write(
        self, idx: torch.Tensor | None, pos: torch.Tensor, heading: torch.Tensor, blocked: torch.Tensor
    ) -> None:
        if idx is None:
            self.pos.copy_(pos)
            self.heading.copy_(heading)
            self.blocked.copy_(blocked)
        else:
            self.pos[idx] = pos
            self.heading[idx] = heading
            self.blocked[idx] = blocked
