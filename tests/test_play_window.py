"""The real pygame window loop (dummy video driver) on the real game: scripted key events reach the
world from its worker thread, frames change, R resets, P pauses the world and `.` steps it one frame,
H toggles the help overlay, Esc and closing the window quit."""

import logging
import threading

import numpy as np
import pygame
import torch
from displays import TickSource, play_pause_step_resume
from worldsim.controllers.sources import WorldSource
from worldsim.controllers.window import Window

from worldsim.game import GameWorld
from worldsim.world import KEY_NAMES

FORWARD, TURN_RIGHT = KEY_NAMES.index("forward"), KEY_NAMES.index("turn_right")


class SpyGame(GameWorld):
    """The real game, remembering every key row it was stepped with (and on which thread)."""

    def __init__(self, **kw):
        self.received: list[torch.Tensor] = []
        self.threads: set[threading.Thread] = set()
        super().__init__(**kw)
        self.threads.clear()  # construction may reset; only play counts

    def reset(self, seeds=None, *, slots=None):
        self.threads.add(threading.current_thread())
        return super().reset(seeds, slots=slots)

    def step(self, keys, *, slots=None):
        self.threads.add(threading.current_thread())
        self.received.append(torch.as_tensor(keys).clone().cpu())
        return super().step(keys, slots=slots)


def key_event(kind, key):
    pygame.event.post(pygame.event.Event(kind, key=key))


def test_window_plays_100_frames_from_scripted_key_events():
    world = SpyGame(batch_size=1, size=32)
    source = WorldSource(world, fps=60.0)
    seen = []
    script = {
        10: (pygame.KEYDOWN, pygame.K_w),
        45: (pygame.KEYUP, pygame.K_w),
        55: (pygame.KEYDOWN, pygame.K_e),
        90: (pygame.KEYUP, pygame.K_e),
    }
    pos, heading = {}, {}

    def on_frame(frame):  # runs on the UI thread, like a person reacting to what they see
        n = len(seen)
        seen.append(frame)
        if n in (9, 50, 99):
            pos[n], heading[n] = world.pos.clone(), world.heading.clone()
        if n in script:
            key_event(*script[n])

    try:
        summary = Window(source, seed=3, scale=2, on_frame=on_frame, max_frames=100, gamepad=False).run()
    finally:
        source.close()
    assert summary.frames == 100 and len(seen) == 100
    assert threading.main_thread() not in world.threads, "the world never runs on the UI thread"
    received = torch.cat(world.received)  # [steps, K]
    pressed = received.any(dim=0)
    assert pressed[FORWARD] and pressed[TURN_RIGHT]
    assert pressed.sum() == 2, "only the keys the script pressed reach the world"
    assert received[:, FORWARD].sum() >= 10 and received[:, TURN_RIGHT].sum() >= 10
    assert not (received[:, FORWARD] & received[:, TURN_RIGHT]).any(), "forward was released before E"
    # The world moved while W was held and turned while E was held.
    assert not torch.equal(pos[9], pos[50])
    assert not torch.equal(heading[50], heading[99])
    images = np.stack([f.image for f in seen])
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    assert len({im.tobytes() for im in images}) > 20, "the frames change as the player moves"
    numbers = [f.number for f in seen]
    assert numbers == sorted(numbers) and numbers[0] == 0
    assert all(f.latency_ms is not None and f.latency_ms >= 0 for f in seen[1:])
    for f in seen[1:]:  # each frame carries the keys it reflects
        assert f.keys.shape == (len(KEY_NAMES),)


