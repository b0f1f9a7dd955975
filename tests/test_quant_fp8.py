"""fp8 W8A8 with per-pass activation scales (worldsim/engine/fp8.py): the emulation against a hand-rolled
e4m3 quantizer, calibration on the shipped tiny model, its frames against fp, and the errors people see."""

import math

import pytest
import torch
from torch import nn

from worldsim.engine.fp8 import (
    WRITE_PASS,
    Fp8Calibration,
    Fp8Linear,
    PassIndex,
    attach_pass_index,
    calibrate,
    set_pass,
)
from worldsim.engine.quant import WEIGHTS, Int8Linear, apply_weights
from worldsim.errors import UserError
from worldsim.neural import NeuralWorld


def e4m3(v: float) -> float:
    """Round-to-nearest-even onto the e4m3fn grid (3 mantissa bits, min normal 2^-6, max 448), by hand."""
    a = min(abs(v), 448.0)
    if a == 0:
        return 0.0
    step = 2.0 ** (max(math.floor(math.log2(a)), -6) - 3)  # spacing of the grid around a
    q = a / step
    r = math.floor(q)
    r = r + 1 if q - r > 0.5 or (q - r == 0.5 and r % 2 == 1) else r
    return math.copysign(min(r * step, 448.0), v)


@torch.no_grad()
def test_fp8_emulation_is_the_hand_computed_quantize_dequantize():
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)
    amax = torch.tensor([3.0, 5.0, 7.0])  # passes 0, 1 and the write pass
    state = PassIndex()
    q = Fp8Linear.from_linear(lin, amax, state)
    x = torch.randn(3, 16) * 2
    W, b = lin.weight.tolist(), lin.bias.tolist()
    for i, a in ((0, 3.0), (1, 5.0), (WRITE_PASS, 7.0)):
        state.value = i
        sx = a / 448
        want = torch.zeros(3, 4)
        for n in range(4):
            sw = max(abs(w) for w in W[n]) / 448
            wq = [e4m3(w / sw) * sw for w in W[n]]
            for m in range(3):
                xq = [e4m3(v / sx) * sx for v in x[m].tolist()]
                want[m, n] = sum(p * r for p, r in zip(xq, wq, strict=True)) + b[n]
        torch.testing.assert_close(q(x), want, atol=1e-5, rtol=1e-5)
    # no pass set: the largest scale (never clips what calibration saw); x beyond it saturates at 448 * s
    state.value = None
    assert q.current_scale().item() == pytest.approx(7.0 / 448)
    big = torch.full((1, 16), 100.0)
    state.value = 0
    xq = (big / (3.0 / 448)).clamp(-448, 448).to(torch.float8_e4m3fn).float() * (3.0 / 448)
    torch.testing.assert_close(q(big), xq @ q.dequantized().t() + lin.bias, atol=1e-4, rtol=1e-5)
    state.value = 2  # a pass the calibration never saw
    with pytest.raises(ValueError, match="calibrated for 2 passes per frame"):
        q(x)
    # .to(bf16) keeps the fp8 bits (a float dtype would otherwise be cast)
    bits = q.weight.clone()
    assert torch.equal(q.to(torch.bfloat16).weight, bits) and q.weight.dtype == torch.uint8


def test_the_frame_function_numbers_the_passes_for_the_fp8_layers(tiny_pair):
    """The hook sees pass 0, 1, ... of each frame and WRITE_PASS for each cache write (unfolded)."""
    from worldsim.frame import next_frame, prime
    from worldsim.model import KVCache
    from worldsim.sampling import sample_heun

    fp, _, _ = tiny_pair
    dit, cfg = fp.dit, fp.cfg
    seen = []
    cache = KVCache(cfg, 1)
    z = torch.zeros(1, 2, cfg.latent_channels, *cfg.latent_hw)
    keys = torch.zeros(1, 2, cfg.num_keys, dtype=torch.bool)
    with torch.no_grad():
        prime(dit, cache, z, keys, passes=seen.append)
        next_frame(dit, cache, sample_heun, fp.schedule, keys[:, :1], z[:, :1], passes=seen.append)
    heun = 2 * fp.steps - 1  # two passes per step but the last
    assert seen == [WRITE_PASS, WRITE_PASS, *range(heun), WRITE_PASS]
    dit2 = nn.Module()
    state = attach_pass_index(dit2)
    state(3)  # the DiT's PassIndex is itself the hook
    assert state.value == 3
    set_pass(dit2, WRITE_PASS)
    assert state.value == WRITE_PASS


