"""int8 weights (worldsim/engine/quant.py): per-layer and whole-model error vs fp32, the bit-exact
safetensors round trip, int8 storage of the other matrices (read back as floats), and the shipped tiny
model stepping on int8 weights close to its fp32 frames."""

import pytest
import torch
from torch import nn

from worldsim.checkpoint import load_checkpoint, save_checkpoint
from worldsim.engine.quant import (
    Int8Linear,
    dequantize,
    export_int8,
    int8_tensors,
    load_dit,
    quantize_int8,
    quantize_weight,
)
from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.metrics import psnr
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.neural import NeuralWorld
from worldsim.storage8 import Q8_SCALE, quantize_stored
from worldsim.worlds import fastest_world


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def random_dit(seed: int = 0) -> DiT:
    cfg = get_preset("test")
    torch.manual_seed(seed)
    dit = DiT(cfg)
    with torch.no_grad():  # trained-like weights: the zero-initialised adaLN layers must matter too
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return dit.eval()


def inputs(cfg, B=2, F=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)
    t = torch.rand(B, F, generator=g)
    keys = torch.rand(B, F, cfg.num_keys, generator=g) > 0.5
    return x, t, keys


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_fp32_layer(dtype):
    torch.manual_seed(0)
    lin = nn.Linear(256, 768)
    q = Int8Linear.from_linear(lin)
    assert q.weight.dtype == torch.int8 and q.weight.shape == (768, 256) and q.scale.shape == (768,)
    x = torch.randn(4, 10, 256)
    ref = lin(x)
    # int8 rounding alone: |err| <= scale/2 per weight -> ~0.5% relative on random weights
    assert rel(q(x), ref) < 0.01
    assert (
        rel(Int8Linear.from_linear(lin).to(dtype)(x.to(dtype)).float(), ref) < 0.02
    )  # bf16 activations add their own rounding
    # the fast path computes exactly the dequantized layer
    assert torch.allclose(q(x), nn.functional.linear(x, q.dequantized(), q.bias), atol=1e-4, rtol=1e-4)
    # every row uses its full range: the largest weight of each row maps to +-127
    assert torch.equal(q.weight.abs().amax(dim=1), torch.full((768,), 127, dtype=torch.int8))


def test_quantize_weight_zero_row_and_shape_errors():
    w = torch.randn(3, 8)
    w[1] = 0
    q, s = quantize_weight(w)
    assert torch.equal(q[1], torch.zeros(8, dtype=torch.int8)) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match=r"\[out, in\]"):
        quantize_weight(torch.randn(2, 3, 4))


@torch.no_grad()
def test_whole_dit_forward_close_to_fp32_and_dequantize_restores_linear():
    dit = random_dit()
    x, t, keys = inputs(dit.cfg)
    ref = dit(x, t, keys)
    quantize_int8(dit)
    n_int8 = sum(isinstance(m, Int8Linear) for m in dit.modules())
    assert n_int8 == 4 * dit.cfg.depth  # qkv, proj, 2 MLP layers per block; embedders stay fp
    assert rel(dit(x, t, keys), ref) < 0.03
    dequantize(dit)
    assert not any(isinstance(m, Int8Linear) for m in dit.modules())
    assert rel(dit(x, t, keys), ref) < 0.03
    quantize_int8(dit, everything=True)
    assert sum(isinstance(m, Int8Linear) for m in dit.modules()) > n_int8
    assert rel(dit(x, t, keys), ref) < 0.05


def test_safetensors_round_trip_is_bit_exact_for_int8(tmp_path):
    cfg = get_preset("test")
    dit = quantize_int8(random_dit())
    tensors = int8_tensors(dit)
    ae = Autoencoder(cfg.autoencoder)
    path = save_checkpoint(tmp_path / "q.safetensors", config=cfg, dit=tensors, autoencoder=ae.state_dict())
    ckpt = load_checkpoint(path)
    for k, t in tensors.items():
        if t.dtype == torch.int8:
            assert ckpt.tensors["dit"][k].dtype == torch.int8 and torch.equal(ckpt.tensors["dit"][k], t)
    back = load_dit(ckpt, weights="int8")
    for name, m in dit.named_modules():
        if isinstance(m, Int8Linear):
            other = back.get_submodule(name)
            assert torch.equal(other.weight, m.weight) and torch.equal(other.scale, m.scale)
    assert isinstance(load_dit(ckpt, weights="fp").blocks[0].attn.qkv, nn.Linear)
    with pytest.raises(ValueError, match="weights must be one of"):
        load_dit(ckpt, weights="int4")


