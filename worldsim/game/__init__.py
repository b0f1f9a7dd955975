"""The real game (docs/design.md §3): a batched torch raycaster over grid levels, behind `World`."""

from worldsim.game.config import KEY_MOTION, GameConfig
from worldsim.game.level import Level, default_level
from worldsim.game.procgen import procedural_level
from worldsim.game.textures import SPRITE_KINDS, WALL_KINDS
from worldsim.game.world import GameWorld, resolve_level

__all__ = [
    "KEY_MOTION",
    "SPRITE_KINDS",
    "WALL_KINDS",
    "GameConfig",
    "GameWorld",
    "Level",
    "default_level",
    "procedural_level",
    "resolve_level",
]
