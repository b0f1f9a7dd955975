"""The newest-frame queue between the world's worker and the UI, and keyboard -> keys."""

import threading
import time

import numpy as np
import pygame
import pytest
from worldsim.controllers.frames import FrameQueue
from worldsim.controllers.keyboard import Keyboard
from worldsim.controllers.window import auto_scale

from worldsim.world import KEY_NAMES


def test_full_queue_drops_the_oldest_and_the_ui_takes_the_newest():
    q = FrameQueue(2)
    assert q.get_newest() is None
    for i in range(5):
        q.put(i)
    assert len(q) == 2 and q.dropped == 3  # 0, 1, 2 pushed out
    assert q.get_newest() == 4
    assert q.dropped == 4  # 3 was never shown either
    assert len(q) == 0 and q.get_newest() is None
    one = FrameQueue(1)
    one.put("a")
    one.put("b")
    assert one.get_newest() == "b" and one.dropped == 1
    with pytest.raises(ValueError, match="maxlen"):
        FrameQueue(3)


def test_a_reset_frame_is_never_dropped():
    """A slow UI must still see the reset's frame (the recording and the HUD mark the reset with it)."""
    q = FrameQueue(2, keep=lambda item: item == "reset")
    for item in ("a", "reset", "b", "c"):  # full at "b": "a" goes, not the reset
        q.put(item)
    assert q.dropped == 2 and len(q) == 2  # "a" and "b" pushed out
    assert q.get_newest() == "reset", "the reset comes first, however many frames followed it"
    assert q.get_newest() == "c" and q.get_newest() is None
    q.put("x")
    q.put("reset")
    assert q.get_newest() == "reset" and q.dropped == 3  # "x" is older than the reset: dropped
    q.put("reset")
    q.put("reset")
    q.put("y")  # all kept: the oldest goes
    assert q.get_newest() == "reset" and q.get_newest() == "y"


def test_get_newest_waits_for_a_producer():
    q = FrameQueue(2)
    threading.Timer(0.05, q.put, args=("frame",)).start()
    t0 = time.monotonic()
    assert q.get_newest(timeout=2.0) == "frame"
    assert time.monotonic() - t0 < 1.5


def test_fast_producer_never_blocks_and_every_frame_is_shown_or_counted_dropped():
    q = FrameQueue(2)
    n = 5000
    seen: list[int] = []

    def consume():
        while not seen or seen[-1] != n - 1:
            item = q.get_newest(timeout=0.01)
            if item is not None:
                seen.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        q.put(i)
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert seen == sorted(set(seen)), "the UI only ever moves forward in time"
    assert len(seen) + q.dropped == n


def test_keyboard_wasd_arrows_qe():
    kb = Keyboard(KEY_NAMES)
    idx = {n: i for i, n in enumerate(KEY_NAMES)}

    def press(*codes):
        for c in codes:
            assert kb.handle_event(pygame.event.Event(pygame.KEYDOWN, key=c))

    def release(*codes):
        for c in codes:
            assert kb.handle_event(pygame.event.Event(pygame.KEYUP, key=c))

    def held():
        return {n for n in KEY_NAMES if kb.keys()[idx[n]]}

    press(pygame.K_w, pygame.K_d)
    assert held() == {"forward", "strafe_right"}
    press(pygame.K_UP)
    release(pygame.K_w)
    assert held() == {"forward", "strafe_right"}, "the arrow still holds forward"
    release(pygame.K_UP, pygame.K_d)
    press(pygame.K_q, pygame.K_RIGHT, pygame.K_s, pygame.K_a)
    assert held() == {"turn_left", "turn_right", "back", "strafe_left"}
    kb.handle_event(pygame.event.Event(pygame.WINDOWFOCUSLOST))
    assert held() == set(), "losing the focus releases every key"
    assert not kb.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_z))
    assert set(kb.bound_keys) == set(KEY_NAMES)
    partial = Keyboard(("forward", "jump"))
    partial.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))
    assert partial.keys().tolist() == [True, False] and partial.keys().dtype == np.bool_


def test_auto_scale_fits_the_screen_with_integer_steps():
    assert auto_scale(64, 64, (1920, 1080)) == 14  # 918 // 64
    assert auto_scale(128, 128, (1280, 720)) == 4
    assert auto_scale(64, 64, None) == 8
    assert auto_scale(64, 64, (-1, -1)) == 8
    assert auto_scale(1024, 1024, (800, 600)) == 1
