import argparse

import pytest
import torch
from models import train_args

from worldsim.errors import UserError
from worldsim.model.autoencoder import (
    AE_PRESETS,
    Autoencoder,
    AutoencoderConfig,
    frames_to_model,
    model_to_frames,
)
from worldsim.train import autoencoder as ae_train


def _args(tmp_path, **kw) -> argparse.Namespace:
    return train_args(ae_train, tmp_path, **kw)


def test_config_checks_name_the_field_and_fix():
    with pytest.raises(ValueError, match="downsample must be a power of two"):
        AutoencoderConfig(downsample=6)
    with pytest.raises(ValueError, match="divisible by downsample=8"):
        AutoencoderConfig(image_size=60)
    with pytest.raises(ValueError, match="base_channels must be a multiple of 8"):
        AutoencoderConfig(base_channels=12)


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_shapes_and_token_count(preset):
    cfg = AE_PRESETS[preset]
    ae = Autoencoder(cfg).eval()
    h, w = cfg.hw
    with torch.no_grad():
        z = ae.encode(torch.zeros(2, 3, h, w))
        assert z.shape == (2, cfg.latent_channels, 8, 8)  # 64 tokens per frame in the shipped presets
        assert ae.decode(z).shape == (2, 3, h, w)


def test_uint8_round_trip_and_latent_normalisation():
    frames = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(model_to_frames(frames_to_model(frames)), frames)
    ae = Autoencoder(AE_PRESETS["test"]).eval()
    x = frames_to_model(frames)
    ae.set_latent_stats(x)
    z = ae.encode(x)  # [B,C,h,w], normalised with the stored per-channel statistics
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (z.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    # decode inverts the normalisation: the same image as decoding the raw latent
    with torch.no_grad():
        assert torch.allclose(ae.decode(z), ae.decode_raw(ae.encode_raw(x)), atol=1e-4)


def test_autoencoder_trains_resumes_and_refuses_to_overwrite(tmp_path):
    m = ae_train.train(_args(tmp_path, steps=24, batch=4, lr=3e-3, log_every=12, heldout=16, ckpt_every=12))
    state = torch.load(tmp_path / "autoencoder.pt", weights_only=True)
    losses = state["history"]["loss"]
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], losses  # the loss falls on real game frames
    psnrs = [p for _, p in state["evals"]]
    assert psnrs[-1] > psnrs[0] + 3, psnrs  # held-out PSNR [untrained, step 12, step 24, final]
    assert m["heldout_psnr_db"] > 10 and m["decode_ms_per_frame_cpu"] > 0
    assert (tmp_path / "autoencoder_loss.png").stat().st_size > 1000
    assert state["model"]["latent_std"].ne(1).any()  # statistics were measured

    with pytest.raises(UserError, match="--resume"):
        ae_train.train(_args(tmp_path, steps=27, batch=4))
    with pytest.raises(UserError, match="--latent-channels 8: only a new run"):
        ae_train.train(_args(tmp_path, steps=27, batch=4, heldout=16, resume=True, latent_channels=8))
    ae_train.train(_args(tmp_path, steps=27, batch=4, heldout=16, resume=True))
    resumed = torch.load(tmp_path / "autoencoder.pt", weights_only=True)
    assert (
        resumed["step"] == 27
        and resumed["history"]["step"][: len(state["history"]["step"])] == state["history"]["step"]
    )

    ae = ae_train.load_autoencoder(tmp_path / "autoencoder.pt")
    assert torch.equal(ae.latent_std, resumed["model"]["latent_std"])
