"""What the local and the remote Gymnasium envs share: the render modes, a pygame window for
`render_mode="human"`, and the one `info` dict both return from `reset` and `step`.

`info` has the same keys everywhere (`INFO_KEYS`):
- `frame`: the world's frame number (0 right after a reset, +1 per step);
- `seed`: the game seed of the episode;
- `world`: which world makes the frames (`game`, `neural`, as `--world` spells it);
- `blocked`: whether the last move ran into a wall, where the world knows it (the real game stepped in
  this process); None where it does not (a neural world, a remote server's world, a reset).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.controllers.hud import blit_frame

RENDER_MODES = ["human", "rgb_array"]
INFO_KEYS = ("frame", "seed", "world", "blocked")


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None, 'human' or 'rgb_array', got {render_mode!r}")


def env_info(frame: int, seed: int, world: str, blocked: bool | None = None) -> dict[str, Any]:
    """The `info` of `reset` and `step`, the same keys for every env (see the module docstring)."""
    return {"frame": int(frame), "seed": int(seed), "world": world, "blocked": blocked}


class HumanView:
    """A pygame window showing each frame an env makes, scaled up crisply, paced at `fps`."""

    def __init__(self, title: str, fps: float, min_side: int = 384) -> None:
        self.title, self.fps, self.min_side = title, float(fps), min_side
        self.screen = None
        self.scale = 1
        self._clock = None

    def show(self, image: np.ndarray) -> None:
        import pygame  # heavy, optional: only render_mode="human" opens a window

        h, w = image.shape[:2]
        if self.screen is None:
            pygame.display.init()
            self.scale = max(1, self.min_side // max(h, w))
            self.screen = pygame.display.set_mode((w * self.scale, h * self.scale))
            pygame.display.set_caption(self.title)
            self._clock = pygame.time.Clock()
        pygame.event.pump()  # keeps the window responsive; the env's actions come from its caller
        blit_frame(self.screen, image, self.scale)
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self.screen is not None:
            import pygame

            pygame.display.quit()
            self.screen = None
