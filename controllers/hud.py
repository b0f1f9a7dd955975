"""The heads-up display over the play window: world, measured fps, frame number, input-to-frame
latency, denoising steps and the held keys, drawn as white text on a translucent box."""

from __future__ import annotations

from collections import deque

from worldsim.controllers.bindings import KEY_LABELS
from worldsim.controllers.frames import ShownFrame, SourceInfo


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

    def lines(self, frame: ShownFrame, info: SourceInfo) -> list[str]:
        ts = self._frame_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        lines = [f"{info.world}  {fps:4.1f} fps", f"frame {frame.number}"]
        lines.append(f"latency {self._latency_ms:4.0f} ms" if self._latency_ms is not None else "latency -")
        if info.steps is not None:
            lines.append(f"steps {info.steps}")
        held = [KEY_LABELS.get(n, n) for n, k in zip(info.key_names, frame.keys) if k]
        lines.append("keys " + (" ".join(held) if held else "-"))
        return lines

    @staticmethod
    def draw(screen, font, lines: list[str], pad: int = 4) -> None:
        """Blit `lines` in the top-left corner of the pygame surface `screen` (no display flip)."""
        import pygame

        texts = [font.render(t, True, (255, 255, 255)) for t in lines]
        box_w = max(t.get_width() for t in texts) + 2 * pad
        box_h = sum(t.get_height() for t in texts) + 2 * pad
        box = pygame.Surface((box_w, box_h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        screen.blit(box, (0, 0))
        y = pad
        for t in texts:
            screen.blit(t, (pad, y))
            y += t.get_height()
