import copy

import pytest
import torch
from models import assert_frames_close

from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder, frames_to_model, model_to_frames
from worldsim.model.kvcache import KVCache
from worldsim.sampling import schedule_for
from worldsim.train.rollout import rollout


def _models(seed=0):
    torch.manual_seed(seed)
    cfg = get_preset("test")
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():  # adaLN-Zero starts at zero output: perturb so the model does something
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, dit.eval(), ae.eval()


def _real_clip(cfg, B, F, seed=0):
    from worldsim.train.common import game_batches

    frames, keys = next(
        game_batches(batch=B, frames=F, size=cfg.image_hw, device=torch.device("cpu"), seed=seed)
    )
    return frames, keys


def test_rollout_without_grad_equals_neural_world_frames():
    """The training rollout goes through the inference cache code: same noise -> the same frames."""
    from worldsim.neural import NeuralWorld

    cfg, dit, ae = _models()
    B, Fc, F = 2, 3, 7  # 3 + 7 frames > window 4: the ring buffer wraps during the rollout
    frames, keys = _real_clip(cfg, B, Fc + F)
    world = NeuralWorld(copy.deepcopy(dit), copy.deepcopy(ae), cfg, batch_size=B, device="cpu")
    world.generator.manual_seed(123)
    world.reset_from_frames(frames[:, :Fc], keys[:, :Fc])
    expected = torch.stack([world.step(keys[:, Fc + f]) for f in range(F)], 1)  # [B,F,H,W,3]

    C, (h, w) = cfg.latent_channels, cfg.latent_hw
    g = torch.Generator().manual_seed(123)
    noise = torch.stack([torch.randn(B, 1, C, h, w, generator=g) for _ in range(F)], 1)[:, :, 0]
    with torch.no_grad():
        ctx_z = ae.encode(frames_to_model(frames[:, :Fc].flatten(0, 1))).unflatten(0, (B, Fc))
        z = rollout(dit, KVCache(cfg, B), ctx_z, keys[:, :Fc], keys[:, Fc:], noise, schedule_for(cfg))
        got = model_to_frames(ae.decode(z.flatten(0, 1))).unflatten(0, (B, F))
    # the same latents decoded 14 frames at a time here, 2 per step in the world: other conv kernels
    assert_frames_close(got, expected)


def test_rollout_gradient_flows_only_through_exit_passes():
    cfg, dit, ae = _models(1)
    B, Fc, F = 2, 2, 3
    frames, keys = _real_clip(cfg, B, Fc + F, seed=1)
    with torch.no_grad():
        ctx_z = ae.encode(frames_to_model(frames[:, :Fc].flatten(0, 1))).unflatten(0, (B, Fc))
    C, (h, w) = cfg.latent_channels, cfg.latent_hw
    noise = torch.randn(B, F, C, h, w)
    dit.requires_grad_(True)
    z = rollout(dit, KVCache(cfg, B), ctx_z, keys[:, :Fc], keys[:, Fc:], noise, schedule_for(cfg),
                exit_steps=[0, 1, 0], grad=True)  # fmt: skip
    assert z.requires_grad and z.shape == (B, F, C, h, w)
    z.pow(2).mean().backward()
    grads = [p.grad for p in dit.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    # exit at step 0 = the clean prediction of the first pass: x0 = noise - 1 * v
    with torch.no_grad():
        z0 = rollout(dit, KVCache(cfg, B), ctx_z, keys[:, :Fc], keys[:, Fc:], noise, schedule_for(cfg),
                     exit_steps=[0, 0, 0])  # fmt: skip
        v = dit(torch.cat([ctx_z, noise[:, :1]], 1), torch.cat([torch.zeros(B, Fc), torch.ones(B, 1)], 1),
                keys[:, : Fc + 1])[:, Fc:]  # fmt: skip
    torch.testing.assert_close(z0[:, :1], noise[:, :1] - v, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    from worldsim.checkpoint import save_checkpoint
    from worldsim.train.export import start_latents

    cfg, dit, ae = _models(2)
    _, z = start_latents(ae, [0, 1])
    path = tmp_path_factory.mktemp("teacher") / "teacher-test.safetensors"
    save_checkpoint(path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=z)
    return path


def _train(teacher, out, *extra):
    from worldsim.cli import main

    argv = ["train", "self-forcing", "--teacher", str(teacher), "--device", "cpu", "--batch", "2",
            "--critic-steps", "2", "--frames", "6", "--out", str(out), "--no-progress", "--ckpt-every", "2"]  # fmt: skip
    return main([*argv, *extra])


def test_self_forcing_trains_exports_and_resumes(teacher_ckpt, tmp_path):
    import json

    from worldsim.checkpoint import load_checkpoint
    from worldsim.neural import NeuralWorld

    out, student = tmp_path / "sf", tmp_path / "student.safetensors"
    assert (
        _train(teacher_ckpt, out, "--steps", "3", "--regression-weight", "0.5", "--export", str(student)) == 0
    )
    m = json.loads((out / "self_forcing.json").read_text())
    assert m["generator_steps"] == 3 and m["context"] == "self"
    assert all(torch.isfinite(torch.tensor(v)) for v in m["final"].values())
    assert (out / "self_forcing_loss.png").stat().st_size > 1000
    state = torch.load(out / "self_forcing.pt", weights_only=True)
    moved = [(state["model"][k] - state["teacher"][k]).abs().max().item() for k in state["teacher"]]
    critic_moved = [(state["critic"][k] - state["teacher"][k]).abs().max().item() for k in state["teacher"]]
    assert max(moved) > 0 and max(critic_moved) > 0  # student and critic both left the teacher
    ckpt = load_checkpoint(student)
    assert ckpt.metrics["self_forcing"]["generator_steps"] == 3
    assert "Student (self-forcing" in student.with_suffix(".md").read_text()
    world = NeuralWorld.from_checkpoint(student, device="cpu", batch_size=1)
    frame = (
        world.step(torch.zeros(1, world.num_keys, dtype=torch.bool)) if world.reset(0) is not None else None
    )
    assert frame.shape == (1, *world.cfg.image_hw, 3) and frame.dtype == torch.uint8
    # resume continues to the new step count with the stored hyperparameters
    assert _train(teacher_ckpt, out, "--steps", "4", "--resume") == 0
    assert torch.load(out / "self_forcing.pt", weights_only=True)["step"] == 4
    assert _train(teacher_ckpt, out, "--steps", "4") == 2  # refuses to overwrite without --resume


@pytest.mark.parametrize("context", ["true", "diffusion-forced"])
def test_baseline_contexts_train(teacher_ckpt, tmp_path, context):
    import json

    assert _train(teacher_ckpt, tmp_path / context, "--steps", "1", "--context", context) == 0
    m = json.loads((tmp_path / context / "self_forcing.json").read_text())
    assert m["context"] == context and all(torch.isfinite(torch.tensor(v)) for v in m["final"].values())
