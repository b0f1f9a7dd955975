"""The heads-up display over the play window: world, model (checkpoint name) and its denoising steps,
measured fps, frame number, input-to-frame latency and the held keys (the built-in game's by the
keyboard key that holds them, any other world's by name: a Discrete env's action, e.g. UPRIGHTFIRE),
drawn as white text on a translucent box; and the help overlay that lists the controls."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np
from worldsim.controllers.bindings import KEY_LABELS, controls
from worldsim.controllers.frames import ShownFrame, SourceInfo


def model_name(info: SourceInfo) -> str | None:
    """The checkpoint as the player named it: a shipped name stays, a path shows its file stem."""
    if not info.checkpoint:
        return None
    return PurePath(str(info.checkpoint)).stem


def blit_frame(screen, image: np.ndarray, scale: int) -> None:
    """Blit an `[H, W, 3]` uint8 frame scaled up `scale` times (nearest: crisp pixels) at the top left."""
    import pygame  # heavy, optional: only a window draws

    h, w = image.shape[:2]
    src = pygame.image.frombuffer(np.ascontiguousarray(image).tobytes(), (w, h), "RGB")
    screen.blit(pygame.transform.scale(src, (w * scale, h * scale)), (0, 0))


class Hud:
    """Tracks the frames shown (fps over the last 32, the newest latency) and renders the HUD lines."""

    def __init__(self) -> None:
        self._frame_times: deque[float] = deque(maxlen=32)
        self._latency_ms: float | None = None

    def note(self, frame: ShownFrame) -> None:
        """Count a frame the player was shown."""
        self._frame_times.append(frame.time)
        if frame.latency_ms is not None:
            self._latency_ms = frame.latency_ms

    def restart_fps(self) -> None:
        """Forget the frame times (after a pause, which would read as a slow stretch)."""
        self._frame_times.clear()

    def lines(self, frame: ShownFrame, info: SourceInfo, *, paused: bool = False) -> list[str]:
        ts = self._frame_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        lines = [f"{info.world}  {fps:4.1f} fps"]
        model = model_name(info)
        if model is not None:
            lines.append(f"model {model}")
        if info.steps is not None:
            lines.append(f"steps {info.steps}")
        lines.append(f"frame {frame.number}" + ("  PAUSED (. = one frame)" if paused else ""))
        lines.append(f"latency {self._latency_ms:4.0f} ms" if self._latency_ms is not None else "latency -")
        held = [KEY_LABELS.get(n, n) for n, k in zip(info.key_names, frame.keys) if k]
        lines.append("keys " + (" ".join(held) if held else "-"))
        lines.append("H / F1: help")
        return lines

    @staticmethod
    def help_lines(key_names: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """The help overlay: a title, then every control of a world with `key_names` (default: the
        built-in game's) as (keys, what they do)."""
        return [("controls", "")] + controls(key_names)

    @staticmethod
    def draw(screen, font, lines: list[str] | list[tuple[str, str]], pad: int = 4) -> None:
        """Blit `lines` (text, or (left, right) rows drawn as two aligned columns) on a translucent box
        in the top-left corner of the pygame surface `screen` (no display flip)."""
        import pygame

        white = (255, 255, 255)
        rows = [(line, "") if isinstance(line, str) else line for line in lines]
        texts = [(font.render(a, True, white), font.render(b, True, white) if b else None) for a, b in rows]
        paired = [a.get_width() for a, b in texts if b is not None]
        right_x = pad + (max(paired) + 2 * pad if paired else 0)  # where the second column starts
        box_w = max(right_x + b.get_width() if b else pad + a.get_width() for a, b in texts) + pad
        box_h = sum(a.get_height() for a, _ in texts) + 2 * pad
        box = pygame.Surface((box_w, box_h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        screen.blit(box, (0, 0))
        y = pad
        for a, b in texts:
            screen.blit(a, (pad, y))
            if b is not None:
                screen.blit(b, (right_x, y))
            y += a.get_height()
