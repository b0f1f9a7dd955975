"""What a pygame window shows now (the dummy video driver keeps a real surface): for the render tests."""

import numpy as np
import pygame


def displayed_frame(height: int, width: int) -> np.ndarray | None:
    """The open window's picture as an `[height, width, 3]` frame (its integer scale undone; every
    scaled-up block checked to be one colour), or None when no window is open."""
    surface = pygame.display.get_surface() if pygame.display.get_init() else None
    if surface is None:
        return None
    shown = pygame.surfarray.array3d(surface).transpose(1, 0, 2)  # surfarray is [W, H, 3]
    scale = shown.shape[0] // height
    assert shown.shape == (height * scale, width * scale, 3), "the window is the frame scaled up"
    blocks = shown.reshape(height, scale, width, scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all(), "each pixel is a crisp block"
    return blocks[:, 0, :, 0]
