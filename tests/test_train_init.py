"""`--init` / `--teacher` from every shipped checkpoint (8-bit or float) trains on CPU and starts from the
checkpoint's own weights: one step at a learning rate too small to move a weight (1e-12: AdamW moves each
weight by ~lr a step), then the saved weights must equal the checkpoint's `float_state`. A load that kept
the random init, or dropped the int8 scales, is off by the weights' own size (~1e-2), far past 1e-6."""

import pytest
import torch
from models import train_args

from worldsim.checkpoint import load_checkpoint
from worldsim.train import autoencoder as ae_train
from worldsim.train import self_forcing, teacher

TINY_LR = 1e-12
ATOL = 1e-6  # the step's ~1e-12 move plus fp32 rounding of the folded int8 x scale


def assert_same_weights(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.allclose(got[k].float(), v.float(), atol=ATOL, rtol=0), k


def _state(path):
    return torch.load(path, weights_only=True, map_location="cpu")


# a 1-step run on the smallest data: 1 clip of 2 frames, a store of one 4-frame trajectory
SMALL_TEACHER = dict(steps=1, batch=1, clip_frames=2, store_trajectories=1, store_length=4, lr=TINY_LR)


@pytest.mark.parametrize("name", ["tiny", "tiny-student"])
def test_teacher_init_starts_from_shipped_checkpoint(name, tmp_path):
    ckpt = load_checkpoint(name)
    m = teacher.train(train_args(teacher, tmp_path, init=name, **SMALL_TEACHER))
    assert m["steps"] == 1 and m["preset"] == ckpt.config.name and m["init"] == name
    state = _state(tmp_path / "teacher.pt")
    assert state["config"] == ckpt.config.to_dict()  # the checkpoint's config, not --preset test's
    assert_same_weights(state["model"], ckpt.float_state("dit"))
    assert_same_weights(state["ema"], ckpt.float_state("dit"))
    assert_same_weights(state["autoencoder"], ckpt.float_state("autoencoder"))


def test_shipped_checkpoints_differ_so_the_init_tests_can_tell_them_apart():
    a, b = load_checkpoint("tiny").float_state("dit"), load_checkpoint("tiny-student").float_state("dit")
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 100 * ATOL


SMALL_SF = dict(steps=1, batch=1, frames=2, context_frames=1, critic_steps=1, lr=TINY_LR, critic_lr=TINY_LR)


def test_self_forcing_from_shipped_teacher(tmp_path):
    ckpt = load_checkpoint("tiny")
    self_forcing.train(train_args(self_forcing, tmp_path, teacher="tiny", **SMALL_SF))
    state = _state(tmp_path / "self_forcing.pt")
    assert state["step"] == 1
    want = ckpt.float_state("dit")
    assert_same_weights(state["teacher"], want)
    assert_same_weights(state["model"], want)  # the student starts as the teacher
    assert_same_weights(state["critic"], want)


def test_self_forcing_init_from_shipped_student(tmp_path):
    self_forcing.train(train_args(self_forcing, tmp_path, teacher="tiny", init="tiny-student", **SMALL_SF))
    state = _state(tmp_path / "self_forcing.pt")
    assert_same_weights(state["teacher"], load_checkpoint("tiny").float_state("dit"))
    assert_same_weights(state["model"], load_checkpoint("tiny-student").float_state("dit"))
    assert_same_weights(state["critic"], load_checkpoint("tiny").float_state("dit"))  # critic: the teacher


@pytest.mark.parametrize("name", ["tiny"])
def test_autoencoder_init_from_shipped_checkpoint(name, tmp_path):
    ckpt = load_checkpoint(name)
    m = ae_train.train(train_args(ae_train, tmp_path, init=name, steps=1, batch=1, heldout=4, lr=TINY_LR))
    assert m["image_size"] == list(ckpt.config.autoencoder.hw) and m["init"] == name
    state = _state(tmp_path / "autoencoder.pt")
    want = ckpt.float_state("autoencoder")
    # the run re-measures the latent statistics on its held-out frames at the end: all else is the file's
    stats = {k for k in want if k.startswith("latent_")}
    assert stats, sorted(want)
    assert_same_weights({k: v for k, v in state["model"].items() if k not in stats},
                        {k: v for k, v in want.items() if k not in stats})  # fmt: skip
    # before the step the held-out PSNR is a trained autoencoder's: the shipped ones measured 31-37 dB on
    # 256 frames (27-37 dB on these 4), an untrained one reconstructs at ~9 dB
    assert state["evals"][0][1] > 20.0, state["evals"]


def test_student_budget_adds_up_over_init_runs_and_reaches_the_card(tmp_path):
    from worldsim.train.sf_state import export_student, prior_budget

    prior = prior_budget(load_checkpoint("tiny-student").metrics["self_forcing"])
    assert prior and prior["steps"] > 0
    a = self_forcing.train(
        train_args(self_forcing, tmp_path / "a", teacher="tiny", init="tiny-student", **SMALL_SF)
    )
    assert a["budget"]["steps"] == prior["steps"] + 1 and a["budget"]["runs"] == prior["runs"] + 1
    assert a["budget_before"] == prior and not a["in_progress"]
    exported = export_student(tmp_path / "a" / "self_forcing.pt", tmp_path / "a.safetensors")
    card = exported.with_suffix(".md").read_text()
    assert f"{prior['steps'] + 1} generator steps" in card and f"{prior['runs'] + 1} run(s)" in card
    b = self_forcing.train(
        train_args(self_forcing, tmp_path / "b", teacher="tiny", init=str(exported), **SMALL_SF)
    )
    assert b["budget"]["steps"] == prior["steps"] + 2 and b["budget"]["runs"] == prior["runs"] + 2