def test_r_resets_and_escape_quits():
    world = GameWorld(batch_size=1, size=32)
    source = WorldSource(world, fps=60.0)
    seen = []

    # Frame-driven, not timed: Esc goes out when the reset's frame is shown, however slow the machine.
    def on_frame(frame):
        seen.append(frame)
        if len(seen) == 2:
            key_event(pygame.KEYDOWN, pygame.K_w)
        if len(seen) == 20:
            key_event(pygame.KEYUP, pygame.K_w)
            key_event(pygame.KEYDOWN, pygame.K_r)
        if len(seen) > 20 and frame.reset_seed is not None:
            key_event(pygame.KEYDOWN, pygame.K_ESCAPE)

    try:
        summary = Window(source, seed=5, scale=1, on_frame=on_frame, max_frames=500, gamepad=False).run()
    finally:
        source.close()
    assert summary.frames == len(seen) < 500, "Esc ends play at once"
    assert summary.resets == 1
    resets = [f for f in seen[1:] if f.reset_seed is not None]
    assert len(resets) == 1 and resets[0] is seen[-1], "the reset's frame is shown (never dropped)"
    assert resets[0].number == 0 and resets[0].reset_seed == 5
    assert np.array_equal(resets[0].image, seen[0].image), "R restarts the same game"


def test_closing_the_window_quits():
    source = WorldSource(GameWorld(batch_size=1, size=16), fps=60.0)

    def on_frame(frame):
        pygame.event.post(pygame.event.Event(pygame.QUIT))

    try:
        summary = Window(source, scale=1, on_frame=on_frame, max_frames=500, gamepad=False).run()
    finally:
        source.close()
    assert summary.frames == 1


def test_p_pauses_the_world_and_period_steps_exactly_one_frame():
    world = SpyGame(batch_size=1, size=32)

    def while_paused(tick):
        if tick == 10:
            key_event(pygame.KEYDOWN, pygame.K_w)  # held while paused: the single step uses it

    summary, seen, marks = play_pause_step_resume(
        WorldSource(world, fps=60.0),
        made=lambda: len(world.received),
        while_paused=while_paused,
        seed=1,
        scale=2,
    )
    (_, made_at_pause), (shown_idle, made_idle), (shown_step, made_step) = (
        marks[p] for p in ("play", "paused", "step")
    )
    assert made_idle == made_at_pause, "the world made no frame in 40 ticks of pause"
    assert made_step == made_at_pause + 1, "one . makes exactly one frame"
    assert shown_step == shown_idle + 1, "and the window shows exactly that frame"
    stepped = marks["stepped"]
    assert stepped.number == seen[shown_idle - 1].number + 1, "the next frame, not a skipped one"
    assert stepped.keys[FORWARD] and world.received[made_step - 1][0, FORWARD], "W held while paused"
    assert summary.frames == len(seen) == shown_step + 10, "P again resumes real-time play"
    numbers = [f.number for f in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_h_toggles_the_help_overlay_and_the_controls_are_logged(caplog):
    source_world = GameWorld(batch_size=1, size=32)
    screens, state = [], {"ticks": 0}

    def on_frame(frame):
        if len(screens) == 0 and not window.paused:
            key_event(pygame.KEYDOWN, pygame.K_p)  # paused, the picture changes only by the overlay

    def on_tick():
        if not window.paused:
            return
        state["ticks"] += 1
        if state["ticks"] in (5, 10, 15):
            screens.append((window.show_help, pygame.surfarray.array3d(window.screen).copy()))
            key_event(pygame.KEYDOWN, {5: pygame.K_h, 10: pygame.K_F1, 15: pygame.K_ESCAPE}[state["ticks"]])

    source = TickSource(WorldSource(source_world, fps=60.0), on_tick)
    window = Window(source, scale=4, on_frame=on_frame, max_frames=500, gamepad=False)
    with caplog.at_level(logging.INFO, logger="worldsim.controllers.window"):
        try:
            window.run()
        finally:
            source.close()
    (off, hud), (on, helped), (off_again, hud_again) = screens
    assert (off, on, off_again) == (False, True, False)
    assert not np.array_equal(hud, helped), "H draws the help overlay"
    assert np.array_equal(hud, hud_again), "F1 takes it away, back to the HUD"
    logged = " ".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("controls:"))
    for words in ("W / Up forward", "P pause / resume", ". one frame (while paused)", "H / F1", "Esc quit"):
        assert words in logged, f"{words!r} missing from the controls logged at start"
