import json
import subprocess
import sys

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


def test_export_verb_writes_the_bf16_and_the_8bit_file_with_cards(teacher_run, tmp_path, capsys):
    """`worldsim train export STATE OUT --int8 --eval-json F`: OUT is the 8-bit file that ships, made from
    the bf16 export beside it; each has its card; one "wrote" line per file; both play."""
    from worldsim.checkpoint import load_checkpoint
    from worldsim.cli import main
    from worldsim.neural import NeuralWorld

    out, _ = teacher_run
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"psnr": {"1": 21.5}, "ssim": {"1": 0.5}, "device": "cpu"}))
    ship = tmp_path / "mine.safetensors"
    assert (
        main(["train", "export", str(out / "teacher.pt"), str(ship), "--int8", "--eval-json", str(ev)]) == 0
    )
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    bf16 = tmp_path / "mine-bf16.safetensors"
    assert len(wrote) == 2 and str(bf16) in wrote[0] and str(ship) in wrote[1], wrote
    full, small = load_checkpoint(bf16), load_checkpoint(ship)
    assert small.metrics["weights"] == "int8" and small.metrics["quantized_from"] == full.sha256
    assert small.metrics["eval"]["psnr"] == {"1": 21.5} and small.config.to_dict() == full.config.to_dict()
    assert any(t.dtype == torch.int8 for t in small.tensors["dit"].values())
    assert not any(t.dtype == torch.int8 for t in full.tensors["dit"].values())
    assert "8 bits" in ship.with_suffix(".md").read_text() and "21.5" in ship.with_suffix(".md").read_text()
    assert "8 bits" not in bf16.with_suffix(".md").read_text()
    # --int8-group G: the blocks' linears int8 per G input columns, read back as floats; its card says so
    grouped = tmp_path / "grouped.safetensors"
    assert (
        main(["train", "export", str(out / "teacher.pt"), str(grouped), "--int8", "--int8-group", "16"]) == 0
    )
    g = load_checkpoint(grouped)
    assert (
        g.metrics["weights"] == "int8-g16"
        and "one scale per 16 input columns" in grouped.with_suffix(".md").read_text()
    )
    assert not any(t.dtype == torch.int8 for t in g.tensors["dit"].values()), "read back as floats"
    # --context-noise T: the deployed cache-write level goes into the file's config (the run's was 0),
    # and a world loaded from it writes its frames there
    noised = tmp_path / "noised.safetensors"
    assert main(["train", "export", str(out / "teacher.pt"), str(noised), "--context-noise", "0.1"]) == 0
    assert full.config.context_noise == 0.0 and load_checkpoint(noised).config.context_noise == 0.1
    assert "context noise 0.1" in noised.with_suffix(".md").read_text()
    assert NeuralWorld.from_checkpoint(str(noised), device="cpu", batch_size=1).cfg.context_noise == 0.1
    for path in (bf16, ship, grouped, noised):
        world = NeuralWorld.from_checkpoint(str(path), device="cpu", batch_size=1)
        frames = world.reset([0])
        assert world.step(torch.zeros(1, world.num_keys, dtype=torch.bool)).shape == frames.shape


def test_export_module_entry_point_still_works(teacher_run, tmp_path):
    from worldsim.checkpoint import load_checkpoint

    out, _ = teacher_run
    target = tmp_path / "plain.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "worldsim.train.export", str(out / "teacher.pt"), str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("wrote ") == 1 and "wrote" not in run.stderr  # once, not also in a log line
    assert target.with_suffix(".md").is_file() and load_checkpoint(target).metrics["teacher"]["steps"] == 40


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["/nonexistent/teacher.pt", "x.safetensors"], "STATE"),
        (["STATE", "x.safetensors", "--eval-json", "/nonexistent/eval.json"], "--eval-json"),
        (["STATE", "x.safetensors", "--int8", "--card-only"], "--card-only"),
        (["STATE", "x.safetensors", "--int8-group", "32"], "--int8-group"),
        (["STATE", "x.safetensors", "--int8", "--int8-group", "0"], "--int8-group"),
        (["STATE", "x.safetensors", "--context-noise", "1.5"], "--context-noise 1.5"),
        (["STATE", "x.safetensors", "--card-only", "--context-noise", "0.1"], "--context-noise"),
    ],
)
def test_export_verb_bad_input_is_a_one_line_error(teacher_run, tmp_path, argv, flag, capsys):
    from worldsim.cli import main

    argv = [str(teacher_run[0] / "teacher.pt") if a == "STATE" else a for a in argv]
    argv = [str(tmp_path / a) if a == "x.safetensors" else a for a in argv]
    assert main(["train", "export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not (tmp_path / "x.safetensors").exists()
