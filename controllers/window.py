"""The player's window: the pygame loop that samples keyboard, gamepad and bot keys, shows the newest
frame of a `FrameSource` scaled up crisply, and draws the HUD.

Playing a World in-process, through an embedded server, or against a remote server is the same loop:
the sources live in `worldsim.controllers.sources`, headless lockstep play in `worldsim.controllers.headless`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from worldsim.controllers.bindings import WINDOW_KEYS, controls
from worldsim.controllers.frames import FrameSource, ShownFrame
from worldsim.controllers.headless import PlaySummary, Recorder, bind_bot, record_frame
from worldsim.controllers.hud import Hud, blit_frame

from worldsim.actions import as_played
from worldsim.errors import UserError

log = logging.getLogger(__name__)


def auto_scale(height: int, width: int, screen: tuple[int, int] | None) -> int:
    """The largest integer scale whose window fits in ~85% of the screen (8 when the screen is unknown)."""
    if not screen or screen[0] <= 0 or screen[1] <= 0:
        return max(1, min(8, 768 // max(height, width)))
    return max(1, min(int(screen[0] * 0.85) // width, int(screen[1] * 0.85) // height))


class Window:
    """The pygame window: samples keyboard/gamepad (and bot) keys every UI frame (for a one-action-per-
    frame world, as the one-hot of the action they mean), shows the newest frame scaled up with
    nearest-neighbour, draws a HUD. Esc or closing the window quits, R resets, P pauses
    (the world makes no frames), `.` makes one frame while paused, H or F1 shows the controls (which
    are also logged when the window opens)."""

    def __init__(
        self,
        source: FrameSource,
        *,
        seed: int | None = None,
        scale: int | None = None,
        ui_fps: float | None = None,
        bot=None,
        recorder: Recorder | None = None,
        max_frames: int | None = None,
        gamepad: bool = True,
        title: str = "worldsim",
        on_frame: Callable[[ShownFrame], None] | None = None,
        screenshot: str | None = None,
    ) -> None:
        if scale is not None and scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        self.source = source
        self.seed = seed
        self.scale = scale
        self.ui_fps = ui_fps
        self.bot = bot
        self.recorder = recorder
        self.max_frames = max_frames
        self.use_gamepad = gamepad
        self.title = title
        self.on_frame = on_frame
        self.screenshot = screenshot  # saved when play ends (frame + HUD as last drawn)
        self.screen = None
        self.hud = Hud()
        self.paused = False
        self.show_help = False
        self._shown: ShownFrame | None = None  # the frame on screen: redrawn when an overlay changes

    def run(self) -> PlaySummary:
        import pygame  # heavy, optional: only a window needs it (its input modules import it too)
        from worldsim.controllers.gamepad import Gamepads
        from worldsim.controllers.keyboard import Keyboard

        try:
            pygame.display.init()
        except pygame.error as e:
            raise UserError(
                f"cannot open a window ({e}): run with a display, or play without one: --headless --frames N"
            ) from None
        pygame.font.init()
        try:
            frame = self.source.start(self.seed)
            t0 = last = frame.time
            info = self.source.info
            if self.scale is None:
                desktop = pygame.display.Info()
                self.scale = auto_scale(info.height, info.width, (desktop.current_w, desktop.current_h))
            self.screen = pygame.display.set_mode((info.width * self.scale, info.height * self.scale))
            pygame.display.set_caption(f"{self.title}: {info.world}")
            self._font = pygame.font.Font(None, max(16, min(28, self.screen.get_height() // 20)))
            bot = bind_bot(self.bot, info.key_names)
            keyboard = Keyboard(info.key_names)
            pads = Gamepads(info.key_names) if self.use_gamepad else None
            clock = pygame.time.Clock()
            ui_fps = self.ui_fps or max(60.0, info.fps)  # input sampled at least once per world frame
            latencies: list[float] = []
            shown, resets = 0, 0
            bot_keys = np.zeros(len(info.key_names), dtype=bool)
            action = {getattr(pygame, f"K_{n}"): a for a, names in WINDOW_KEYS.items() for n in names}
            log.info("controls: %s", "; ".join(f"{k} {what}" for k, what in controls(info.key_names)))
            running = True
            while running:
                for event in pygame.event.get():
                    act = action.get(event.key) if event.type == pygame.KEYDOWN else None
                    if event.type in (pygame.QUIT, pygame.WINDOWCLOSE) or act == "quit":
                        running = False
                    elif act == "reset":
                        self.source.reset(self.seed)
                        resets += 1
                    elif act in ("pause", "step", "help"):
                        self._window_key(act)
                    else:
                        keyboard.handle_event(event)
                        if pads is not None:
                            pads.handle_event(event)
                if not running:
                    break
                if frame is not None:  # a new frame: show it, record it, let the bot see it
                    shown += 1
                    last = frame.time
                    self.hud.note(frame)
                    if frame.latency_ms is not None:
                        latencies.append(frame.latency_ms)
                    record_frame(self.recorder, frame, t0)
                    if self.on_frame is not None:
                        self.on_frame(frame)
                    self.draw(frame)
                    if self.max_frames is not None and shown >= self.max_frames:
                        break
                    if bot is not None:
                        next_keys = bot.act(frame.image)
                        if next_keys is None:
                            break
                        bot_keys = next_keys
                keys = keyboard.keys() | bot_keys
                if pads is not None:
                    keys |= pads.keys()
                self.source.set_keys(as_played(keys, info.key_names))  # keyboard + bot + pad: one action
                clock.tick(ui_fps)
                frame = self.source.poll()
            if self.screenshot and shown:
                self.save_screenshot(self.screenshot)
            dropped = int(self.source.stats().get("dropped", 0))
            return PlaySummary(info.world, shown, last - t0, latencies, dropped, resets)
        finally:
            pygame.display.quit()

    def _window_key(self, act: str) -> None:
        """P, `.` and H/F1: pause or resume the world, one frame while paused, the help overlay."""
        if act == "pause":
            self.paused = not self.paused
            self.source.set_paused(self.paused)
            self.hud.restart_fps()
            log.info("paused: . makes one frame, P resumes" if self.paused else "resumed")
        elif act == "step" and self.paused:
            self.source.step_once()
        elif act == "help":
            self.show_help = not self.show_help
        if act != "step" and self._shown is not None:  # no new frame comes while paused: redraw now
            self.draw(self._shown)

    def hud_lines(self, frame: ShownFrame) -> list[str]:
        return self.hud.lines(frame, self.source.info, paused=self.paused)

    def draw(self, frame: ShownFrame) -> None:
        import pygame

        self._shown = frame
        blit_frame(self.screen, frame.image, self.scale)
        if self.show_help:
            Hud.draw(self.screen, self._font, Hud.help_lines(self.source.info.key_names))
        else:
            Hud.draw(self.screen, self._font, self.hud_lines(frame))
        pygame.display.flip()

    def save_screenshot(self, path: str) -> None:
        """Save what the window shows now (the frame and the HUD) as an image file."""
        import pygame

        if self.screen is None:
            raise RuntimeError("the window is not open; call save_screenshot from on_frame or after a draw")
        pygame.image.save(self.screen, path)