@torch.no_grad()
def test_shipped_tiny_steps_on_int8_close_to_fp32(tmp_path):
    """8 frames of the shipped 64x64 model from the same start and keys: int8 frames stay close."""
    fp = NeuralWorld.from_checkpoint("tiny", device="cpu", batch_size=2)
    q = fastest_world("tiny", device="cpu", batch_size=2, weights="int8", dtype=torch.float32)
    assert isinstance(q.dit.blocks[0].mlp[0], Int8Linear)
    a, b = fp.reset([0, 1]), q.reset([0, 1])
    assert torch.equal(a, b)  # the start frame is decoded by the same (fp) autoencoder
    diffs = []
    for n in range(8):
        keys = torch.zeros(2, 6, dtype=torch.bool)
        keys[:, n % 6] = True
        fa, fb = fp.step(keys), q.step(keys)
        diffs.append((fa.float() - fb.float()).abs().mean().item())
    # measured on the shipped tiny (CPU, fp32 activations): 0.07 levels at frame 1 rising to 0.29 at frame 8
    assert max(diffs) < 1.0, diffs
    # an 8-bit export of a float file runs the same int8 DiT (its other matrices are stored in 8 bits too)
    shipped = load_checkpoint("tiny")  # the shipped file is 8-bit: write its float (bf16) form first
    groups = dict(shipped.tensors, dit=load_dit(shipped, weights="fp").state_dict())
    bf16 = {
        g: {k: t.to(torch.bfloat16) if t.is_floating_point() and t.dim() > 1 else t for k, t in st.items()}
        for g, st in groups.items()
    }
    fp_file = save_checkpoint(tmp_path / "tiny_bf16.safetensors", config=shipped.config, tensors=bf16)
    path = export_int8(fp_file, tmp_path / "tiny_int8.safetensors")
    assert path.stat().st_size < 0.6 * fp_file.stat().st_size
    w8 = NeuralWorld.from_checkpoint(path, device="cpu", weights="int8")
    w32 = NeuralWorld.from_checkpoint(fp_file, device="cpu")
    w8.reset(0), w32.reset(0)
    still = torch.zeros(1, 6, dtype=torch.bool)
    assert (w8.step(still).float() - w32.step(still).float()).abs().mean() < 4.0


def test_int8_storage_reads_back_as_floats_within_half_a_step(tmp_path):
    cfg = get_preset("test")
    torch.manual_seed(0)
    ae = Autoencoder(cfg.autoencoder)
    state = {k: v.detach().clone() for k, v in ae.state_dict().items()}
    stored = quantize_stored(state)
    big = [k for k, t in state.items() if t.is_floating_point() and t.dim() >= 2 and t.numel() >= 4096]
    assert big and all(stored[k].dtype == torch.int8 and k + Q8_SCALE in stored for k in big)
    small = [k for k in state if k not in big]
    assert all(torch.equal(stored[k], state[k]) for k in small), "vectors and small tensors stay as they are"
    dit = DiT(cfg).state_dict()
    path = save_checkpoint(tmp_path / "s.safetensors", config=cfg, dit=dit, autoencoder=stored)
    back = load_checkpoint(path).tensors["autoencoder"]
    assert set(back) == set(state), "the scales disappear on load: the module sees its own names"
    for k in big:
        step = state[k].abs().flatten(1).amax(1) / 127  # one int8 step per output channel
        err = (back[k].float() - state[k]).abs().flatten(1).amax(1)
        assert back[k].is_floating_point() and bool((err <= 0.5 * step + 1e-6).all()), k
    # a damaged pair is named, not loaded
    bad = dict(stored)
    bad[big[0] + Q8_SCALE] = bad[big[0] + Q8_SCALE][:-1]
    with pytest.raises(UserError, match="one scale per row"):
        load_checkpoint(save_checkpoint(tmp_path / "bad.safetensors", config=cfg, dit=dit, autoencoder=bad))
    orphan = {k: t for k, t in stored.items() if k != big[0]}
    with pytest.raises(UserError, match="no int8 tensor beside it"):
        load_checkpoint(
            save_checkpoint(tmp_path / "orphan.safetensors", config=cfg, dit=dit, autoencoder=orphan)
        )


