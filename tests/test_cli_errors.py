"""Mistakes on the command line end in one line naming the flag, the value and the fix, with exit code 2:
bad devices on every verb, CUDA on a CPU-only torch, frame sizes that would exhaust memory, negative
seeds, and the hints of train and eval flags."""

import pytest
import torch

from worldsim.cli import main
from worldsim.errors import UserError
from worldsim.game import GameWorld

CPU_ONLY = torch.version.cuda is None and torch.version.hip is None


def _fails(capsys, argv: list[str], *expected: str) -> str:
    """Run `worldsim argv`: exit code 2 and one error line holding every `expected` string."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith(f"worldsim {argv[0]}: error: "), err
    for s in expected:
        assert s in line, line
    return line


VERBS = {
    "play": ["play", "--world", "game", "--headless", "--frames", "1"],
    "eval": ["eval", "--quick"],
    "bench": ["bench", "--seconds", "0.1"],
    "collect": ["collect", "--out", "{tmp}/ds", "--clips", "1", "--frames", "2"],
    "serve": ["serve", "--world", "game"],
    "train": ["train", "autoencoder", "--preset", "test", "--out", "{tmp}/ae"],
    "verify": ["verify", "{tmp}/x.wsrec"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("device", ["bogus", "meta", "cuda:x"])
def test_every_verb_refuses_a_bad_device_in_one_line(tmp_path, capsys, verb, device):
    argv = [a.format(tmp=tmp_path) for a in VERBS[verb]] + ["--device", device]
    _fails(capsys, argv, f"--device {device}", "cpu")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ae").exists()  # refused before any work


@pytest.mark.skipif(not CPU_ONLY, reason="needs a CPU-only build of torch")
@pytest.mark.parametrize("argv", [VERBS["play"], ["bench", "--world", "neural", "--seconds", "0.1"]])
def test_cuda_on_a_cpu_only_torch_says_so(capsys, argv):
    _fails(capsys, [*argv, "--device", "cuda"], "--device cuda", "CPU-only build", "--device cpu")


@pytest.mark.parametrize(
    "argv",
    [
        ["play", "--world", "game", "--headless", "--frames", "1"],
        ["bench", "--world", "game", "--seconds", "0.1"],
        ["collect", "--out", "{tmp}/ds", "--clips", "1", "--frames", "2"],
        ["serve", "--world", "game", "--bind", "tcp://127.0.0.1:0"],
    ],
)
def test_frame_sizes_are_bounded_before_anything_is_allocated(tmp_path, capsys, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    for size in ("100000", "4"):
        _fails(capsys, [*argv, "--size", size], f"--size {size}", "8 to 1024 pixels")
    with pytest.raises(ValueError, match="1 to 1024 pixels"):
        GameWorld(size=100_000)
    with pytest.raises(ValueError, match="1 to 1024 pixels"):
        GameWorld(size=(64, 0))


def test_play_refuses_a_negative_seed_at_once(capsys):
    _fails(capsys, [*VERBS["play"], "--seed", "-1"], "--seed -1", "must be in [0, ")


def test_train_hints_name_the_flag_that_was_given(tmp_path, capsys):
    out = str(tmp_path / "t")
    teacher = ["train", "teacher", "--preset", "test", "--device", "cpu", "--out", out, "--no-progress"]
    line = _fails(capsys, [*teacher, "--autoencoder", str(tmp_path / "nope.pt")], "--autoencoder", "nope.pt")
    assert "--resume" not in line
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00 not a train state " * 20)
    line = _fails(
        capsys, [*teacher, "--autoencoder", str(junk)], "--autoencoder", "junk.pt", "not a readable"
    )
    assert "--out" not in line
    # the resume hints stay where they fit
    ae = ["train", "autoencoder", "--preset", "test", "--device", "cpu", "--out", out, "--resume"]
    _fails(capsys, ae, "drop --resume")


def test_load_state_hint_follows_the_flag(tmp_path):
    from worldsim.train.common import load_state

    with pytest.raises(UserError, match=r"^--teacher: no train state at .*pass the \.pt file"):
        load_state(tmp_path / "none.pt", flag="--teacher")
    with pytest.raises(UserError, match=r"^--resume: .*train first or drop --resume"):
        load_state(tmp_path / "none.pt")


@pytest.mark.parametrize(
    "flag, value", [("--sequences", "0"), ("--idle-frames", "0"), ("--long-frames", "-1"), ("--steps", "0")]
)
def test_eval_names_its_flags_not_the_config_fields(capsys, flag, value):
    line = _fails(capsys, ["eval", "--quick", "--device", "cpu", flag, value], f"{flag} must be >=", value)
    assert "EvalConfig" not in line


def test_context_noise_flag_is_for_the_neural_world_and_checked(capsys):
    from worldsim.cli import main

    assert main(["play", "--world", "game", "--headless", "--frames", "2", "--context-noise", "0.1"]) == 2
    assert "--context-noise is for the neural world" in capsys.readouterr().err
    assert main(["play", "--checkpoint", "tiny-student", "--headless", "--frames", "2", "--device", "cpu",
                 "--context-noise", "1.5"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "context_noise must be in [0, 1)" in err and len(err.splitlines()) == 1
