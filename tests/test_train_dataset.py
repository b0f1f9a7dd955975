"""Every trainer on a dataset (`--data DIR`): collect CartPole -> autoencoder -> teacher -> export, the
checkpoint carrying the dataset's keys, frame size and manifest, and a neural world stepping on them."""

import json

import numpy as np
import pytest
import torch

from worldsim.checkpoint import load_checkpoint
from worldsim.cli import main as cli_main
from worldsim.data import Dataset, DatasetWriter

TRAIN = ["--preset", "test", "--device", "cpu", "--no-progress", "--steps", "2", "--batch", "2"]


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp") / "data"
    argv = ["collect", "--env", "CartPole-v1", "--out", str(out), "--clips", "10", "--frames", "16", "--size",
            "32", "--seed", "1"]  # fmt: skip
    assert cli_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def autoencoder(cartpole, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    assert (
        cli_main(
            ["train", "autoencoder", *TRAIN, "--data", str(cartpole), "--heldout", "8", "--out", str(out)]
        )
        == 0
    )
    return out


def test_autoencoder_trains_on_the_datasets_frames(autoencoder, cartpole):
    m = json.loads((autoencoder / "autoencoder.json").read_text())
    assert m["image_size"] == [32, 32] and m["heldout_frames"] == 8
    assert m["dataset"]["env"] == "CartPole-v1" and m["dataset"]["path"] == str(cartpole)


def test_autoencoder_takes_the_datasets_frame_size(tmp_path):
    rng = np.random.default_rng(0)
    wr = DatasetWriter(tmp_path / "d", key_names=["a"], height=16, width=16, frames=2, source="t")
    wr.add(rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8), np.zeros((4, 2, 1), bool))
    wr.close()
    out = tmp_path / "ae"
    assert cli_main(["train", "autoencoder", *TRAIN, "--data", str(tmp_path / "d"), "--heldout", "2",
                     "--out", str(out)]) == 0  # fmt: skip
    state = torch.load(out / "autoencoder.pt", weights_only=True)
    assert state["config"]["image_size"] == 16, "the test preset's 32x32 became the dataset's 16x16"


def test_teacher_and_export_carry_the_datasets_keys_and_manifest(autoencoder, cartpole, tmp_path, capsys):
    from worldsim.neural import NeuralWorld

    run = tmp_path / "teacher"
    argv = ["train", "teacher", *TRAIN, "--autoencoder", str(autoencoder / "autoencoder.pt"), "--data",
            str(cartpole), "--store-trajectories", "3", "--refresh-every", "0", "--out", str(run)]  # fmt: skip
    assert cli_main(argv) == 0
    m = json.loads((run / "teacher.json").read_text())
    assert m["dataset"]["key_names"] == ["action_0", "action_1"] and m["data"]["length"] == 16
    ckpt_path = tmp_path / "cartpole.safetensors"
    assert cli_main(["train", "export", str(run / "teacher.pt"), str(ckpt_path)]) == 0
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.config.key_names == ("action_0", "action_1") and ckpt.config.image_hw == (32, 32)
    assert ckpt.metrics["teacher"]["dataset"]["env"] == "CartPole-v1"
    card = ckpt_path.with_suffix(".md").read_text()
    assert "`CartPole-v1` (dataset)" in card and "| keys | action_0, action_1 |" in card
    assert "- Data: dataset `data` (format v2): gymnasium env=CartPole-v1" in card
    assert "episode-start frames of the dataset" in card

    # the start latents encode the dataset's episode starts (its reset frames), not the game's spawns
    ds = Dataset(cartpole)
    starts = torch.load(run / "teacher.pt", weights_only=True)["start_frames"]["frames"]
    i = next(int(i) for i in ds.split("train") if ds.episodes(int(i))[1].any())
    t = int(np.flatnonzero(ds.episodes(i)[1])[0])
    assert starts.shape == (16, 32, 32, 3) and np.array_equal(starts[0].numpy(), ds.clip(i, t, 1)[0][0])
    assert ckpt.tensors["start"]["latents"].shape[0] == 16
    world = NeuralWorld.from_checkpoint(ckpt_path, device="cpu", steps=1)
    assert world.key_names == ("action_0", "action_1")
    first = world.reset(0)
    assert first.shape[-3:] == (32, 32, 3)
    frame = world.step(torch.tensor([[False, True]]))
    assert frame.shape == first.shape and frame.dtype == torch.uint8
    capsys.readouterr()

    # a dataset with other keys cannot continue this model
    other = tmp_path / "other"
    wr = DatasetWriter(other, key_names=["a", "b", "c"], height=32, width=32, frames=16, source="t")
    wr.add(np.zeros((3, 16, 32, 32, 3), np.uint8), np.zeros((3, 16, 3), bool))
    wr.close()
    argv = [
        "train",
        "teacher",
        *TRAIN,
        "--init",
        str(ckpt_path),
        "--data",
        str(other),
        "--out",
        str(tmp_path / "t2"),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "--data" in err
        and "['a', 'b', 'c'] differ from the keys of --init" in err
        and len(err.splitlines()) == 1
    )
    assert ds.key_names == ["action_0", "action_1"]


