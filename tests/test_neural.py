"""NeuralWorld: a World built from a checkpoint; its cached few-step generation is the model's function."""

import logging

import pytest
import torch
from models import assert_frames_close

from worldsim.checkpoint import load_checkpoint, save_checkpoint
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder, model_to_frames
from worldsim.neural import NeuralWorld
from worldsim.world import World


@pytest.fixture
def checkpoint(tmp_path):
    cfg = get_preset("test").replace(steps=1)
    torch.manual_seed(0)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    start = torch.randn(5, 2, cfg.latent_channels, *cfg.latent_hw)  # 5 starts of 2 context frames
    path = save_checkpoint(
        tmp_path / "t.safetensors", config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(),
        start_latents=start,
    )  # fmt: skip
    return path, dit.eval(), ae.eval(), start


def test_world_api_shapes_and_determinism(checkpoint):
    path = checkpoint[0]
    w = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=3)
    assert isinstance(w, World) and w.checkpoint_name == "t" and len(w.checkpoint_hash) == 64
    first = w.reset([0, 1, 7])
    assert first.shape == (3, 32, 32, 3) and first.dtype == torch.uint8
    keys = torch.zeros(3, 6, dtype=torch.bool)
    keys[:, 0] = True
    run1 = [w.step(keys) for _ in range(6)]
    assert run1[-1].shape == (3, 32, 32, 3) and run1[-1].dtype == torch.uint8
    w.reset([0, 1, 7])
    run2 = [w.step(keys) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(run1, run2))
    # a batch of 1 decodes with other kernels than a batch of 3: the same frame up to rounding
    assert_frames_close(first[1], NeuralWorld.from_checkpoint(path, device="cpu").reset(6)[0])  # 6 % 5 == 1
    assert w.describe()["checkpoint"] == "t"


@torch.no_grad()
@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_generation_is_the_full_forward_of_the_model(checkpoint, guidance):
    """The cached few-step loop equals Euler on the training forward over the whole history."""
    path, dit, ae, start = checkpoint
    w = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=2, guidance=guidance)
    seed = 3
    w.reset([seed, seed + 1])
    cfg = w.cfg
    g = torch.Generator().manual_seed(seed)
    hist = start[[seed % 5, (seed + 1) % 5]]  # [2, 2, C, h, w] context latents
    keys_hist = torch.zeros(2, 2, cfg.num_keys, dtype=torch.bool)
    for n in range(cfg.window + 3):  # past the ring's wrap
        keys = torch.rand(2, cfg.num_keys, generator=torch.Generator().manual_seed(n)) > 0.5
        got = w.step(keys)
        noise = torch.randn(2, 1, cfg.latent_channels, *cfg.latent_hw, generator=g)
        x = torch.cat([hist, noise], 1)
        t = torch.cat([torch.zeros(2, hist.shape[1]), torch.ones(2, 1)], 1)
        kk = torch.cat([keys_hist, keys[:, None]], 1)
        v = dit(x, t, kk)[:, -1:]
        drop = torch.zeros(t.shape, dtype=torch.bool)
        drop[:, -1] = True
        v_null = dit(x, t, kk, drop_keys=drop)[:, -1:]
        x0 = noise - (v_null + guidance * (v - v_null))  # one Euler step from t=1 to t=0
        want = model_to_frames(ae.decode(x0[:, 0]))
        assert (got.int() - want.int()).abs().max() <= 1
        hist, keys_hist = torch.cat([hist, x0], 1), kk


def test_slots_reset_and_step_only_their_games(checkpoint):
    path = checkpoint[0]
    w = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=2)
    solo = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=1)
    keys = torch.tensor([[1, 0, 0, 0, 1, 0]], dtype=torch.uint8)
    w.reset([2, 4])
    for _ in range(3):
        w.step(keys.repeat(2, 1))
    assert torch.equal(w.reset([4], slots=[1])[0], solo.reset([4])[0])
    # the restarted game now equals a fresh single game given the same noise
    solo.generator.set_state(w.generator.get_state())
    a, b = w.step(keys, slots=[1]), solo.step(keys)
    assert_frames_close(a, b)  # one game read out of a batch-2 cache: the same math, maybe other kernels
    with pytest.raises(ValueError, match="slots"):
        w.step(keys, slots=[2])


def test_reset_from_frames(checkpoint):
    path = checkpoint[0]
    w = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=2)
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(w.reset_from_frames(frames), frames[:, -1])
    assert torch.equal(w.cache.length, torch.tensor([3, 3]))
    keys = torch.zeros(1, 3, 6, dtype=torch.bool)
    w.reset_from_frames(frames[:1, 0], slots=[0])  # one frame, one game
    assert torch.equal(w.cache.length, torch.tensor([1, 3]))
    w.reset_from_frames(frames[1:], keys, slots=[1])
    assert w.step(torch.zeros(2, 6, dtype=torch.bool)).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="resize"):
        w.reset_from_frames(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))


def test_a_load_logs_one_line_naming_what_was_loaded(caplog):
    with caplog.at_level(logging.INFO):
        NeuralWorld.from_checkpoint("tiny-student", device="cpu")
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    loads = [m for m in infos if m.startswith("loaded ")]
    assert len(loads) == 1, infos
    ck = load_checkpoint("tiny-student")
    assert f"loaded tiny-student (sha256 {ck.sha256[:12]}..." in loads[0] and "on cpu in float32" in loads[0]
    assert not [m for m in infos if "quantize_int8" in m]  # the layer count is a debug detail
