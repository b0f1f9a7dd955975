"""`--motion-share`: where little of a frame moves (an Atari ball is one pixel at 64x64) a frame-wide mean
lets the autoencoder drop the object and the teacher ignore the keys. The autoencoder puts a share of its
loss on the pixels that move, the teacher on the latent tokens that change; an autoencoder trained so keeps
a moving dot that the plain loss loses."""

import json

import numpy as np
import pytest
import torch
from models import train_args

from worldsim.data.dataset import DatasetWriter
from worldsim.errors import UserError
from worldsim.model.autoencoder import frames_to_model
from worldsim.model.config import ModelConfig, get_preset
from worldsim.train import autoencoder as ae_train
from worldsim.train.flow import flow_matching_loss, token_change


def _dot_clips(clips: int, frames: int, size: int, seed: int) -> np.ndarray:
    """Static walls and a brick band, and a 1-pixel red dot moving 1-2 pixels a frame."""
    rng = np.random.default_rng(seed)
    bg = np.zeros((size, size, 3), np.uint8)
    bg[:, :2] = bg[:, -2:] = 140
    bg[:4] = (200, 80, 40)
    f = np.repeat(np.repeat(bg[None, None], clips, 0), frames, 1).copy()
    for c in range(clips):
        (y, x), (vy, vx) = rng.integers(8, size - 8, 2), rng.choice([-2, -1, 1, 2], 2)
        for t in range(frames):
            f[c, t, y, x] = (220, 60, 60)
            y, x = int(np.clip(y + vy, 5, size - 3)), int(np.clip(x + vx, 3, size - 3))
    return f


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    out = tmp_path_factory.mktemp("dots") / "data"
    w = DatasetWriter(out, key_names=["LEFT", "RIGHT"], height=32, width=32, frames=8, source="dots")
    w.add(_dot_clips(48, 8, 32, seed=0), np.zeros((48, 8, 2), bool))
    w.close()
    return out


def test_moving_pixels_mark_both_places_and_never_cross_clips():
    f = np.zeros((2, 3, 8, 8, 3), np.uint8)
    f[0, 0, 2, 2] = f[0, 1, 2, 4] = f[0, 2, 2, 6] = 255  # clip 0: a dot moving right
    f[1, :, 5, 5] = 255  # clip 1: a still dot
    m = ae_train.moving_pixels(frames_to_model(torch.from_numpy(f).flatten(0, 1)), 3)[:, 0]
    # frame t of clip 0 marks the pixels that changed to or from its neighbours
    assert m[0].nonzero().tolist() == [[2, 2], [2, 4]]
    assert m[1].nonzero().tolist() == [[2, 2], [2, 4], [2, 6]]
    assert m[2].nonzero().tolist() == [[2, 4], [2, 6]]
    assert not m[3:].any()  # the still clip moves nowhere, and nothing leaks across the clip boundary


def test_reconstruction_loss_share_is_the_mean_over_the_moving_pixels():
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    moving = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    moving[:, :, 3, 3] = True
    _, plain = ae_train.reconstruction_loss(x_hat, x)
    _, mixed = ae_train.reconstruction_loss(x_hat, x, moving, 0.5)
    at = (x_hat - x).abs()[:, :, 3, 3].mean().item()
    assert mixed["l1"] == pytest.approx(0.5 * plain["l1"] + 0.5 * at, rel=1e-5)
    _, still = ae_train.reconstruction_loss(x_hat, x, torch.zeros_like(moving), 0.5)
    assert still["l1"] == pytest.approx(plain["l1"])  # nothing moves: the plain loss


def test_motion_share_keeps_a_moving_dot_the_plain_loss_drops(dots, tmp_path):
    """The same autoencoder, data and steps: on held-out clips the plain loss reconstructs the frame and
    loses the dot (its pixels near 9 dB); half the loss on the moving pixels keeps it (~20 dB)."""
    psnr = {}
    for share in (0.0, 0.5):
        args = train_args(ae_train, tmp_path / f"ae{share}", data=dots, steps=400, batch=16, lr=1e-3, heldout=40,
                          motion_share=share, downsample=4, latent_channels=8, log_every=10_000)  # fmt: skip
        m = ae_train.train(args)
        assert m["motion_share"] == share
        psnr[share] = m["heldout_moving_psnr_db"]
    assert psnr[0.5] > psnr[0.0] + 5, psnr


