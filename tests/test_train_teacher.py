import pytest
import torch
from models import train_args

from worldsim.errors import UserError
from worldsim.train import flow, teacher
from worldsim.train.export import START_SEEDS, export


def test_sample_t_mixes_context_levels_and_shifts():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_t((4000, 8), shift=1.0, context_prob=0.5, context_max=0.1, device="cpu", generator=g)
    assert t.shape == (4000, 8) and t.min() >= 0 and t.max() <= 1
    assert 0.45 < (t <= 0.1).float().mean() < 0.6  # half the frames at a context level (+ logit-normal tail)
    t3 = flow.sample_t((4000, 8), shift=3.0, context_prob=0.0, context_max=0.1, device="cpu", generator=g)
    t1 = flow.sample_t((4000, 8), shift=1.0, context_prob=0.0, context_max=0.1, device="cpu", generator=g)
    assert (
        t3.mean() > t1.mean() + 0.1
    )  # shift > 1 trains more at high noise, as the deployed schedule samples


@pytest.fixture(scope="module")
def teacher_run(ae_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    # live clips (rendered and encoded every step): the path this learning criterion was set on; the store
    # has a test of its own below
    m = teacher.train(train_args(teacher, out, autoencoder=ae_path, steps=40, batch=4, lr=3e-3, log_every=20,
                                 source="live"))  # fmt: skip
    return out, m


def test_teacher_loss_falls_on_game_clips(teacher_run):
    out, m = teacher_run
    state = torch.load(out / "teacher.pt", weights_only=True)
    assert state["step"] == 40 and m["clip_frames"] > m["window"]  # the window slides inside a clip
    losses = state["history"]["loss"]
    assert sum(losses[-2:]) / 2 < 0.85 * losses[0], losses
    vals = [v for _, v in state["evals"]]  # EMA validation loss on fixed held-out clips, noise and levels
    assert vals[-1] < vals[0], vals
    assert (out / "teacher_loss.png").stat().st_size > 1000
    assert state["autoencoder_metrics"]["preset"] == "test"


def test_teacher_learns_from_the_latent_store(ae_path, tmp_path):
    """The default data source: windows of 8 stored trajectories. One step's loss at batch 4 swings by
    +-15% with the clips drawn, so the criterion is the EMA validation loss (fixed held-out clips, noise
    and levels: it fell 26-30% over 40 steps for seeds 0-2) and the mean of the last two logged losses
    against the first two."""
    m = teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, steps=40, batch=4, lr=3e-3,
                                 log_every=20, store_trajectories=8, store_length=32))  # fmt: skip
    assert m["data"]["source"] == "store" and m["data"]["trajectories"] == 8
    state = torch.load(tmp_path / "teacher.pt", weights_only=True)
    losses = state["history"]["loss"]
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    vals = [v for _, v in state["evals"]]
    assert vals[-1] < 0.85 * vals[0], vals


def test_export_round_trip(teacher_run, tmp_path):
    from worldsim.checkpoint import load_checkpoint
    from worldsim.neural import NeuralWorld

    out, _ = teacher_run
    state = torch.load(out / "teacher.pt", weights_only=True)
    path = export(out / "teacher.pt", tmp_path / "test.safetensors")
    ck = load_checkpoint(path)
    assert ck.config.to_dict() == state["config"]
    for k, v in state["ema"].items():  # the EMA weights, matrices stored in bf16, vectors exact
        want = v.to(torch.bfloat16) if v.is_floating_point() and v.ndim >= 2 else v
        assert torch.equal(ck.tensors["dit"][k], want), k
    assert torch.equal(ck.tensors["autoencoder"]["latent_std"], state["autoencoder"]["latent_std"])
    C, (h, w) = ck.config.latent_channels, ck.config.latent_hw
    assert ck.tensors["start"]["latents"].shape == (START_SEEDS, C, h, w)
    assert ck.metrics["teacher"]["steps"] == 40 and ck.metrics["autoencoder"]["heldout_psnr_db"] > 0

    world = NeuralWorld.from_checkpoint(str(path), device="cpu", batch_size=2)
    frames = world.reset([0, 1])
    assert frames.shape == (2, *ck.config.image_hw, 3) and frames.dtype == torch.uint8
    assert world.step(torch.zeros(2, world.num_keys, dtype=torch.bool)).shape == frames.shape
    card = path.with_suffix(".md").read_text()
    assert "held-out PSNR" in card and str(ck.metrics["autoencoder"]["heldout_psnr_db"]) in card


def test_teacher_resume_continues_from_saved_step(ae_path, tmp_path):
    teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, steps=6, batch=2, lr=1e-3, ckpt_every=3))
    first = torch.load(tmp_path / "teacher.pt", weights_only=True)
    with pytest.raises(UserError, match="--resume"):
        teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, steps=9, batch=2))
    teacher.train(train_args(teacher, tmp_path, steps=9, batch=2, lr=5e-2, resume=True))
    second = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert second["step"] == 9
    assert second["history"]["step"][: len(first["history"]["step"])] == first["history"]["step"]
    assert second["hparams"]["lr"] == 1e-3  # the run's own hyperparameters win on resume
    # the optimizer went on from its saved state (Adam's step count), not from a fresh one
    assert all(int(st["step"]) == 9 for st in second["opt"]["state"].values())
