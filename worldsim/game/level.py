"""Levels as data: a grid of wall kinds, landmark sprites and spawn points, plus the default level.

Coordinates are in cells: x across the grid's columns, y down its rows; cell (x, y) covers
[x, x+1) x [y, y+1). Headings in degrees: 0 faces +x (east), 90 faces +y (south, down the map).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from worldsim.game.textures import SPRITE_KINDS, WALL_KINDS

# ASCII legend for `Level.from_ascii`: walls are digits 1..len(WALL_KINDS) (1 = WALL_KINDS[0]).
OPEN_CHARS = ". "
SPRITE_CHARS = {"P": "pillar", "L": "lamp", "G": "plant", "B": "barrel", "C": "crystal", "T": "tree"}
SPAWN_CHARS = {">": 0.0, "v": 90.0, "<": 180.0, "^": 270.0}


def _splitmix64(x: int) -> int:
    """A well-mixed 64-bit hash of an int: seeds 0, 1, 2 ... give unrelated values."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Level:
    """A grid level. `grid[y][x]` is 0 for open floor or k >= 1 for a wall of kind WALL_KINDS[k-1].

    sprites: (x, y, kind) landmarks, kind indexing SPRITE_KINDS, drawn as billboards (not solid).
    spawns: (x, y, heading_degrees) start poses; `spawn(seed, ...)` picks one from a seed.
    """

    grid: tuple[tuple[int, ...], ...]
    sprites: tuple[tuple[float, float, int], ...] = ()
    spawns: tuple[tuple[float, float, float], ...] = ()
    name: str = "custom"

    def __post_init__(self) -> None:
        grid = tuple(tuple(int(c) for c in row) for row in self.grid)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "sprites", tuple((float(x), float(y), int(k)) for x, y, k in self.sprites))
        object.__setattr__(self, "spawns", tuple((float(x), float(y), float(h)) for x, y, h in self.spawns))
        if len(grid) < 3 or len(grid[0]) < 3:
            raise ValueError(f"level {self.name!r}: grid must be at least 3x3, got {len(grid)} rows")
        for y, row in enumerate(grid):
            if len(row) != len(grid[0]):
                raise ValueError(
                    f"level {self.name!r}: grid row {y} has {len(row)} cells, row 0 has {len(grid[0])}; "
                    "make every row the same width"
                )
            for x, c in enumerate(row):
                if not 0 <= c <= len(WALL_KINDS):
                    raise ValueError(
                        f"level {self.name!r}: cell ({x}, {y}) has wall kind {c}; use 0 (open) or "
                        f"1..{len(WALL_KINDS)} ({', '.join(WALL_KINDS)})"
                    )
        h, w = self.height, self.width
        for x in range(w):
            for y in range(h):
                if (x in (0, w - 1) or y in (0, h - 1)) and grid[y][x] == 0:
                    raise ValueError(
                        f"level {self.name!r}: border cell ({x}, {y}) is open; close the border with walls"
                    )
        for x, y, k in self.sprites:
            if not 0 <= k < len(SPRITE_KINDS):
                raise ValueError(
                    f"level {self.name!r}: sprite kind {k} at ({x}, {y}); use 0..{len(SPRITE_KINDS) - 1}"
                )
            if not self.is_open(x, y):
                raise ValueError(
                    f"level {self.name!r}: sprite at ({x}, {y}) is inside a wall; move it to an open cell"
                )
        if not self.spawns:
            raise ValueError(f"level {self.name!r}: no spawn points; add at least one (x, y, heading)")
        for x, y, _ in self.spawns:
            if not self.is_open(x, y):
                raise ValueError(
                    f"level {self.name!r}: spawn at ({x}, {y}) is inside a wall; move it to an open cell"
                )

    @property
    def width(self) -> int:
        return len(self.grid[0])

    @property
    def height(self) -> int:
        return len(self.grid)

    def is_open(self, x: float, y: float) -> bool:
        ix, iy = int(x // 1), int(y // 1)
        return 0 <= ix < self.width and 0 <= iy < self.height and self.grid[iy][ix] == 0

    def open_cells(self) -> list[tuple[int, int]]:
        return [(x, y) for y in range(self.height) for x in range(self.width) if self.grid[y][x] == 0]

    def reachable_from(self, x: int, y: int) -> set[tuple[int, int]]:
        """Open cells reachable from cell (x, y) through 4-neighbour steps."""
        seen = {(x, y)} if self.grid[y][x] == 0 else set()
        todo = deque(seen)
        while todo:
            cx, cy = todo.popleft()
            for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                if (nx, ny) not in seen and self.grid[ny][nx] == 0:
                    seen.add((nx, ny))
                    todo.append((nx, ny))
        return seen

    def is_connected(self) -> bool:
        cells = self.open_cells()
        return bool(cells) and len(self.reachable_from(*cells[0])) == len(cells)

    def spawn(self, seed: int, heading_units: int) -> tuple[float, float, int]:
        """The start pose for `seed`: one of `spawns` and its heading turned by up to +-45 degrees.

        Returns (x, y, heading) with heading an integer in [0, heading_units).
        """
        h = _splitmix64(int(seed))
        x, y, deg = self.spawns[h % len(self.spawns)]
        jitter_range = heading_units // 8
        jitter = (h >> 32) % (2 * jitter_range + 1) - jitter_range
        return x, y, (round(deg / 360.0 * heading_units) + jitter) % heading_units

    @classmethod
    def from_ascii(cls, rows: Sequence[str], *, name: str = "custom") -> Level:
        """Build a level from a map: '.' open, digits wall kinds, SPRITE_CHARS, SPAWN_CHARS (> v < ^)."""
        grid, sprites, spawns = [], [], []
        for y, row in enumerate(rows):
            cells = []
            for x, ch in enumerate(row):
                if ch.isdigit():
                    cells.append(int(ch))
                    continue
                cells.append(0)
                if ch in SPRITE_CHARS:
                    sprites.append((x + 0.5, y + 0.5, SPRITE_KINDS.index(SPRITE_CHARS[ch])))
                elif ch in SPAWN_CHARS:
                    spawns.append((x + 0.5, y + 0.5, SPAWN_CHARS[ch]))
                elif ch not in OPEN_CHARS:
                    raise ValueError(
                        f"level {name!r}: unknown map character {ch!r} at ({x}, {y}); use '.', digits 1-"
                        f"{len(WALL_KINDS)}, sprites {''.join(SPRITE_CHARS)} or spawns {''.join(SPAWN_CHARS)}"
                    )
            grid.append(cells)
        return cls(grid=grid, sprites=sprites, spawns=spawns, name=name)

    def to_ascii(self) -> list[str]:
        """The map as text (walls as digits, sprites and spawns as their characters)."""
        rows = [["." if c == 0 else str(c) for c in row] for row in self.grid]
        sprite_char = {SPRITE_KINDS.index(v): k for k, v in SPRITE_CHARS.items()}
        for x, y, k in self.sprites:
            rows[int(y)][int(x)] = sprite_char[k]
        spawn_char = {v: k for k, v in SPAWN_CHARS.items()}
        for x, y, deg in self.spawns:
            rows[int(y)][int(x)] = spawn_char.get(deg % 360, "S")
        return ["".join(r) for r in rows]


# The default level: four themed rooms (brick hall, stone crypt, wood library, metal lab) on a
# loop of tiled corridors around a moss garden. Each room has its own wall kind, shape and
# landmarks so that a model can tell where it is.
DEFAULT_MAP = (
    "111111111666666222222222",
    "1BB.....16666662.......2",
    "1.......16666662.P...P.2",
    "1......................2",
    "1...1....>.........v...2",
    "1.......166..662.......2",
    "1.>.....166..662.P...P.2",
    "1......L166..662.......2",
    "111..111155..552222..222",
    "666..6665......5666..666",
    "666..6665T..G..5666..666",
    "666.................<666",
    "666.........^........666",
    "666..6665G..T..5666..666",
    "666..6665......5666..666",
    "333..333355..554444..444",
    "3...L...366..664C......4",
    "3.3...3.366..664..4444.4",
    "3.3.^.3.366..664.....4.4",
    "3.3...3...........C..4.4",
    "3.3...3................4",
    "3.3...3.36666664..>....4",
    "3...L..G36666664......C4",
    "333333333666666444444444",
)


def default_level() -> Level:
    """The fixed, hand-designed 24x24 level every default game and model uses."""
    return Level.from_ascii(DEFAULT_MAP, name="default")
