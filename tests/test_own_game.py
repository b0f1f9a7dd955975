"""The README's own-game path, end to end through the command line: collect a Gymnasium env -> train the
autoencoder and the teacher on the dataset -> export -> eval on its held-out clips -> play headless.
CartPole installs with gymnasium; Breakout runs where ale-py is installed (the `atari` extra)."""

import json

import pytest

from worldsim.checkpoint import load_checkpoint
from worldsim.cli import main

TRAIN = ["--preset", "test", "--device", "cpu", "--no-progress", "--steps", "3", "--batch", "2"]


def _pipeline(tmp_path, env: str, size: int, ae_flags=(), teacher_flags=()) -> tuple[dict, object, str]:
    data, ae, run, ckpt = (
        tmp_path / "data",
        tmp_path / "ae",
        tmp_path / "teacher",
        tmp_path / "mine.safetensors",
    )
    assert main(["collect", "--env", env, "--out", str(data), "--clips", "20", "--frames", "16",
                 "--size", str(size), "--seed", "3"]) == 0  # fmt: skip
    assert main(["train", "autoencoder", *TRAIN, *ae_flags, "--data", str(data), "--heldout", "4",
                 "--out", str(ae)]) == 0  # fmt: skip
    assert main(["train", "teacher", *TRAIN, *teacher_flags, "--data", str(data), "--autoencoder",
                 str(ae / "autoencoder.pt"), "--store-trajectories", "3", "--refresh-every", "0",
                 "--out", str(run)]) == 0  # fmt: skip
    assert main(["train", "export", str(run / "teacher.pt"), str(ckpt), "--int8"]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--horizons", "1",
                 "4", "8", "--context", "4", "--idm-steps", "20", "--json", str(out),
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    return json.loads(out.read_text()), load_checkpoint(ckpt), str(ckpt)


def _check(result: dict, ckpt, path: str, env: str, keys: tuple[str, ...], capsys) -> None:
    assert ckpt.config.key_names == keys and ckpt.metrics["teacher"]["dataset"]["env"] == env
    # scored on the held-out clip(s) against copy-last, by horizon, with the dataset's manifest
    assert set(result["psnr"]) == {"1", "4", "8"} and set(result["baseline_copy_last"]["psnr"]) == {
        "1",
        "4",
        "8",
    }
    assert result["dataset"]["manifest"]["env"] == env
    assert result["action_accuracy"]["real"]["pairs"] > 0
    capsys.readouterr()
    # the trained model plays headless from its own start frames, one action a frame
    assert main(["play", "--checkpoint", path, "--headless", "--frames", "20", "--device", "cpu"]) == 0
    assert "frames" in capsys.readouterr().out


def test_cartpole_collect_train_eval_play(tmp_path, capsys):
    result, ckpt, path = _pipeline(tmp_path, "CartPole-v1", 32)
    _check(result, ckpt, path, "CartPole-v1", ("action_0", "action_1"), capsys)


def test_breakout_collect_train_eval_play(tmp_path, capsys):
    pytest.importorskip("ale_py")
    # the recipe for a game where little moves (the ball is a pixel): a wider latent, half of the
    # autoencoder's and the teacher's loss on what moves; the teacher, export and play follow it
    result, ckpt, path = _pipeline(tmp_path, "ALE/Breakout-v5", 32,
                                   ae_flags=("--latent-channels", "8", "--motion-share", "0.5"),
                                   teacher_flags=("--motion-share", "0.5"))  # fmt: skip
    assert ckpt.config.autoencoder.latent_channels == 8
    assert ckpt.metrics["autoencoder"]["motion_share"] == 0.5
    _check(result, ckpt, path, "ALE/Breakout-v5", ("NOOP", "FIRE", "RIGHT", "LEFT"), capsys)
