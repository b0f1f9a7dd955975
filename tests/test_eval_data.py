"""`worldsim eval --data DIR`: a checkpoint against held-out recorded clips of a dataset, made with the
real collectors (the game, CartPole-v1), scored end to end; a replaying world that equals the data
scores 100 dB; mismatches are one-line errors; the dataset's IDM reads keys from motion."""

import json

import numpy as np
import pytest
import torch
from models import random_checkpoint

from worldsim.cli import main
from worldsim.data import Dataset
from worldsim.data.collect import collect_game
from worldsim.evaluation.dataset_idm import train_dataset_idm
from worldsim.evaluation.dataset_runner import DataEvalConfig, evaluate_dataset, world_batch
from worldsim.evaluation.idm import accuracy, chance_accuracy
from worldsim.evaluation.recorded import (
    RESETS_FROM_KEYS,
    RESETS_FROM_READER,
    RESETS_NONE,
    episode_resets,
    is_one_hot,
)
from worldsim.world import World

CONTEXT = 4


@pytest.fixture(scope="module")
def game_data(tmp_path_factory):
    """80 clips of 24 game frames at 32x32 (the test preset's size and keys): 8 held out."""
    out = tmp_path_factory.mktemp("data") / "game"
    return Dataset(collect_game(out, clips=80, frames=24, size=32, batch=80, progress=False))


@pytest.fixture(scope="module")
def cartpole_data(tmp_path_factory):
    """20 clips of 40 CartPole-v1 frames at 32x32 (random episodes last ~20 frames: resets inside clips)."""
    pytest.importorskip("gymnasium")
    from worldsim.data.gym import collect_env

    out = tmp_path_factory.mktemp("data") / "cartpole"
    return Dataset(collect_env("CartPole-v1", out, clips=20, frames=40, size=32, progress=False))


@pytest.fixture(scope="module")
def game_checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random-test.safetensors")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 100.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def _copy_last(ds, clips, h: int) -> float:
    """Copy-last at horizon h computed directly: the last context frame against the recorded frame h
    frames later, mean over `clips`."""
    frames = [ds.clip(int(i), 0, ds.frames)[0] for i in clips]
    return float(np.mean([_psnr(f[CONTEXT - 1], f[CONTEXT - 1 + h]) for f in frames]))


def test_eval_data_on_the_game_dataset_end_to_end(game_data, game_checkpoint, tmp_path, capsys):
    out, js = tmp_path / "eval", tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(game_checkpoint), "--data", str(game_data.path), "--device", "cpu",
            "--horizons", "1", "8", "16", "32", "--idm-steps", "30", "--out", str(out), "--json", str(js)]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(js.read_text())
    held = game_data.split("heldout")
    assert r["dataset"]["scored_clips"] == len(held) == 8 and r["context_frames"] == CONTEXT
    # 24-frame clips reach 20 frames after 4 context frames: 32 is dropped, and says why
    assert list(r["psnr"]) == ["1", "8", "16"] and "past the clip's end" in r["horizons_dropped"]["32"]
    assert r["clips"] == {"1": 8, "8": 8, "16": 8} and r["episode_resets"]["source"] == RESETS_FROM_READER
    # copy-last is the last real context frame against the recorded frame h frames later, computed directly
    for h in (1, 8, 16):
        assert r["baseline_copy_last"]["psnr"][str(h)] == pytest.approx(
            _copy_last(game_data, held, h), abs=1e-3
        )
        assert r["margin_over_copy_last"][str(h)] == pytest.approx(
            r["psnr"][str(h)] - r["baseline_copy_last"]["psnr"][str(h)], abs=1e-9
        )
    # a random model is below copy-last, and the verdicts say so
    assert r["pass"]["all"] is False and all(v.startswith("FAIL") for v in r["verdict"].values())
    assert r["idle"] is None and list(r["motion"]["ratio_by_horizon"]) == ["1", "8", "16"]
    assert list(r["controllability"]["margin_db"]) == ["1", "8", "16"]
    # the manifest without the shard list
    assert r["dataset"]["manifest"] == {k: v for k, v in game_data.meta.items() if k != "shards"}
    acc = r["action_accuracy"]
    assert acc["one_hot"] is False and acc["real"]["pairs"] == acc["generated"]["pairs"] == 8 * 16
    assert acc["idm"]["path"] == str(game_data.path / "idm-v2.safetensors")
    assert (game_data.path / "idm-v2.safetensors").is_file()
    assert (out / "psnr_vs_horizon.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert (
        "copy-last PSNR" in printed
        and "episode resets: the dataset's episode-reset record" in printed
        and "horizon 32 dropped" in printed
    )


