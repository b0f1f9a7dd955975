"""Frame stacking (`ModelConfig.prev_frame`): each frame's tokens also take the previous frame's latents and
level. Grown from a model without it, the model computes what that model did; trained, what a frame
stacks decides what comes out (the cache paths that must agree with the full forward are in
test_kvcache.py and test_fold.py)."""

import pytest
import torch
from models import perturbed_dit as _dit
from models import random_inputs as _inputs
from models import train_args

from worldsim.errors import UserError
from worldsim.model import KVCache
from worldsim.model.config import ModelConfig, get_preset
from worldsim.model.dit import DiT
from worldsim.train import common


def test_config_field_round_trips_and_is_checked():
    cfg = get_preset("test")
    assert not cfg.prev_frame and "prev_frame" not in cfg.to_dict()  # files older code reads too
    stacked = cfg.replace(prev_frame=True)
    assert ModelConfig.from_dict(stacked.to_dict()).prev_frame is True
    with pytest.raises(ValueError, match="ModelConfig.prev_frame must be bool"):
        ModelConfig.from_dict({**stacked.to_dict(), "prev_frame": 1})
    assert DiT(cfg).num_params() + (cfg.latent_channels + 1 + 1) * cfg.width == DiT(stacked).num_params()


@torch.no_grad()
def test_grown_model_computes_what_it_grew_from():
    plain = _dit()
    stacked = DiT(plain.cfg.replace(prev_frame=True)).eval()
    with torch.no_grad():
        for p in stacked.parameters():
            p.fill_(0.3)  # whatever it held: growing zeroes the new projection
    common.load_grown(stacked, plain.state_dict(), "--init plain")
    assert not stacked.prev_in.weight.any() and not stacked.prev_in.bias.any()
    x, t, keys = _inputs(plain.cfg, 2, plain.cfg.window + 3)
    torch.testing.assert_close(stacked(x, t, keys), plain(x, t, keys), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="do not fit this model"):
        common.load_grown(stacked, {k: v for k, v in plain.state_dict().items() if k != "patch_in.bias"}, "x")
    with pytest.raises(UserError, match="unexpected"):
        common.load_grown(plain, stacked.state_dict(), "--init stacked")


@torch.no_grad()
def test_the_previous_frame_reaches_the_next_frame_and_no_further_by_itself():
    """Frame f's input holds frame f-1: with attention cut off (window 1: a frame sees only itself), a
    change to frame 3 moves frames 3 and 4 and nothing else; without stacking only frame 3."""
    for prev_frame, moved in ((False, [3]), (True, [3, 4])):
        m = _dit(window=1, sinks=0, prev_frame=prev_frame)
        x, t, keys = _inputs(m.cfg, 1, 7)
        x2 = x.clone()
        x2[:, 3] += 1.0
        diff = (m(x2, t, keys) - m(x, t, keys)).abs().flatten(2).amax(-1)[0]  # [F]
        assert [f for f in range(7) if diff[f] > 1e-6] == moved


@torch.no_grad()
def test_a_reset_game_stacks_nothing():
    """After `reset`, the first frame's previous frame is the empty one (zeros at level 1), as a clip's
    first frame in training: a game restarted mid-way equals a fresh game, whatever it held before."""
    m = _dit(prev_frame=True)
    x, t, keys = _inputs(m.cfg, 1, 4)
    fresh = KVCache(m.cfg, 1)
    ref = m.forward_cached(x[:, :1], t[:, :1], keys[:, :1], fresh)
    used = KVCache(m.cfg, 1)
    for f in range(1, 4):
        m.forward_cached(x[:, f : f + 1], t[:, f : f + 1], keys[:, f : f + 1], used)
        used.advance()
    assert used.prev_z.abs().sum() > 0
    used.reset()
    torch.testing.assert_close(m.forward_cached(x[:, :1], t[:, :1], keys[:, :1], used), ref)
    torch.testing.assert_close(ref, m(x[:, :1], t[:, :1], keys[:, :1]), atol=2e-5, rtol=1e-4)


def test_teacher_grows_from_init_and_a_resume_keeps_it(tmp_path):
    """`worldsim train teacher --init plain/teacher.pt --prev-frame`: the plain weights, the projection at
    zero, the field in the state (what self-forcing and the export read); a resume keeps it."""
    from worldsim.train import autoencoder as ae_train
    from worldsim.train import teacher
    from worldsim.train.sf_state import load_teacher

    ae_train.train(train_args(ae_train, tmp_path / "ae", steps=2, batch=2, heldout=4))
    teacher.train(
        train_args(teacher, tmp_path / "plain", autoencoder=tmp_path / "ae/autoencoder.pt", steps=2, batch=2)
    )
    plain = torch.load(tmp_path / "plain/teacher.pt", weights_only=True)
    assert "prev_frame" not in plain["config"]
    teacher.train(
        train_args(
            teacher, tmp_path / "st", init=tmp_path / "plain/teacher.pt", prev_frame=True, steps=1, batch=2,
            lr=1e-12,
        )
    )  # fmt: skip
    st = torch.load(tmp_path / "st/teacher.pt", weights_only=True)
    assert st["config"]["prev_frame"] is True
    for k, v in plain["ema"].items():
        torch.testing.assert_close(st["model"][k], v, atol=1e-6, rtol=0)
    assert st["model"]["prev_in.weight"].abs().max() < 1e-6  # zero, moved by one step at lr 1e-12
    cfg, dit, *_ = load_teacher(tmp_path / "st/teacher.pt", torch.device("cpu"))
    assert cfg.prev_frame and dit.prev_in is not None
    teacher.train(train_args(teacher, tmp_path / "st", resume=True, steps=2, batch=2))  # keeps stacking
    assert torch.load(tmp_path / "st/teacher.pt", weights_only=True)["config"]["prev_frame"] is True

    # exported in 8 bits, it loads with the field and its projection, and plays
    from worldsim.checkpoint import load_checkpoint
    from worldsim.neural import NeuralWorld
    from worldsim.train.export import export

    export(tmp_path / "st/teacher.pt", tmp_path / "st.safetensors", int8_path=tmp_path / "st8.safetensors")
    fp, q8 = (load_checkpoint(tmp_path / f) for f in ("st.safetensors", "st8.safetensors"))
    assert fp.config.prev_frame and q8.config.prev_frame
    assert q8.float_state("dit")["prev_in.weight"].shape == fp.float_state("dit")["prev_in.weight"].shape
    world = NeuralWorld.from_checkpoint(tmp_path / "st8.safetensors", device="cpu", dtype=torch.float32)
    world.reset(seeds=[0])
    for _ in range(3):
        frame = world.step(torch.zeros(1, q8.config.num_keys, dtype=torch.bool))
    assert frame.dtype == torch.uint8 and frame.shape[-1] == 3