def test_flow_loss_share_weighs_the_tokens_that_change():
    class Zero(torch.nn.Module):  # predicts v = 0: the error is (noise - z0)^2, known per token
        def forward(self, x, t, keys, drop):
            return torch.zeros_like(x)

    B, F, C, h, w = 2, 3, 4, 2, 2
    z0 = torch.zeros(B, F, C, h, w)
    z0[:, 2, :, 0, 0] = 1.0  # one token changes at frame 2
    noise = torch.zeros_like(z0)
    noise[:, :, :, 1, 1] = 2.0  # the error is 4 on a still token, 1 on the changed one
    t, keys = torch.zeros(B, F), torch.zeros(B, F, 2, dtype=torch.bool)
    change = token_change(z0)
    assert change[:, 2, 0, 0].eq(1).all() and change.sum() == B  # first frames 0; only that token
    plain = flow_matching_loss(Zero(), z0, t, keys, None, noise)
    mixed = flow_matching_loss(Zero(), z0, t, keys, None, noise, None, change, 0.5)
    assert torch.allclose(mixed, 0.5 * plain + 0.5 * torch.tensor(1.0))
    still = flow_matching_loss(
        Zero(), torch.zeros_like(z0), t, keys, None, noise, None, token_change(noise * 0), 0.5
    )
    assert torch.allclose(still, flow_matching_loss(Zero(), torch.zeros_like(z0), t, keys, None, noise))
    mask = torch.ones(B, F)
    mask[:, 2] = 0  # the changed frame out of the loss: nothing moves in what is left
    assert torch.allclose(
        flow_matching_loss(Zero(), z0, t, keys, None, noise, mask, change, 0.5),
        flow_matching_loss(Zero(), z0, t, keys, None, noise, mask),
    )


def test_teacher_motion_share_and_the_patch_size_of_a_finer_autoencoder(dots, tmp_path):
    """A --downsample 4 autoencoder gives the teacher a grid twice as fine: patch 2 keeps the preset's
    tokens a frame; --motion-share trains and is recorded; the flags refuse what they cannot do."""
    from worldsim.train import teacher as teacher_train

    ae_args = train_args(ae_train, tmp_path / "ae", data=dots, steps=2, batch=4, heldout=8, downsample=4)
    ae_train.train(ae_args)
    ae = str(tmp_path / "ae" / "autoencoder.pt")
    flags = dict(data=dots, autoencoder=ae, steps=2, batch=2, store_trajectories=3, refresh_every=0)
    m = teacher_train.train(train_args(teacher_train, tmp_path / "t", motion_share=0.5, **flags))
    state = torch.load(tmp_path / "t" / "teacher.pt", weights_only=True)
    cfg = ModelConfig.from_dict(state["config"])
    assert cfg.autoencoder.downsample == 4 and cfg.latent_hw == (8, 8) and cfg.patch_size == 2
    assert cfg.tokens_per_frame == get_preset("test").tokens_per_frame == 16  # 4x4 tokens either way
    assert state["hparams"]["motion_share"] == 0.5 and m["motion_share"] == 0.5
    with pytest.raises(UserError, match="--motion-share must be in"):
        teacher_train.train(train_args(teacher_train, tmp_path / "bad", motion_share=1.0, **flags))
    with pytest.raises(UserError, match="--patch-size 1: the run being resumed has patch size 2"):
        teacher_train.train(train_args(teacher_train, tmp_path / "t", resume=True, patch_size=1, **flags))
    with pytest.raises(UserError, match="--downsample 6"):
        ae_train.train(train_args(ae_train, tmp_path / "ae6", data=dots, steps=1, batch=2, downsample=6))
    json.dumps(m)  # the metrics stay JSON