def test_clips_run_in_batches_and_episodes_picks_the_first(game_data, game_checkpoint, tmp_path):
    """5 clips in batches of 2, 2 and 1 (the last on a subset of the world's games): each clip scored once."""
    js = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(game_checkpoint), "--data", str(game_data.path), "--device", "cpu",
            "--horizons", "1", "16", "--episodes", "5", "--batch", "2", "--no-action", "--json", str(js),
            "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(js.read_text())
    first = game_data.split("heldout")[:5]
    assert r["dataset"]["scored_clips"] == 5 and r["clips"] == {"1": 5, "16": 5}
    for h in (1, 16):
        assert r["baseline_copy_last"]["psnr"][str(h)] == pytest.approx(
            _copy_last(game_data, first, h), abs=1e-3
        )
    assert r["action_accuracy"] is None and all(0 < v < 100 for v in r["psnr"].values())


class ReplayWorld(World):
    """A world that equals the data: after the real context of a held-out clip it shows the clip's
    recorded frames while it gets the recorded keys, and holds its last frame on any other keys."""

    def __init__(self, ds, batch_size: int):
        self.key_names, self.height, self.width = tuple(ds.key_names), ds.height, ds.width
        self.batch_size, self.device = batch_size, torch.device("cpu")
        self.clips = [
            tuple(map(torch.from_numpy, ds.clip(int(i), 0, ds.frames))) for i in ds.split("heldout")
        ]
        self.state: list = [None] * batch_size

    def reset(self, seeds=None, *, slots=None):
        raise NotImplementedError("a replay starts from real frames only")

    def reset_from_frames(self, frames, keys=None, *, slots=None):
        T = frames.shape[1]
        for slot, f in zip(slots or range(self.batch_size), frames):
            clip = next(c for c in self.clips if torch.equal(c[0][:T], f))
            self.state[slot] = {"clip": clip, "t": T, "last": f[-1], "following": True}
        return frames[:, -1]

    def step(self, keys, *, slots=None):
        out = []
        for slot, k in zip(slots or range(self.batch_size), keys):
            s = self.state[slot]
            (frames, recorded), t = s["clip"], s["t"]
            s["following"] &= torch.equal(recorded[t], k.bool())
            if s["following"]:
                s["last"] = frames[t]
            out.append(s["last"])
            s["t"] += 1
        return torch.stack(out)


def test_a_world_that_equals_the_data_scores_100_db_above_copy_last(game_data):
    cfg = DataEvalConfig(horizons=(1, 8, 16), action=False)
    r = evaluate_dataset(ReplayWorld(game_data, world_batch(game_data, cfg)), game_data, cfg, progress=False)
    assert r["psnr"] == {"1": 100.0, "8": 100.0, "16": 100.0} and set(r["ssim"].values()) == {1.0}
    assert all(m > 0 for m in r["margin_over_copy_last"].values())
    assert r["motion"]["ratio"] == 1.0
    # the shuffled rows (another clip's keys) fall back to copy-last: the keys matter, every horizon passes
    assert r["controllability"]["pass"] is True and r["pass"]["all"] is True


def test_cartpole_stops_each_clip_at_its_episode_reset(cartpole_data, tmp_path):
    ckpt = random_checkpoint(
        tmp_path / "cartpole.safetensors", start=False, key_names=cartpole_data.key_names
    )
    js = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--data", str(cartpole_data.path), "--device", "cpu",
            "--horizons", "1", "4", "8", "16", "--idm-steps", "20", "--out", str(tmp_path / "e"), "--json", str(js)]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(js.read_text())
    assert is_one_hot(cartpole_data) and r["action_accuracy"]["one_hot"] is True
    assert r["episode_resets"]["source"] == RESETS_FROM_READER
    # a clip counts at horizon h while no frame in (last context frame, h] begins a new episode
    expected = {}
    for h in (1, 4, 8, 16):
        n = 0
        for i in cartpole_data.split("heldout"):
            keys = cartpole_data.clip(int(i), 0, cartpole_data.frames)[1]
            n += not (~keys[CONTEXT : CONTEXT + h].any(1)).any()
        if n:
            expected[str(h)] = n
    assert r["clips"] == expected and list(r["psnr"]) == list(expected)
    assert all(0 < v < 100 for v in r["psnr"].values())


