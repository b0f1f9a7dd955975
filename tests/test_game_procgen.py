"""Procedural levels: deterministic for a seed, every open cell reachable, varied, valid."""

import pytest

from worldsim.game import GameWorld, Level, procedural_level


@pytest.mark.parametrize("size", [12, 24, 48])
def test_procedural_levels_are_deterministic_and_connected(size):
    levels = [procedural_level(seed, size) for seed in range(8)]
    for seed, level in enumerate(levels):
        assert level == procedural_level(seed, size)
        assert (level.width, level.height) == (size, size)
        assert level.is_connected(), f"seed {seed}: some open cells are unreachable"
        assert len(level.open_cells()) >= 9  # at least a 3x3 room, not a sealed block
        assert len(level.spawns) >= (1 if size < 16 else 3)  # one spawn per room
        for x, y, _ in level.spawns:
            assert level.is_open(x, y)
    assert len({lv.grid for lv in levels}) == len(levels)  # seeds give different levels


def test_procedural_rooms_use_several_wall_kinds_and_round_trip_as_ascii():
    level = procedural_level(3, 32)
    kinds = {c for row in level.grid for c in row if c}
    assert len(kinds) >= 3
    assert len(level.sprites) >= 2
    again = Level.from_ascii(level.to_ascii())
    assert again.grid == level.grid and len(again.sprites) == len(level.sprites)


def test_game_runs_on_a_procedural_level_from_an_int():
    w = GameWorld(batch_size=2, size=16, level=5)
    assert w.level == procedural_level(5)
    assert w.reset([0, 1]).shape == (2, 16, 16, 3)


def test_procedural_size_is_checked():
    with pytest.raises(ValueError, match="size"):
        procedural_level(0, 6)
