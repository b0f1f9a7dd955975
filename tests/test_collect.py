"""`worldsim collect`: from the game, from a recording of the game, and from a Gymnasium env."""

import numpy as np
import pytest
import torch

from worldsim.cli import main as cli_main
from worldsim.data import Dataset, make_loader
from worldsim.record import RecordingWriter


def test_collect_game_gives_a_loadable_dataset(tmp_path, capsys):
    pytest.importorskip("worldsim.game")
    out = tmp_path / "game"
    argv = [
        "collect",
        "--out",
        str(out),
        "--clips",
        "5",
        "--frames",
        "8",
        "--size",
        "32",
        "--batch",
        "2",
        "--seed",
        "3",
    ]
    assert cli_main(argv) == 0
    assert "5 clips of 8 frames, 32x32" in capsys.readouterr().out
    ds = Dataset(out)
    assert len(ds) == 5 and ds.key_names[0] == "forward"
    f, k = next(make_loader(str(out), batch=4, frames=8, size=32))
    assert f.shape == (4, 8, 32, 32, 3) and k.shape == (4, 8, 6) and k.dtype == torch.bool
    frames = np.stack([ds.clip(i)[0] for i in range(5)])
    assert frames.std(axis=(1, 2, 3, 4)).min() > 0, "clips are rendered, not blank"
    assert cli_main(argv) == 2 and "already holds a dataset" in capsys.readouterr().err


def test_collect_from_recording(tmp_path):
    game = pytest.importorskip("worldsim.game")
    from worldsim.data import Explorer

    world = game.GameWorld(batch_size=1, size=24)
    explorer = Explorer(1, world.num_keys, seed=0)
    rec = tmp_path / "play.wsrec"
    with RecordingWriter(
        rec, world=world.name, height=24, width=24, key_names=world.key_names, fps=30, seed=2
    ) as w:
        w.write(0, np.zeros(6, bool), world.reset([2])[0])
        for n in range(1, 23):
            if n == 12:  # a mid-session reset: frames 10..11 are dropped, no clip spans it
                w.write(n, np.zeros(6, bool), world.reset([9])[0], reset_seed=9)
                continue
            keys = explorer.act()
            w.write(n, keys[0], world.step(keys)[0])
    out = tmp_path / "ds"
    assert cli_main(["collect", "--from-recording", str(rec), "--out", str(out), "--frames", "5"]) == 0
    ds = Dataset(out)
    assert len(ds) == 4 and ds.frames == 5 and ds.meta["fps"] == 30  # 0-4, 5-9, 12-16, 17-21
    from worldsim.record import read_recording

    records = read_recording(rec).records
    f, k = ds.clip(2)
    assert np.array_equal(f, np.stack([r.frame for r in records[12:17]]))
    assert np.array_equal(k, np.stack([r.keys for r in records[12:17]]))
    assert next(make_loader(str(out), batch=2, frames=5, size=24))[0].shape == (2, 5, 24, 24, 3)


def test_collect_from_recording_refuses_other_worlds(tmp_path, capsys):
    rec = tmp_path / "n.wsrec"
    with RecordingWriter(rec, world="neural", height=4, width=4, key_names=["a"], fps=30, seed=0) as w:
        w.write(0, [0], np.zeros((4, 4, 3), np.uint8))
    assert (
        cli_main(["collect", "--from-recording", str(rec), "--out", str(tmp_path / "d"), "--frames", "1"])
        == 2
    )
    assert "--any-world" in capsys.readouterr().err


def test_collect_from_cartpole(tmp_path):
    out = tmp_path / "cp"
    argv = [
        "collect",
        "--env",
        "CartPole-v1",
        "--out",
        str(out),
        "--clips",
        "3",
        "--frames",
        "30",
        "--size",
        "24",
    ]
    assert cli_main(argv) == 0
    ds = Dataset(out)
    assert ds.key_names == ["action_0", "action_1"] and (ds.height, ds.width) == (24, 24) and len(ds) == 3
    f, k = ds.clip(0)
    assert f.shape == (30, 24, 24, 3) and f.std() > 0
    assert (k.sum(1) <= 1).all(), "Discrete actions are one-hot (all-off marks a reset frame)"
    assert not k[0].any() and k.any(axis=0).all()
    f, k = next(make_loader(str(out), batch=2, frames=10, size=24))
    assert f.shape == (2, 10, 24, 24, 3) and k.shape == (2, 10, 2)


