"""Helpers for the tests of real pygame windows (dummy video driver): what a window shows now, and a
frame source that calls back at every window tick."""

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


class TickSource:
    """Wraps a real frame source; `on_tick` runs on the UI thread at every window tick (its poll): a
    clock for scripts that keeps going while the world is paused and no frame arrives."""

    def __init__(self, source, on_tick):
        self._source, self.on_tick = source, on_tick

    def __getattr__(self, name):
        return getattr(self._source, name)

    def poll(self):
        frame = self._source.poll()
        self.on_tick()
        return frame


def press(key, kind=pygame.KEYDOWN):
    pygame.event.post(pygame.event.Event(kind, key=key))


def play_pause_step_resume(source, made=lambda: 0, while_paused=None, **window_kw):
    """Play `source` in a real Window by this script, driven by frames and UI ticks (never by time):
    P at the 5th frame; 40 ticks paused; `.`; once its frame shows, 40 more ticks; P; 10 more frames;
    Esc. `while_paused(tick)` runs at each tick of the first pause. Returns (summary, the frames shown,
    marks): marks[phase] = (frames shown, `made()`) as the phase ends, and marks["stepped"] the frame
    that `.` brought."""
    from worldsim.controllers.window import Window

    seen, marks, state = [], {}, {"phase": "play", "ticks": 0}

    def mark(phase):
        marks[phase] = (len(seen), made())

    def on_frame(frame):
        seen.append(frame)
        if len(seen) == 5:
            press(pygame.K_p)
        if state["phase"] == "resumed" and len(seen) == marks["step"][0] + 10:
            press(pygame.K_ESCAPE)

    def on_tick():
        state["ticks"] += 1
        t, phase = state["ticks"], state["phase"]
        if t > 20000:  # stuck: end play so the caller's assertions say what went wrong
            press(pygame.K_ESCAPE)
        if phase == "play" and window.paused:
            mark("play")
            state.update(phase="paused", ticks=0)
        elif phase == "paused" and while_paused is not None:
            while_paused(t)
        if phase == "paused" and t == 40:
            mark("paused")
            press(pygame.K_PERIOD)
            state.update(phase="step", ticks=0)
        elif phase == "step" and len(seen) > marks["paused"][0] and "stepped" not in marks:
            marks["stepped"], state["ticks"] = seen[-1], 0
        elif phase == "step" and "stepped" in marks and t == 40:
            mark("step")
            press(pygame.K_p)
            state.update(phase="resumed", ticks=0)

    ticking = TickSource(source, on_tick)
    window = Window(ticking, on_frame=on_frame, max_frames=500, gamepad=False, **window_kw)
    try:
        summary = window.run()
    finally:
        source.close()
    assert state["phase"] == "resumed", f"play stopped in phase {state['phase']}"
    return summary, seen, marks
