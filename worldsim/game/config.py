"""How the game moves and looks: one dataclass, shared by the physics and the raycaster."""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRAME_SIDE = 1024  # pixels: the raycaster holds [2, B, W, M] and [B, H, W] tensors per frame

# What each key name does, as (forward, strafe_right, turn_right) amounts: the key set is data.
# A world's key_names may be any subset/superset of these; unknown names do nothing in the game.
KEY_MOTION: dict[str, tuple[float, float, float]] = {
    "forward": (1.0, 0.0, 0.0),
    "back": (-1.0, 0.0, 0.0),
    "strafe_left": (0.0, -1.0, 0.0),
    "strafe_right": (0.0, 1.0, 0.0),
    "turn_left": (0.0, 0.0, -1.0),
    "turn_right": (0.0, 0.0, 1.0),
}


@dataclass(frozen=True)
class GameConfig:
    """Physics (cells per tick, integer heading units) and rendering (field of view, fog, layers)."""

    heading_units: int = 72  # one full turn; 72 -> 5 degrees per unit
    turn_units: int = 1  # heading units turned per tick while a turn key is held
    move_speed: float = 0.08  # cells per tick (diagonal moves are normalised to the same speed)
    radius: float = 0.25  # the player is a square of half-size `radius` for collisions
    fov_degrees: float = 66.0  # horizontal field of view
    wall_height: float = 1.3  # in cells; the eye is at half this height
    max_cells: int = 24  # view distance in grid-line crossings per axis; beyond is fog
    fog_density: float = 0.14  # per cell: a wall at distance d keeps exp(-density * d) of its colour
    fog_color: tuple[float, float, float] = (0.03, 0.03, 0.045)
    side_shade: float = 0.72  # walls facing north/south are darker, which reads as lighting
    floor_color: tuple[float, float, float] = (0.36, 0.33, 0.30)
    ceiling_color: tuple[float, float, float] = (0.22, 0.23, 0.27)
    floor_contrast: float = 0.07  # checker contrast of the floor: a subtle motion cue, no more
    sprite_layers: int = 2  # sprites composited per screen column (nearest first)

    def __post_init__(self) -> None:
        if self.heading_units < 4 or self.heading_units % 4:
            raise ValueError(f"heading_units must be a positive multiple of 4, got {self.heading_units}")
        if not 0 < self.turn_units < self.heading_units:
            raise ValueError(f"turn_units must be in 1..{self.heading_units - 1}, got {self.turn_units}")
        if not 0 < self.radius < 0.5:
            raise ValueError(
                f"radius must be in (0, 0.5) cells so the player fits a corridor, got {self.radius}"
            )
        if not 0 < self.move_speed < 1 - 2 * self.radius:
            raise ValueError(
                f"move_speed must be in (0, 1 - 2 * radius = {1 - 2 * self.radius}) cells per tick so no move "
                f"can skip a wall, got {self.move_speed}"
            )
        if not 10 <= self.fov_degrees <= 150:
            raise ValueError(f"fov_degrees must be in 10..150, got {self.fov_degrees}")
        if not 0.25 <= self.wall_height <= 4:
            raise ValueError(f"wall_height must be in 0.25..4 cells, got {self.wall_height}")
        if self.max_cells < 1:
            raise ValueError(f"max_cells must be >= 1, got {self.max_cells}")
        if self.sprite_layers < 1:
            raise ValueError(f"sprite_layers must be >= 1, got {self.sprite_layers}")
