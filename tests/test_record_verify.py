"""`worldsim verify`: a real recording of the game is identical; a tampered frame is found."""

import numpy as np
import pytest

from worldsim.cli import main as cli_main
from worldsim.record import RecordingWriter, read_recording

game = pytest.importorskip("worldsim.game")


def _record_game(path, frames=40, size=32, seed=4, level="default"):
    from worldsim.data import Explorer

    world = game.GameWorld(batch_size=1, size=size, level=level)
    explorer = Explorer(1, world.num_keys, seed=1)
    with RecordingWriter(
        path,
        world=world.name,
        height=size,
        width=size,
        key_names=world.key_names,
        fps=30,
        seed=seed,
        extra={"level": level},
    ) as w:
        w.write(0, np.zeros(world.num_keys, bool), world.reset([seed])[0])
        blocked = None
        for n in range(1, frames):
            if n == 25:
                w.write(n, np.zeros(world.num_keys, bool), world.reset([77])[0], reset_seed=77)
                continue
            keys = explorer.act(blocked)
            w.write(n, keys[0], world.step(keys)[0])
            blocked = world.blocked


def test_verify_identical_then_finds_a_tampered_frame(tmp_path, capsys):
    p = tmp_path / "a.wsrec"
    _record_game(p, level=3)
    assert cli_main(["verify", str(p)]) == 0
    assert "identical: 40 frames" in capsys.readouterr().out

    rec = read_recording(p)
    tampered = tmp_path / "t.wsrec"
    h = rec.header
    with RecordingWriter(
        tampered,
        world=h["world"],
        height=h["height"],
        width=h["width"],
        key_names=h["key_names"],
        fps=h["fps"],
        seed=h["seed"],
        extra=h["extra"],
    ) as w:
        for i, r in enumerate(rec.records):
            frame = r.frame.copy()
            if i == 17:
                frame[5, 6] ^= 0x10  # one pixel
            w.write(r.frame_number, r.keys, frame, reset_seed=r.reset_seed)
    assert cli_main(["verify", str(tampered)]) == 1
    out = capsys.readouterr().out
    assert "mismatch at record 17 (frame 17): 1 pixels differ, max abs diff 16" in out


def test_verify_refuses_non_game_worlds(tmp_path, capsys):
    p = tmp_path / "n.wsrec"
    with RecordingWriter(
        p, world="neural", height=4, width=4, key_names=["a"], fps=30, seed=0, checkpoint_hash="abc123"
    ) as w:
        w.write(0, [0], np.zeros((4, 4, 3), np.uint8))
    assert cli_main(["verify", str(p)]) == 2
    err = capsys.readouterr().err
    assert "only the real game" in err and "abc123" in err and err.count("\n") == 1


def test_verify_device_defaults_to_the_recorded_one_when_present():
    import torch

    from worldsim.record.verify import _pick_device

    assert _pick_device("cpu", {"extra": {"device": "cuda"}}) == "cpu"
    assert _pick_device(None, {"extra": {}}) == "cpu"
    assert _pick_device(None, {"extra": {"device": "cuda"}}) == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