def test_collect_env_errors_name_the_fix(tmp_path, capsys):
    # key naming itself (Discrete, MultiBinary, others refused) is gym_env.key_names: tests/test_gym_world.py
    assert cli_main(["collect", "--env", "Pendulum-v1", "--out", str(tmp_path / "p"), "--clips", "1"]) == 2
    assert "Discrete(n)" in capsys.readouterr().err
    assert cli_main(["collect", "--env", "NoSuchEnv-v0", "--out", str(tmp_path / "q")]) == 2
    assert "--env NoSuchEnv-v0" in capsys.readouterr().err
    assert cli_main(["collect", "--out", str(tmp_path / "r"), "--clips", "0"]) == 2
    assert "--clips must be an int >= 1" in capsys.readouterr().err


def _episodes_restart_cleanly(ds):
    """Every recorded reset frame begins a new episode id with all keys off; ids change only there."""
    resets = 0
    prev = None
    for i in range(len(ds)):
        e, r = ds.episodes(i)
        _, k = ds.clip(i)
        for t in range(ds.frames):
            if r[t]:
                resets += 1
                assert not k[t].any(), "the reset frame has all keys off"
                assert prev is None or e[t] != prev
            elif prev is not None:
                assert e[t] == prev, "the episode id changes only at a reset frame"
            prev = e[t]
    return resets


def test_collect_cartpole_in_two_workers_records_episodes(tmp_path):
    out = tmp_path / "cp"
    argv = ["collect", "--world", "gym:CartPole-v1", "--out", str(out), "--clips", "4", "--frames", "40",
            "--size", "16", "--workers", "2", "--frame-skip", "2", "--seed", "5"]  # fmt: skip
    assert cli_main(argv) == 0
    ds = Dataset(out)
    m = ds.meta
    assert (m["env"], m["frame_skip"], m["workers"], m["seed"], m["fps"]) == ("CartPole-v1", 2, 2, 5, 25.0)
    assert m["policy"]["mix"] == {"random": 0.25, "sticky": 0.55, "burst": 0.2} and not m["policy"]["fire"]
    assert {s["file"][:9] for s in m["shards"]} == {"shard-w00", "shard-w01"}
    # random CartPole falls within ~10-40 steps (here 2 env steps per frame): 160 frames hold many episodes
    assert m["episode_count"] >= 4 and _episodes_restart_cleanly(ds) == m["episode_count"]
    # the two workers played with seeds of their own: their first clips differ
    assert not np.array_equal(ds.clip(0)[0], ds.clip(2)[0])
    assert cli_main(["collect", "--world", "CartPole-v1", "--out", str(tmp_path / "x")]) == 2


def test_collect_breakout_fires_at_each_start(tmp_path):
    pytest.importorskip("ale_py")
    out = tmp_path / "bo"
    argv = ["collect", "--env", "ALE/Breakout-v5", "--out", str(out), "--clips", "12", "--frames", "32",
            "--size", "32"]  # fmt: skip
    assert cli_main(argv) == 0
    ds = Dataset(out)
    assert ds.key_names == ["NOOP", "FIRE", "RIGHT", "LEFT"] and ds.meta["frame_skip"] == 4
    assert ds.meta["fps"] == 15.0 and ds.meta["policy"]["fire"]
    # the emulator's own sticky actions are off: every recorded key is the action played
    assert ds.meta["env_kwargs"] == {"repeat_action_probability": 0.0}
    k = np.concatenate([ds.clip(i)[1] for i in range(len(ds))])
    assert (k.sum(1) <= 1).all() and k.any(0).all(), "one-hot, every action played"
    assert k[1, 1], "FIRE right after the reset frame launches the ball"
    assert _episodes_restart_cleanly(ds) == ds.meta["episode_count"] >= 1
    f = ds.clip(len(ds) - 1)[0]
    assert f.std(axis=(1, 2, 3)).min() > 0 and not np.array_equal(f[0], f[-1]), "the game moves"
    meta_bytes = sum(s["bytes"] for s in ds.meta["shards"])
    assert meta_bytes < f[0].nbytes * ds.meta["frame_count"] / 10, "compressed well below raw"


def test_collect_help_states_the_policy_mix(capsys):
    from worldsim.data.policy import MIX, SEGMENT

    with pytest.raises(SystemExit):
        cli_main(["collect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{SEGMENT[0]}-{SEGMENT[1]}-step segments" in text
    for name, fraction in MIX.items():
        assert f"{fraction:.0%}" in text, name