@torch.no_grad()
def test_the_8bit_stored_autoencoder_decodes_the_real_game_like_the_float_one(tmp_path):
    """The shipped 64x64 autoencoder, stored in 8 bits, decodes real frames within 40 dB of its float self."""
    ckpt = load_checkpoint("tiny")
    cfg = ckpt.config.autoencoder
    state = {k: t.float() for k, t in ckpt.tensors["autoencoder"].items()}
    path = save_checkpoint(
        tmp_path / "ae8.safetensors",
        config=ckpt.config,
        dit=ckpt.tensors["dit"],
        autoencoder=quantize_stored(state),
    )
    fp, q8 = Autoencoder(cfg).eval(), Autoencoder(cfg).eval()
    fp.load_state_dict(state)
    q8.load_state_dict({k: t.float() for k, t in load_checkpoint(path).tensors["autoencoder"].items()})
    frames = GameWorld(batch_size=8, size=cfg.image_size).reset(list(range(8)))
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    a, b = fp.decode(fp.encode(x)), q8.decode(q8.encode(x))
    psnr = 10 * torch.log10(4 / (a - b).pow(2).mean())
    assert psnr > 40, psnr


@torch.no_grad()
def test_grouped_8bit_tiny_student_still_holds_a_still_view(tmp_path):
    # tiny-student (bf16) holds the view when no key is pressed; one int8 scale per row of its blocks'
    # linears loses that (9-10 dB after 300 frames, docs/design.md §7.4); one per 32 input columns keeps it.
    src = load_checkpoint("tiny-student")
    path = export_int8(src.path, tmp_path / "g32.safetensors", group=32)
    assert path.stat().st_size < 0.6 * src.path.stat().st_size
    back = load_checkpoint(path)
    assert back.metrics["weights"] == "int8-g32" and back.metrics["quantized_from"] == src.sha256
    names = [
        k
        for k, t in src.tensors["dit"].items()
        if k.startswith("blocks.") and t.dim() == 2 and "table" not in k
    ]
    assert len(names) == 4 * src.config.depth  # qkv, proj and the MLP's two per block
    for k in names:
        w, g = src.tensors["dit"][k].float(), back.tensors["dit"][k]
        assert g.is_floating_point(), "the file reads back as floats: no Int8Linear at load"
        step = w.reshape(w.shape[0], -1, 32).abs().amax(-1, keepdim=True) / 127  # one int8 step per group
        err = (g.float() - w).reshape(step.shape[0], -1, 32).abs()
        # half a step of rounding, a quarter more from the bf16 scale (127 x 2^-9), then the bf16 read-back
        assert bool((err <= 0.75 * step + w.abs().reshape(err.shape) * 2**-8 + 1e-7).all()), k
    # 300 frames (10 s) with no key from a real view: the last frame stays near that view (bf16 file:
    # 24.9 dB on the quick eval, this export 24.8; per-row int8 9.3)
    game = GameWorld(batch_size=1, size=src.config.image_hw, level="default", device="cpu")
    frames = [game.reset([0])] + [game.step(torch.zeros(1, 6, dtype=torch.bool)) for _ in range(3)]
    world = NeuralWorld.from_checkpoint(path, device="cpu")
    world.reset_from_frames(torch.stack(frames, 1), torch.zeros(1, 4, 6, dtype=torch.bool))
    still = torch.zeros(1, 6, dtype=torch.bool)
    for _ in range(300):
        last = world.step(still)
    assert psnr(last, frames[-1]).item() > 18.0


def test_grouped_scales_that_do_not_fit_are_refused_with_one_line(tmp_path):
    cfg = get_preset("test")
    state = {k: v.detach().to(torch.bfloat16) for k, v in random_dit().state_dict().items()}
    stored = quantize_stored(state, group=16)
    grouped = [k for k in stored if k.endswith(Q8_SCALE) and stored[k].dim() == 2]
    assert grouped, "the test preset's DiT has matrices whose columns 16 divides"
    back = load_checkpoint(save_checkpoint(tmp_path / "g.safetensors", config=cfg, dit=stored))
    for k in grouped:
        w = state[k[: -len(Q8_SCALE)]].float()
        assert (back.tensors["dit"][k[: -len(Q8_SCALE)]].float() - w).abs().max() <= w.abs().max() / 127
    bad = dict(stored)
    bad[grouped[0]] = bad[grouped[0]][:, :-1]  # groups that do not divide the row
    with pytest.raises(UserError, match="per group"):
        load_checkpoint(save_checkpoint(tmp_path / "bad.safetensors", config=cfg, dit=bad))