@pytest.fixture(scope="module")
def tiny_pair():
    # Module fixtures are set up before conftest's one-thread fixture: built here on one thread too, so
    # the calibration sums run in the same order as in the tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp = NeuralWorld.from_checkpoint("tiny", device="cpu", batch_size=2, dtype=torch.float32)
        cal = calibrate(fp, frames=3, games=2)
        q = NeuralWorld.from_checkpoint(
            "tiny", device="cpu", batch_size=2, dtype=torch.float32, weights="fp8"
        )
    finally:
        torch.set_num_threads(threads)
    return fp, cal, q


def test_calibration_one_scale_per_layer_and_pass_and_they_differ(tiny_pair):
    fp, cal, _ = tiny_pair
    assert isinstance(cal, Fp8Calibration) and cal.passes == fp.steps  # the sampler's passes
    n_linear = sum(type(m) is nn.Linear for b in fp.dit.blocks for m in b.modules())
    assert len(cal.amax) == n_linear > 0
    for a in cal.amax.values():
        assert a.shape == (cal.passes + 1,) and torch.isfinite(a).all() and (a > 0).all()
    # activation statistics change across the passes: some layer's scales differ by > 20 %
    assert cal.scales_differ() > 1.2
    differing = sum(not torch.allclose(a, a[0].expand_as(a), rtol=0.05) for a in cal.amax.values())
    assert differing > len(cal.amax) // 2


def test_fp8_world_frames_close_to_fp(tiny_pair):
    fp, _, q = tiny_pair
    assert sum(isinstance(m, Fp8Linear) for m in q.dit.modules()) == len(q.dit.blocks) * 4

    def roll(w):
        frames = [w.reset([0, 1])]
        g = torch.Generator().manual_seed(1)
        for _ in range(8):
            frames.append(w.step(torch.rand(2, w.num_keys, generator=g) < 0.25))
        return torch.stack(frames).float()  # [F,B,H,W,3]

    a, b = roll(fp), roll(q)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3, 4))  # per frame
    psnr = 10 * torch.log10(255**2 / mse.clamp(min=1e-6))
    assert psnr[-1] > 25 and psnr.min() > 25, psnr
    assert mse[1:].max() > 0  # it really ran in fp8


def test_apply_weights_returns_prepared_copies(tiny_pair):
    fp, cal, _ = tiny_pair
    dit = fp.dit
    assert apply_weights(dit, "fp") is dit
    i8 = apply_weights(dit, "int8")
    f8 = apply_weights(dit, "fp8", calibration=cal)
    assert i8 is not dit and f8 is not dit
    assert any(isinstance(m, Int8Linear) for m in i8.modules())
    assert any(isinstance(m, Fp8Linear) for m in f8.modules())
    assert not any(isinstance(m, (Int8Linear, Fp8Linear)) for m in dit.modules())  # the original stays fp
    set_pass(f8, 1)
    layer = f8.blocks[0].attn.qkv
    assert layer.current_scale().item() == pytest.approx(cal.amax["blocks.0.attn.qkv"][1].item() / 448)


def test_wrong_weights_values_are_clear(tiny_pair):
    fp, _, _ = tiny_pair
    assert "fp8" in WEIGHTS
    with pytest.raises(UserError, match="weights must be one of fp, int8, fp8, got 'fp4'"):
        NeuralWorld.from_checkpoint("tiny", device="cpu", weights="fp4")
    with pytest.raises(ValueError, match="needs calibration="):
        apply_weights(fp.dit, "fp8")
    with pytest.raises(ValueError, match="weights must be one of"):
        apply_weights(fp.dit, "bf16")


def test_engine_step_runs_fp8_with_the_same_pass_scales():
    from worldsim.graph_world import GraphWorld

    # both calibrated here, under the same thread count (the module fixture's ran before the one-thread
    # fixture: its scales may round differently)
    q = NeuralWorld.from_checkpoint("tiny", device="cpu", batch_size=2, dtype=torch.float32, weights="fp8")
    g = GraphWorld.from_checkpoint(
        "tiny", device="cpu", graph=False, weights="fp8", batch_size=2, dtype=torch.float32
    )
    seen = []
    layer = g.world.dit.blocks[0].mlp[0]
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(m.pass_state.value))
    keys = torch.zeros(2, q.num_keys, dtype=torch.bool)
    a = [q.reset([0, 1]), q.step(keys), q.step(keys)]
    b = [g.reset([0, 1]), g.step(keys), g.step(keys)]
    handle.remove()
    steps = g.describe()["steps"]
    assert set(seen) <= {*range(steps), WRITE_PASS} and {0, steps - 1} <= set(seen)
    for x, y in zip(a, b, strict=True):
        # the same scales, batch and passes, on one thread: the pinned path, so the same frames (fp8
        # rounds activations, so a kernel's rounding could move a value by a whole e4m3 step otherwise)
        assert torch.equal(x, y)
