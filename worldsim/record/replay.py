"""Play a recording back in a pygame window at its recorded fps (space pauses, Esc quits)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from worldsim.record.export import auto_scale, upscale
from worldsim.record.reader import RecordingReader

log = logging.getLogger(__name__)


def replay_window(path: str | Path, *, scale: int | None = None, speed: float = 1.0) -> int:
    """Show the frames in order, paced at fps * speed; returns the number of frames shown.

    Space pauses/resumes, Esc or closing the window quits; the window closes after the last frame.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    reader = RecordingReader(path)
    h, w = reader.header["height"], reader.header["width"]
    names = reader.header["key_names"]
    scale = scale or auto_scale(h, w, target=512)
    fps = reader.header["fps"] * speed
    pygame.display.init()  # not pygame.init(): a replay has no sound to open
    pygame.font.init()
    try:
        screen = pygame.display.set_mode((w * scale, h * scale + 20))
        pygame.display.set_caption(f"worldsim replay: {Path(path).name} ({reader.header['world']})")
        font = pygame.font.Font(None, 18)
        clock = pygame.time.Clock()
        records = iter(reader)
        shown, paused, running = 0, False, True
        while running:
            for event in pygame.event.get():
                if event.type == pygame.QUIT or (
                    event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
                ):
                    running = False
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_SPACE:
                    paused = not paused
            if not running:
                break
            if not paused:
                rec = next(records, None)
                if rec is None:
                    break
                surface = pygame.surfarray.make_surface(upscale(rec.frame, scale).swapaxes(0, 1))
                screen.fill((0, 0, 0))
                screen.blit(surface, (0, 0))
                held = " ".join(n for n, k in zip(names, rec.keys) if k) or "-"
                hud = f"frame {rec.frame_number}  keys {held}"
                screen.blit(font.render(hud, True, (230, 230, 230)), (4, h * scale + 3))
                shown += 1
            else:
                screen.blit(font.render("paused", True, (255, 200, 0)), (w * scale - 50, h * scale + 3))
            pygame.display.flip()
            clock.tick(fps)
        reader.close()
    finally:
        pygame.quit()
    if reader.truncated:
        log.warning("%s is truncated; every complete record was shown", path)
    return shown