def test_a_breakout_dataset_gives_a_teacher_of_its_four_actions(autoencoder, tmp_path):
    pytest.importorskip("ale_py")
    data = tmp_path / "breakout"
    argv = ["collect", "--env", "ALE/Breakout-v5", "--out", str(data), "--clips", "8", "--frames", "12",
            "--size", "32"]  # fmt: skip
    assert cli_main(argv) == 0
    run = tmp_path / "teacher"
    argv = ["train", "teacher", *TRAIN, "--autoencoder", str(autoencoder / "autoencoder.pt"), "--data", str(data),
            "--store-trajectories", "2", "--refresh-every", "0", "--out", str(run)]  # fmt: skip
    assert cli_main(argv) == 0
    state = torch.load(run / "teacher.pt", weights_only=True)
    assert state["config"]["key_names"] == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    from worldsim.model.config import ModelConfig

    cfg = ModelConfig.from_dict(state["config"])
    assert cfg.num_keys == 4 and state["metrics"]["dataset"]["env"] == "ALE/Breakout-v5"


def test_a_student_of_a_dataset_starts_from_the_datasets_episodes(autoencoder, cartpole, tmp_path, capsys):
    """The exported student's start latents are its dataset's episode starts, as its teacher's are (the
    student export once wrote the raycaster's spawns for every student: a Breakout model started from
    walls and floor encoded by Breakout's autoencoder)."""
    from worldsim.train.export import start_latents

    run = tmp_path / "teacher"
    argv = ["train", "teacher", *TRAIN, "--autoencoder", str(autoencoder / "autoencoder.pt"), "--data",
            str(cartpole), "--store-trajectories", "3", "--refresh-every", "0", "--out", str(run)]  # fmt: skip
    assert cli_main(argv) == 0
    teacher_ckpt = tmp_path / "t.safetensors"
    assert cli_main(["train", "export", str(run / "teacher.pt"), str(teacher_ckpt)]) == 0
    sf = ["train", "self-forcing", "--device", "cpu", "--no-progress", "--steps", "1", "--batch", "1",
          "--frames", "2", "--context-frames", "1", "--critic-steps", "1"]  # fmt: skip
    want = load_checkpoint(teacher_ckpt).tensors["start"]["latents"].float()
    for i, source in enumerate((run / "teacher.pt", teacher_ckpt)):  # a teacher state or a checkpoint
        student = tmp_path / f"s{i}.safetensors"
        argv = [*sf, "--teacher", str(source), "--data", str(cartpole), "--out", str(tmp_path / f"sf{i}"),
                "--export", str(student)]  # fmt: skip
        assert cli_main(argv) == 0
        got = load_checkpoint(student).tensors["start"]["latents"].float()
        # the same frames through the same autoencoder (read back from bf16 for a checkpoint teacher)
        assert got.shape == want.shape and torch.allclose(got, want, atol=0.05), source
    # without --data a dataset's teacher has no game to roll out: one line that names the flag
    assert cli_main([*sf, "--teacher", str(teacher_ckpt), "--out", str(tmp_path / "nodata")]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert not (tmp_path / "nodata").exists()
    ae = load_checkpoint(teacher_ckpt)
    from worldsim.model.autoencoder import Autoencoder

    model = Autoencoder(ae.config.autoencoder)
    model.load_state_dict(ae.float_state("autoencoder"))
    spawns = start_latents(model, [0])[1]
    assert (spawns[0] - want[0]).abs().mean() > 0.1, "the raycaster's spawn encodes unlike a CartPole start"


def test_a_dataset_teacher_resumes_from_its_compact_state_elsewhere(autoencoder, cartpole, tmp_path):
    """The compact state (what comes back from a GPU machine) of a `--data` run carries the episode-start
    frames as uint8; a fresh folder holding only it continues the run, start frames and all."""
    import shutil

    run = tmp_path / "a"
    argv = ["train", "teacher", *TRAIN, "--autoencoder", str(autoencoder / "autoencoder.pt"), "--data",
            str(cartpole), "--store-trajectories", "3", "--refresh-every", "0", "--out", str(run)]  # fmt: skip
    assert cli_main(argv) == 0
    moved = tmp_path / "b"
    moved.mkdir()
    shutil.copy(run / "teacher.state.safetensors", moved)
    argv = ["train", "teacher", "--resume", "--device", "cpu", "--no-progress", "--steps", "3", "--data",
            str(cartpole), "--store-trajectories", "3", "--refresh-every", "0", "--out", str(moved)]  # fmt: skip
    assert cli_main(argv) == 0
    a = torch.load(run / "teacher.pt", weights_only=True)
    b = torch.load(moved / "teacher.pt", weights_only=True)
    assert b["step"] == 3 and torch.equal(a["start_frames"]["frames"], b["start_frames"]["frames"])
