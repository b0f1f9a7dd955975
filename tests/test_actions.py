"""Held keys -> the one action of a Discrete env (worldsim/actions.py), on Atari's action meanings: the
mapping the gym world and the play window share."""

import numpy as np
import pytest
from gym_envs import ATARI_MEANINGS as FULL

from worldsim.actions import choose_action, components, one_action_per_frame, one_hot_keys

BREAKOUT = ("NOOP", "FIRE", "RIGHT", "LEFT")
PONG = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")


@pytest.mark.parametrize(
    "name, parts",
    [
        ("NOOP", set()),
        ("FIRE", {"FIRE"}),
        ("UPRIGHT", {"UP", "RIGHT"}),
        ("DOWNLEFTFIRE", {"DOWN", "LEFT", "FIRE"}),
        ("action_3", {"action_3"}),  # not made of Atari's parts: its own part
        ("UPUP", {"UPUP"}),  # a part twice is no Atari meaning
        ("UPSIDE", {"UPSIDE"}),
        ("forward", {"forward"}),
    ],
)
def test_components_of_action_names(name, parts):
    assert components(name) == parts


@pytest.mark.parametrize(
    "names, held, meant",
    [
        (FULL, (), "NOOP"),
        (FULL, ("FIRE",), "FIRE"),
        (FULL, ("UP", "RIGHT"), "UPRIGHT"),
        (FULL, ("RIGHT", "UP"), "UPRIGHT"),  # the order held does not matter
        (FULL, ("UP", "RIGHT", "FIRE"), "UPRIGHTFIRE"),
        (FULL, ("DOWN", "LEFT", "FIRE"), "DOWNLEFTFIRE"),
        (FULL, ("UPRIGHT", "FIRE"), "UPRIGHTFIRE"),  # held actions pool their parts
        (FULL, ("UPFIRE", "RIGHT"), "UPRIGHTFIRE"),
        (FULL, ("NOOP", "LEFT"), "LEFT"),  # NOOP adds nothing
        (FULL, ("LEFT", "RIGHT"), "RIGHT"),  # no such action: a largest subset, the lowest index (3 < 4)
        (FULL, ("UP", "DOWN"), "UP"),  # 2 < 5
        (FULL, ("UP", "DOWN", "FIRE"), "UPFIRE"),  # UPFIRE (10) and DOWNFIRE (13) are both 2 of 3
        (FULL, ("UP", "DOWN", "LEFT", "RIGHT", "FIRE"), "UPRIGHTFIRE"),  # the first 3-part action
        (BREAKOUT, (), "NOOP"),
        (BREAKOUT, ("UP",), "NOOP"),  # Breakout has no UP: nothing it can do with it
        (BREAKOUT, ("UP", "RIGHT"), "RIGHT"),
        (BREAKOUT, ("RIGHT", "FIRE"), "FIRE"),  # FIRE (1) before RIGHT (2): one action a frame
        (BREAKOUT, ("LEFT",), "LEFT"),
        (PONG, ("RIGHT", "FIRE"), "RIGHTFIRE"),
        (PONG, ("LEFT", "FIRE", "UP"), "LEFTFIRE"),
        (("action_0", "action_1", "action_2"), (), "action_0"),  # no NOOP: action 0
        (("action_0", "action_1", "action_2"), ("action_2",), "action_2"),
        (("action_0", "action_1", "action_2"), ("action_2", "action_1"), "action_1"),
        (("action_0", "action_1"), ("FIRE",), "action_0"),  # nothing matches: action 0
    ],
)
def test_the_held_set_means_one_action(names, held, meant):
    assert names[choose_action(held, names)] == meant


def test_every_action_held_alone_is_itself_and_one_hot_keys_are_idempotent():
    for names in (FULL, BREAKOUT, PONG):
        for i, name in enumerate(names):
            assert choose_action([name], names) == i
            assert (
                choose_action(sorted(components(name)), names) == i
            )  # by its parts, as the keyboard holds them
            row = np.zeros(len(names), bool)
            row[i] = True
            assert one_hot_keys(row, names).tolist() == row.tolist()
    held = np.array([n in ("UP", "RIGHT", "FIRE") for n in FULL])
    out = one_hot_keys(held, FULL)
    assert out.sum() == 1 and FULL[int(np.argmax(out))] == "UPRIGHTFIRE"
    assert FULL[int(np.argmax(one_hot_keys(np.zeros(len(FULL), bool), FULL)))] == "NOOP"


def test_which_key_sets_are_one_action_per_frame():
    assert one_action_per_frame(BREAKOUT) and one_action_per_frame(FULL)
    assert one_action_per_frame(("action_0", "action_1"))
    assert not one_action_per_frame(
        ("forward", "back", "strafe_left", "strafe_right", "turn_left", "turn_right")
    )
    assert not one_action_per_frame(("key_0", "key_1")) and not one_action_per_frame(())
    assert not one_action_per_frame(("action_0", "jump"))
