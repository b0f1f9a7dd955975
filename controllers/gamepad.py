"""Gamepads through pygame's joystick API: left stick / d-pad move and strafe, right stick / shoulders turn;
for Atari's action names the left stick / d-pad hold UP/DOWN/LEFT/RIGHT and A (cross) holds FIRE.

`keys_from_gamepad` is the pure mapping (tested without hardware); `Gamepads` follows hotplug events
and ORs every connected pad into one `[K]` key vector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner in the middle of our output
import pygame  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GamepadLayout:
    """Which axes and buttons mean what on one family of pads (SDL joystick numbering)."""

    move_x: int = 0  # left stick, right = +1
    move_y: int = 1  # left stick, down = +1
    turn_x: int = 3  # right stick, right = +1
    turn_left_buttons: tuple[int, ...] = (4,)  # left shoulder
    turn_right_buttons: tuple[int, ...] = (5,)  # right shoulder
    dpad_buttons: tuple[int, int, int, int] | None = None  # up, down, left, right (pads without a hat)
    fire_buttons: tuple[int, ...] = (0,)  # A / cross: Atari's FIRE
    deadzone: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {self.deadzone}; 0.2-0.35 suits most pads")
        for field in ("move_x", "move_y", "turn_x"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be an axis index >= 0, got {getattr(self, field)}")


# pygame's documented layouts: Xbox pads put the left trigger on axis 2 and the right stick on 3/4;
# PlayStation pads put the right stick on 2/3 and the triggers on 4/5.
XBOX = GamepadLayout()
PLAYSTATION = GamepadLayout(
    turn_x=2, turn_left_buttons=(9,), turn_right_buttons=(10,), dpad_buttons=(11, 12, 13, 14)
)


def layout_for(name: str) -> GamepadLayout:
    """Pick the layout from the pad's reported name (Xbox numbering unless it is a PlayStation pad)."""
    lowered = name.lower()
    if any(s in lowered for s in ("ps4", "ps5", "playstation", "dualsense", "dualshock", "sony")):
        return PLAYSTATION
    return XBOX


def keys_from_gamepad(
    axes: Sequence[float],
    buttons: Sequence[bool],
    hat: tuple[int, int],
    key_names: Sequence[str],
    layout: GamepadLayout = XBOX,
) -> np.ndarray:
    """Map one pad's state to a `[K]` bool key vector for `key_names` (keys it cannot press stay False).

    `hat` is the d-pad as pygame reports it: x right = +1, y up = +1.
    """

    def axis(i: int) -> float:
        v = float(axes[i]) if i < len(axes) else 0.0
        return v if abs(v) > layout.deadzone else 0.0

    def button(ids: tuple[int, ...]) -> bool:
        return any(i < len(buttons) and bool(buttons[i]) for i in ids)

    mx, my, tx = axis(layout.move_x), axis(layout.move_y), axis(layout.turn_x)
    hx, hy = hat
    if layout.dpad_buttons is not None:
        up, down, left, right = (button((i,)) for i in layout.dpad_buttons)
        hx, hy = hx or int(right) - int(left), hy or int(up) - int(down)
    pressed = {
        "forward": my < 0 or hy > 0,
        "back": my > 0 or hy < 0,
        "strafe_left": mx < 0 or hx < 0,
        "strafe_right": mx > 0 or hx > 0,
        "turn_left": tx < 0 or button(layout.turn_left_buttons),
        "turn_right": tx > 0 or button(layout.turn_right_buttons),
        # the parts of Atari's action names (a Discrete env's world pools them into one action)
        "UP": my < 0 or hy > 0,
        "DOWN": my > 0 or hy < 0,
        "LEFT": mx < 0 or hx < 0,
        "RIGHT": mx > 0 or hx > 0,
        "FIRE": button(layout.fire_buttons),
    }
    return np.array([pressed.get(n, False) for n in key_names], dtype=bool)


class Gamepads:
    """Every connected joystick, kept up to date from JOYDEVICEADDED / JOYDEVICEREMOVED events."""

    def __init__(self, key_names: Sequence[str]) -> None:
        self.key_names = tuple(key_names)
        self._pads: dict[int, tuple[pygame.joystick.JoystickType, GamepadLayout]] = {}  # instance id -> pad
        if not pygame.joystick.get_init():
            pygame.joystick.init()
        # SDL also sends JOYDEVICEADDED for pads present at start-up; adding here too is idempotent.
        for i in range(pygame.joystick.get_count()):
            self._add(i)

    def __len__(self) -> int:
        return len(self._pads)

    def names(self) -> list[str]:
        return [pad.get_name() for pad, _ in self._pads.values()]

    def _add(self, device_index: int) -> None:
        try:
            pad = pygame.joystick.Joystick(device_index)
            pad.init()
        except pygame.error as e:  # unplugged again before we got to it
            log.warning("gamepad %d could not be opened: %s", device_index, e)
            return
        iid = pad.get_instance_id()
        if iid not in self._pads:
            self._pads[iid] = (pad, layout_for(pad.get_name()))
            log.info("gamepad connected: %s", pad.get_name())

    def handle_event(self, event: pygame.event.Event) -> bool:
        if event.type == pygame.JOYDEVICEADDED:
            self._add(event.device_index)
            return True
        if event.type == pygame.JOYDEVICEREMOVED:
            entry = self._pads.pop(event.instance_id, None)
            if entry is not None:
                log.info("gamepad disconnected: %s", entry[0].get_name())
            return True
        return False

    def keys(self) -> np.ndarray:
        out = np.zeros(len(self.key_names), dtype=bool)
        for pad, layout in self._pads.values():
            axes = [pad.get_axis(i) for i in range(pad.get_numaxes())]
            buttons = [pad.get_button(i) for i in range(pad.get_numbuttons())]
            hat = pad.get_hat(0) if pad.get_numhats() else (0, 0)
            out |= keys_from_gamepad(axes, buttons, hat, self.key_names, layout)
        return out
