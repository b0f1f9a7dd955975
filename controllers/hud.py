"""The heads-up display over the play window: world, model (checkpoint name) and its denoising steps,
measured fps, frame number, input-to-frame latency and the held keys, drawn as white text on a
translucent box; and the help overlay that lists the controls."""

from __future__ import annotations

from collections import deque
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

    def lines(self, frame: ShownFrame, info: SourceInfo, *, paused: bool = False) -> list[str]:
        ts = self._frame_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        lines = [f"{info.world}  {fps:4.1f} fps"]
        model = model_name(info)
        if model is not None:
            lines.append(f"model {model}")
        if info.steps is not None:
            lines.append(f"steps {info.steps}")
        lines.append(f"frame {frame.number}" + ("  PAUSED (. steps)" if paused else ""))
        lines.append(f"latency {self._latency_ms:4.0f} ms" if self._latency_ms is not None else "latency -")
        held = [KEY_LABELS.get(n, n) for n, k in zip(info.key_names, frame.keys) if k]
        lines.append("keys " + (" ".join(held) if held else "-"))
        lines.append("H / F1: help")
        return lines

    @staticmethod
    def help_lines() -> list[str]:
        """The help overlay: every control, one per line."""
        rows = controls()
        width = max(len(k) for k, _ in rows)
        return ["controls"] + [f"{k:<{width}}  {what}" for k, what in rows]

    @staticmethod
    def draw(screen, font, lines: list[str], pad: int = 4, *, at: tuple[int, int] = (0, 0)) -> None:
        """Blit `lines` on a translucent box at `at` on the pygame surface `screen` (no display flip)."""
        import pygame

        texts = [font.render(t, True, (255, 255, 255)) for t in lines]
        box_w = max(t.get_width() for t in texts) + 2 * pad
        box_h = sum(t.get_height() for t in texts) + 2 * pad
        box = pygame.Surface((box_w, box_h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        screen.blit(box, at)
        y = at[1] + pad
        for t in texts:
            screen.blit(t, (at[0] + pad, y))
            y += t.get_height()
