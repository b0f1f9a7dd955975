import copy

import pytest
import torch

from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder, frames_to_model, model_to_frames
from worldsim.model.kvcache import KVCache
from worldsim.sampling import schedule_for
from worldsim.train.rollout import rollout


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    assert torch.equal(got, expected)
