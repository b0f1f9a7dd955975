"""Gamepad -> keys: the pure mapping, layouts, and hotplug handling through pygame's real joystick API."""

import numpy as np
import pygame
import pytest
from worldsim.controllers.gamepad import (
    PLAYSTATION,
    XBOX,
    GamepadLayout,
    Gamepads,
    keys_from_gamepad,
    layout_for,
)

from worldsim.world import KEY_NAMES


def pressed(keys: np.ndarray) -> set[str]:
    return {n for n, k in zip(KEY_NAMES, keys) if k}


def xbox_axes(lx=0.0, ly=0.0, lt=-1.0, rx=0.0, ry=0.0, rt=-1.0) -> list[float]:
    return [lx, ly, lt, rx, ry, rt]  # triggers rest at -1 on Xbox pads


def test_sticks_map_to_move_strafe_and_turn():
    none = [False] * 11
    assert pressed(keys_from_gamepad(xbox_axes(), none, (0, 0), KEY_NAMES)) == set()
    assert pressed(keys_from_gamepad(xbox_axes(ly=-0.9), none, (0, 0), KEY_NAMES)) == {"forward"}
    assert pressed(keys_from_gamepad(xbox_axes(ly=0.9, lx=-0.8), none, (0, 0), KEY_NAMES)) == {
        "back",
        "strafe_left",
    }
    assert pressed(keys_from_gamepad(xbox_axes(lx=0.5, rx=-0.7), none, (0, 0), KEY_NAMES)) == {
        "strafe_right",
        "turn_left",
    }
    assert pressed(keys_from_gamepad(xbox_axes(rx=0.7), none, (0, 0), KEY_NAMES)) == {"turn_right"}


def test_deadzone_ignores_drift_and_resting_triggers_never_turn():
    none = [False] * 11
    drift = xbox_axes(lx=0.2, ly=-0.25, rx=0.29, ry=0.1)
    assert pressed(keys_from_gamepad(drift, none, (0, 0), KEY_NAMES)) == set()
    loose = GamepadLayout(deadzone=0.1)
    assert pressed(keys_from_gamepad(drift, none, (0, 0), KEY_NAMES, loose)) == {
        "strafe_right",
        "forward",
        "turn_right",
    }


def test_dpad_and_shoulders():
    buttons = [False] * 11
    assert pressed(keys_from_gamepad(xbox_axes(), buttons, (0, 1), KEY_NAMES)) == {"forward"}
    assert pressed(keys_from_gamepad(xbox_axes(), buttons, (-1, -1), KEY_NAMES)) == {"back", "strafe_left"}
    buttons[4] = True  # left shoulder
    assert pressed(keys_from_gamepad(xbox_axes(), buttons, (0, 0), KEY_NAMES)) == {"turn_left"}
    buttons[4], buttons[5] = False, True
    assert pressed(keys_from_gamepad(xbox_axes(), buttons, (0, 0), KEY_NAMES)) == {"turn_right"}


def test_playstation_layout_right_stick_shoulders_and_dpad_buttons():
    assert layout_for("PS4 Controller") is PLAYSTATION
    assert layout_for("Sony Interactive Entertainment DualSense Wireless Controller") is PLAYSTATION
    assert layout_for("Xbox 360 Controller") is XBOX
    axes = [0.0, 0.0, -0.8, 0.0, -1.0, -1.0]  # right stick x is axis 2 on PlayStation pads
    buttons = [False] * 15
    assert pressed(keys_from_gamepad(axes, buttons, (0, 0), KEY_NAMES, PLAYSTATION)) == {"turn_left"}
    buttons[11] = True  # d-pad up is a button, there is no hat
    buttons[10] = True  # R1
    assert pressed(keys_from_gamepad([0.0] * 6, buttons, (0, 0), KEY_NAMES, PLAYSTATION)) == {
        "forward",
        "turn_right",
    }


def test_unknown_key_names_stay_false_and_short_devices_are_safe():
    names = ("forward", "jump", "turn_right")
    keys = keys_from_gamepad([0.0, -1.0], [], (0, 0), names)  # two axes only, no buttons
    assert keys.tolist() == [True, False, False]


def test_layout_checks_name_the_field():
    with pytest.raises(ValueError, match="deadzone"):
        GamepadLayout(deadzone=1.5)
    with pytest.raises(ValueError, match="turn_x"):
        GamepadLayout(turn_x=-1)


def test_hotplug_events_with_the_real_joystick_api():
    pygame.display.init()
    try:
        pads = Gamepads(KEY_NAMES)
        base = len(pads)  # whatever the machine has (none under the dummy driver)
        # A device announced and gone before it could be opened: logged, not a crash.
        assert pads.handle_event(pygame.event.Event(pygame.JOYDEVICEADDED, device_index=99))
        assert len(pads) == base
        assert pads.handle_event(pygame.event.Event(pygame.JOYDEVICEREMOVED, instance_id=12345))
        assert len(pads) == base
        assert not pads.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))
        if base == 0:
            assert not pads.keys().any()
    finally:
        pygame.display.quit()
