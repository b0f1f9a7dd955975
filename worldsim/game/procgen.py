"""Seeded procedural levels: rectangular rooms, each with its own wall kind, joined by corridors.

Deterministic for a seed on every platform (a splitmix64 stream, not Python's `random`), and every
open cell is reachable: room i is carved to room i+1 by an L-shaped corridor.
"""

from __future__ import annotations

from worldsim.game.level import Level, _splitmix64
from worldsim.game.textures import SPRITE_KINDS, WALL_KINDS


class _Stream:
    """A tiny deterministic integer stream: splitmix64 over a counter."""

    def __init__(self, seed: int) -> None:
        self.state = _splitmix64(int(seed) ^ 0x5EED)

    def below(self, n: int) -> int:
        self.state = (self.state + 1) & 0xFFFFFFFFFFFFFFFF
        return _splitmix64(self.state) % n

    def between(self, lo: int, hi: int) -> int:
        """An int in [lo, hi] inclusive."""
        return lo + self.below(hi - lo + 1)


def procedural_level(seed: int, size: int = 24) -> Level:
    """A `size` x `size` level of rooms and corridors, the same for the same seed everywhere."""
    if not 12 <= size <= 256:
        raise ValueError(f"procedural level size must be in 12..256 cells, got {size}")
    rng = _Stream(seed)
    corridor_kind = 1 + rng.below(len(WALL_KINDS))
    grid = [[corridor_kind] * size for _ in range(size)]
    # rooms: (x0, y0, x1, y1) interior, inclusive; rings (one cell around) stay inside the border
    rooms: list[tuple[int, int, int, int]] = []
    kinds: list[int] = []
    max_side = max(4, size // 4)
    for _ in range(8 * size):
        if len(rooms) >= max(2, size * size // 60):
            break
        w, h = rng.between(3, max_side), rng.between(3, max_side)
        x0, y0 = rng.between(2, size - 2 - w), rng.between(2, size - 2 - h)
        x1, y1 = x0 + w - 1, y0 + h - 1
        # keep a two-cell gap (each room's own wall ring) between rooms
        if any(x0 <= b[2] + 2 and b[0] <= x1 + 2 and y0 <= b[3] + 2 and b[1] <= y1 + 2 for b in rooms):
            continue
        rooms.append((x0, y0, x1, y1))
        previous = kinds[-1] if kinds else corridor_kind
        kinds.append(1 + (previous + rng.below(len(WALL_KINDS) - 1)) % len(WALL_KINDS))
    # each room's ring takes the room's wall kind (rooms are two cells apart: rings never clash)
    for (x0, y0, x1, y1), kind in zip(rooms, kinds):
        for y in range(y0 - 1, y1 + 2):
            for x in range(x0 - 1, x1 + 2):
                grid[y][x] = kind
    for x0, y0, x1, y1 in rooms:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                grid[y][x] = 0
    # corridors: from each room's centre to the next one's, horizontal then vertical or the reverse
    centres = [((x0 + x1) // 2, (y0 + y1) // 2) for x0, y0, x1, y1 in rooms]
    for (ax, ay), (bx, by) in zip(centres, centres[1:]):
        corner = (bx, ay) if rng.below(2) else (ax, by)
        for (sx, sy), (ex, ey) in (((ax, ay), corner), (corner, (bx, by))):
            for y in range(min(sy, ey), max(sy, ey) + 1):
                for x in range(min(sx, ex), max(sx, ex) + 1):
                    grid[y][x] = 0
    sprites, spawns = [], []
    for x0, y0, x1, y1 in rooms:
        spawns.append(((x0 + x1) // 2 + 0.5, (y0 + y1) // 2 + 0.5, 90.0 * rng.below(4)))
        for _ in range(1 + ((x1 - x0) * (y1 - y0) >= 16)):
            x, y = rng.between(x0, x1), rng.between(y0, y1)
            if (x + 0.5, y + 0.5) not in {(s[0], s[1]) for s in spawns + sprites}:
                sprites.append((x + 0.5, y + 0.5, rng.below(len(SPRITE_KINDS))))
    return Level(grid=grid, sprites=sprites, spawns=spawns, name=f"procedural-{seed}-{size}")