def test_eval_data_on_an_atari_game(tmp_path):
    """Breakout (ale-py, when installed): 12 clips of 24 frames at 32x32, one-hot over its 4 actions."""
    ale_py = pytest.importorskip("ale_py")
    import gymnasium

    from worldsim.data.gym import collect_env

    gymnasium.register_envs(ale_py)
    ds = Dataset(
        collect_env("ALE/Breakout-v5", tmp_path / "breakout", clips=12, frames=24, size=32, progress=False)
    )
    ckpt = random_checkpoint(tmp_path / "breakout.safetensors", start=False, key_names=ds.key_names)
    js = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--data", str(ds.path), "--device", "cpu", "--horizons", "1", "8",
            "--idm-steps", "10", "--json", str(js), "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(js.read_text())
    assert r["dataset"]["manifest"]["key_names"] == ds.key_names and len(ds.key_names) == 4
    assert r["action_accuracy"]["one_hot"] is True and r["episode_resets"]["source"] == RESETS_FROM_READER
    held = ds.split("heldout")
    assert r["baseline_copy_last"]["psnr"]["1"] == pytest.approx(_copy_last(ds, held, 1), abs=1e-3)


def test_checkpoint_and_dataset_must_match(game_checkpoint, cartpole_data, tmp_path, capsys):
    base = ["eval", "--checkpoint", str(game_checkpoint), "--device", "cpu", "--no-action"]
    assert main([*base, "--data", str(cartpole_data.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'forward'" in err and "'action_0'" in err
    big = collect_game(tmp_path / "big", clips=2, frames=8, size=64, batch=2, progress=False)
    assert main([*base, "--data", str(big)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "32x32" in err and "64x64" in err


def test_eval_data_flags_are_checked(game_checkpoint, game_data, capsys):
    base = ["eval", "--checkpoint", str(game_checkpoint), "--device", "cpu", "--no-action"]
    for extra in (["--data", str(game_data.path), "--context", "24"],  # no frame left to score
                  ["--data", str(game_data.path), "--horizons", "64"],  # past the clips' end
                  ["--data", str(game_data.path), "--quick"],  # a game-eval flag
                  ["--context", "2"],  # a dataset flag without --data
                  ["--data", str(game_data.path), "--episodes", "0"]):  # fmt: skip
        assert main([*base, *extra]) == 2, extra
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_dataset_idm_reads_game_keys_from_motion_above_chance(game_data):
    """300 CPU steps (about 3 s at 32x32) on the training clips: far above ignoring the frames."""
    _, info = train_dataset_idm(game_data, steps=300, batch=32)
    r = info["heldout_real"]
    assert info["one_hot"] is False and r["pairs"] == 8 * 23
    assert r["exact"] > r["chance"]["exact"] + 0.2 and r["per_key"] > r["chance"]["per_key"]


def test_one_hot_accuracy_is_argmax_accuracy_and_chance_ignores_frames():
    keys = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = torch.tensor([[2.0, -1.0, -0.5], [-1.0, -0.5, -2.0], [0.0, -1.0, 1.0], [-3.0, -2.0, -1.0]])
    # argmax: right, right (all logits < 0: multi-hot would say no key), wrong, right
    assert accuracy(logits, keys, one_hot=True)["exact"] == 0.75
    assert accuracy(logits, keys)["exact"] == 0.25  # multi-hot: only row 0 has exactly its key > 0
    assert chance_accuracy(keys) == {"per_key": round((0.75 + 0.5 + 0.75) / 3, 4), "exact": 0.5, "pairs": 4}


def test_resets_come_from_one_hot_keys_or_nowhere(game_data, cartpole_data):
    assert not is_one_hot(game_data)
    keys = np.eye(2, dtype=bool)[[0, 1, 1, 0, 1]]
    keys[[0, 3]] = False  # a clip that opens on a reset frame, and a reset at frame 3
    # a v2 dataset's own reset record wins over the keys
    r, source = episode_resets(cartpole_data, 0, keys, one_hot=True)
    want = cartpole_data.episodes(0)[1].copy()
    want[0] = False
    assert source == RESETS_FROM_READER and r.tolist() == want.tolist()

    class V1:  # a v1 folder's reader: no reset record
        meta = {"version": 1}

    r, source = episode_resets(V1(), 0, keys, one_hot=True)
    assert source == RESETS_FROM_KEYS and r.tolist() == [False, False, False, True, False]
    r, source = episode_resets(V1(), 0, keys, one_hot=False)
    assert source == RESETS_NONE and not r.any()
