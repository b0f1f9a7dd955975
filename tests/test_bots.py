"""Bots: sticky random keys (seeded, sane combinations) and replaying the keys of a real .wsrec file."""

import numpy as np
import pytest
from worldsim.controllers.bots import RandomStickyBot, ReplayBot, make_bot

from worldsim.errors import UserError
from worldsim.record import RecordingWriter
from worldsim.world import KEY_NAMES


def test_random_sticky_is_seeded_sticky_and_sane():
    bot_a, bot_b, bot_c = (RandomStickyBot(KEY_NAMES, seed=s) for s in (3, 3, 4))
    a = np.stack([bot_a.act() for _ in range(600)])
    b = np.stack([bot_b.act() for _ in range(600)])
    c = np.stack([bot_c.act() for _ in range(600)])
    assert a.shape == (600, len(KEY_NAMES)) and a.dtype == bool
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    changes = int((a[1:] != a[:-1]).any(axis=1).sum())
    assert changes < 600 / 3, "keys must be held for several frames, not re-rolled every frame"
    assert a.any(axis=0).all(), "every key gets pressed at some point"
    idx = {n: i for i, n in enumerate(KEY_NAMES)}
    for x, y in (("forward", "back"), ("strafe_left", "strafe_right"), ("turn_left", "turn_right")):
        assert not (a[:, idx[x]] & a[:, idx[y]]).any(), f"{x} and {y} pressed together"


def write_recording(path, key_names, keys_per_frame, seed=7):
    with RecordingWriter(
        path, world="game", height=4, width=4, key_names=key_names, fps=30.0, seed=seed
    ) as w:
        for i, keys in enumerate(keys_per_frame):
            w.write(i, keys, np.full((4, 4, 3), i, np.uint8), reset_seed=seed if i == 0 else None)


def test_replay_bot_plays_the_recorded_keys_then_stops(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.random((12, len(KEY_NAMES))) < 0.4
    keys[0] = False  # the reset frame reflects no keys
    path = tmp_path / "a.wsrec"
    write_recording(path, KEY_NAMES, keys)
    bot = make_bot(f"replay:{path}", KEY_NAMES)
    assert isinstance(bot, ReplayBot) and bot.seed == 7
    played = []
    while (k := bot.act()) is not None:
        played.append(k)
    assert np.array_equal(np.stack(played), keys[1:])  # frame i was made by the keys of record i


def test_replay_bot_maps_keys_by_name_and_refuses_unknown_keys(tmp_path):
    path = tmp_path / "b.wsrec"
    write_recording(path, ("turn_right", "forward"), [[0, 0], [1, 0], [0, 1]])
    bot = ReplayBot(path, KEY_NAMES)
    got = [bot.act(), bot.act(), bot.act()]
    assert got[0].tolist() == [False, False, False, False, False, True]
    assert got[1].tolist() == [True, False, False, False, False, False]
    assert got[2] is None
    with pytest.raises(UserError, match="turn_right"):
        ReplayBot(path, ("forward", "back"))


def test_bot_spec_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="random-sticky"):
        make_bot("dance", KEY_NAMES)
    with pytest.raises(UserError, match="no such file"):
        make_bot(f"replay:{tmp_path / 'missing.wsrec'}", KEY_NAMES)
    junk = tmp_path / "junk.wsrec"
    junk.write_bytes(b"not a recording at all")
    with pytest.raises(UserError):
        make_bot(f"replay:{junk}", KEY_NAMES)
    assert isinstance(make_bot("random-sticky", KEY_NAMES, seed=1), RandomStickyBot)
