"""Build the World a server serves from a name: the real game or the neural world (lazily imported)."""

from __future__ import annotations

from collections.abc import Callable

from worldsim.errors import UserError
from worldsim.world import World

WorldFactory = Callable[[int], World]  # batch size (= max sessions) -> World


def world_factory(
    name: str = "game",
    *,
    checkpoint: str | None = None,
    size: int = 64,
    level: str | int = "default",
    device: str | None = None,
) -> WorldFactory:
    """A factory for `--world game|neural`; the heavy import happens when the server starts."""
    if name == "game":

        def make_game(batch: int) -> World:
            from worldsim.game import GameWorld

            return GameWorld(batch_size=batch, size=size, level=level, device=device or "cpu")

        return make_game
    if name == "neural":

        def make_neural(batch: int) -> World:
            from worldsim.engine.world import fastest_world  # one CUDA graph per frame on GPU, eager on CPU

            return fastest_world(checkpoint, device=device, batch_size=batch)

        return make_neural
    raise UserError(f"--world must be 'game' or 'neural', got {name!r}")
