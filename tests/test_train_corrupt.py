"""The teacher's context recipe (train/corrupt.py): levels, corruptions, and the loss mask."""

import pytest
import torch
from models import train_args

from worldsim.errors import UserError
from worldsim.model.config import get_preset
from worldsim.model.dit import DiT
from worldsim.train import flow, teacher
from worldsim.train.corrupt import ContextRecipe, corrupt_context, sample_levels


def _levels(recipe, shape=(4000, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return sample_levels(shape, shift=1.0, recipe=recipe, device="cpu", generator=g)


def test_the_plain_recipe_draws_the_levels_sample_t_always_drew():
    t, ctx = _levels(ContextRecipe(prob=0.5, max=0.1))
    g = torch.Generator().manual_seed(0)
    same = flow.sample_t((4000, 8), shift=1.0, context_prob=0.5, context_max=0.1, device="cpu", generator=g)
    assert torch.equal(t, same)  # a run resumed across the recipe's arrival sees the same validation levels
    assert (t[ctx] <= 0.1).all() and 0.47 < ctx.float().mean() < 0.53


def test_strong_context_noise_reaches_its_max_on_its_fraction():
    t, ctx = _levels(ContextRecipe(prob=0.5, max=0.1, aug_prob=0.3, aug_max=0.5))
    c = t[ctx]
    assert c.max() <= 0.5 and c.max() > 0.45
    # strong frames are uniform in [0, 0.5]: 0.3 x 0.8 of the context frames lie above 0.1
    assert 0.21 < (c > 0.1).float().mean() < 0.27


def _batch(B=6, F=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = get_preset("test")
    C, (h, w) = cfg.latent_channels, cfg.latent_hw
    z0 = torch.randn(B, F, C, h, w, generator=g)
    keys = torch.rand(B, F, cfg.num_keys, generator=g) < 0.3
    ctx = torch.rand(B, F, generator=g) < 0.5
    return cfg, z0, keys, ctx


def test_offsets_are_constant_per_channel_and_masked_out_of_the_loss():
    cfg, z0, keys, ctx = _batch()
    recipe = ContextRecipe(offset=0.5, offset_prob=0.6)
    z, mask = corrupt_context(None, z0, ctx, keys, recipe)  # no own predictions: the model is not called
    diff = z - z0
    moved = diff.flatten(2).abs().amax(2) > 0  # [B,F]
    assert moved.any() and not (moved & ~ctx).any()  # only context frames are shifted
    assert torch.equal(mask == 0, moved)  # exactly the shifted frames leave the loss
    d = diff[moved]  # [n, C, h, w]
    assert torch.allclose(
        d, d[:, :, :1, :1].expand_as(d), atol=1e-6
    )  # one value per channel: a colour offset
    assert (d[:, :, 0, 0].std() - 0.5).abs() < 0.2


def test_own_predictions_replace_the_context_of_the_first_rows():
    cfg, z0, keys, ctx = _batch()
    torch.manual_seed(0)
    dit = DiT(cfg).eval()
    recipe = ContextRecipe(own_prob=0.5)
    z, mask = corrupt_context(dit, z0, ctx, keys, recipe)
    rows = 3  # round(0.5 * 6)
    changed = (z - z0).flatten(2).abs().amax(2) > 0
    assert torch.equal(changed[:rows], ctx[:rows]) and not changed[rows:].any()
    assert torch.equal(mask == 0, changed) and not z.requires_grad
    # the replacement is the model's clean prediction of the frame (an untrained DiT: only finite)
    assert torch.isfinite(z).all()


def test_the_masked_loss_is_the_mean_over_the_kept_frames():
    cfg, z0, keys, ctx = _batch()
    t = torch.rand(ctx.shape)
    noise = torch.randn_like(z0)

    def model(x, t, k, d):  # a fixed linear map: the loss is known in closed form
        return 0.5 * x

    mask = (~ctx).float()
    loss = flow.flow_matching_loss(model, z0, t, keys, None, noise, mask)
    tt = t[:, :, None, None, None]
    err = (0.5 * ((1 - tt) * z0 + tt * noise) - (noise - z0)).pow(2).flatten(2).mean(2)
    assert torch.allclose(loss, err[~ctx].mean(), rtol=1e-5)
    assert torch.allclose(flow.flow_matching_loss(model, z0, t, keys, None, noise), err.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "flag, value", [("context_aug_prob", 1.5), ("context_aug_max", 1.0), ("context_offset", -0.1)]
)
def test_bad_recipe_flags_name_the_flag(ae_path, tmp_path, flag, value):
    args = train_args(teacher, tmp_path, autoencoder=ae_path, steps=2, batch=2, **{flag: value})
    with pytest.raises(UserError, match="--" + flag.replace("_", "-")):
        teacher.train(args)


def test_the_teacher_trains_with_the_whole_recipe(ae_path, tmp_path):
    m = teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, steps=6, batch=4, log_every=3,
                                 source="live", context_aug_prob=0.3, context_offset=0.3, own_prob=0.25))  # fmt: skip
    state = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert state["step"] == 6 and all(torch.isfinite(torch.tensor(state["history"]["loss"])))
    assert state["hparams"]["own_prob"] == 0.25 and state["hparams"]["context_offset"] == 0.3
    assert m["ema_val_loss"] > 0
