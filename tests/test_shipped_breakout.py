"""The shipped Breakout world model (checkpoints/breakout.md) plays Breakout's keys: started from its own
episode-start latents, holding LEFT carries the paddle to the left wall and RIGHT to the right one.

The paddle is Breakout's red bar in the bottom rows, ~4 pixels wide at 64x64. After 12 frames held it is
at x 5.5 holding LEFT and 59 holding RIGHT from start latents 0, 3 and 7 (measured on 2 CPU cores; NOOP
and FIRE leave it at 15-42), so a model that ignored its keys (the first Breakout teacher gave identical
frames for every key) fails by far; the assertion asks for a 20-pixel gap."""

import torch

from worldsim.neural import NeuralWorld

FRAMES = 12


def paddle_x(frame: torch.Tensor) -> float | None:
    band = frame[-8:-2, 3:-3].float()  # the paddle's rows, inside the walls (their red-tipped feet)
    red = (band[..., 0] > 120) & (band[..., 1] < 100)
    cols = red.any(0).nonzero().flatten()
    return None if len(cols) == 0 else 3 + cols.float().mean().item()


def test_holding_left_or_right_moves_the_paddle_that_way():
    world = NeuralWorld.from_checkpoint("breakout", device="cpu", batch_size=2)
    assert list(world.key_names) == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    world.reset([0, 0])
    keys = torch.zeros(2, 4, dtype=torch.bool)
    keys[0, world.key_names.index("LEFT")] = True
    keys[1, world.key_names.index("RIGHT")] = True
    with torch.no_grad():
        for _ in range(FRAMES):
            frames = world.step(keys)
    left, right = paddle_x(frames[0]), paddle_x(frames[1])
    assert left is not None and right is not None, "no paddle in the bottom rows"
    assert left < 32 < right and right - left > 20, (left, right)
