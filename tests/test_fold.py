"""The folded cache write (docs/design.md §5): the previous frame's write pass joins the next frame's first
denoising pass. Same computation as write-then-step, so folded frames equal unfolded ones (fp32)."""

import copy
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the ring kernel runs interpreted on CPU

from models import perturbed_dit as _dit  # noqa: E402
from models import random_inputs as _inputs

from worldsim.engine.attention import cached_attention  # noqa: E402
from worldsim.graph_world import GraphWorld  # noqa: E402
from worldsim.model import KVCache  # noqa: E402
from worldsim.model.autoencoder import Autoencoder  # noqa: E402
from worldsim.neural import NeuralWorld  # noqa: E402


def _both_protocols(m, x, t, keys, junk, attend=None):
    """Per block: one denoising pass (`junk` inputs), then the finished block `x` enters the cache;
    unfolded as a write pass, folded inside the next block's denoising pass. Returns both outputs."""
    cfg, B = m.cfg, x.shape[0]
    Fb = cfg.block_frames
    unfolded, folded = KVCache(cfg, B), KVCache(cfg, B)
    outs_u, outs_f = [], []
    for f in range(0, x.shape[1], Fb):
        sl, prev = slice(f, f + Fb), slice(f - Fb, f)
        xn, tn = junk[0][:, sl], junk[1][:, sl]
        outs_u.append(m.forward_cached(xn, tn, keys[:, sl], unfolded, attend=attend))
        m.forward_cached(x[:, sl], t[:, sl], keys[:, sl], unfolded, attend=attend)
        unfolded.advance()
        if f == 0:  # nothing pending yet
            outs_f.append(m.forward_cached(xn, tn, keys[:, sl], folded, staged=True, attend=attend))
        else:
            xf, tf = torch.cat([x[:, prev], xn], 1), torch.cat([t[:, prev], tn], 1)  # [B,2Fb,...]
            kf = torch.cat([keys[:, prev], keys[:, sl]], 1)
            outs_f.append(m.forward_cached(xf, tf, kf, folded, pending=True, attend=attend))
        folded.advance()
    return torch.cat(outs_u, 1), torch.cat(outs_f, 1)


@pytest.mark.parametrize(
    "changes",
    [dict(sinks=0), dict(sinks=1), dict(block_frames=2, window=4, sinks=2), dict(sinks=1, prev_frame=True),
     dict(block_frames=2, window=4, sinks=2, prev_frame=True)],
    ids=["nosink", "sink1", "block2-sink2", "stacked", "block2-stacked"],
)  # fmt: skip
@torch.no_grad()
def test_folded_pass_equals_write_then_step(changes):
    m = _dit(**changes)
    x, t, keys = _inputs(m.cfg, 2, 3 * m.cfg.window + 2 * m.cfg.block_frames)
    junk = _inputs(m.cfg, 2, x.shape[1], seed=2)[:2]
    u, f = _both_protocols(m, x, t, keys, junk)
    torch.testing.assert_close(f, u, atol=2e-5, rtol=1e-4)


def test_folded_pass_checks_its_frames():
    m = _dit()
    x, t, keys = _inputs(m.cfg, 1, 1)
    with pytest.raises(ValueError, match="pending block"):
        m.forward_cached(x, t, keys, KVCache(m.cfg, 1), pending=True)


def _world(dit, ae, cfg, *, fold, B=3, **kw):
    w = NeuralWorld(copy.deepcopy(dit), copy.deepcopy(ae), cfg, batch_size=B, device="cpu", fold=fold, **kw)
    w.generator.manual_seed(5)
    latents = []
    decode = w.autoencoder.decode

    def spy(z):  # the latents each step decodes (frames are uint8: compare the floats)
        latents.append(z.clone())
        return decode(z)

    w.autoencoder.decode = spy
    return w, latents


def _play(world, cfg, F):
    """Context from frames (two games with keys, one with unknown keys), then > window frames past the
    ring wrap, with slot subsets and a mid-game reset of one slot."""
    g = torch.Generator().manual_seed(3)
    H, W = cfg.image_hw
    frames = torch.randint(0, 256, (3, 3, H, W, 3), dtype=torch.uint8, generator=g)
    ctx_keys = torch.rand(2, 3, cfg.num_keys, generator=g) > 0.5
    world.reset_from_frames(frames[:2], ctx_keys, slots=[0, 2])
    world.reset_from_frames(frames[2:], None, slots=[1])
    for f in range(F):
        keys = torch.rand(3, cfg.num_keys, generator=g) > 0.5
        if f % 5 == 3:
            world.step(keys[:2], slots=[2, 0])
        elif f == 7:
            world.reset(seeds=[f], slots=[1])
        else:
            world.step(keys)


@pytest.mark.parametrize(
    ("sinks", "context_noise", "guidance", "prev_frame"),
    [(0, 0.0, 1.0, False), (1, 0.0, 1.0, False), (1, 0.2, 1.0, False), (0, 0.2, 2.0, False),
     (1, 0.2, 2.0, True)],
    ids=["nosink", "sink1", "sink1-ctxnoise", "nosink-ctxnoise-guided", "stacked-ctxnoise-guided"],
)  # fmt: skip
def test_folded_world_equals_unfolded(sinks, context_noise, guidance, prev_frame):
    dit = _dit(sinks=sinks, context_noise=context_noise, prev_frame=prev_frame)
    cfg = dit.cfg
    torch.manual_seed(1)
    ae = Autoencoder(cfg.autoencoder).eval()
    start = torch.randn(4, 2, cfg.latent_channels, *cfg.latent_hw)
    F = 3 * cfg.window + 2
    runs = {}
    for name, fold, graph in (("unfolded", False, False), ("folded", True, False), ("engine", True, True)):
        w, latents = _world(dit, ae, cfg, fold=fold, start_latents=start, guidance=guidance)
        _play(GraphWorld(w, graph=False) if graph else w, cfg, F)
        runs[name] = latents
    assert len(runs["folded"]) == len(runs["unfolded"]) == len(runs["engine"])
    for a, b, e in zip(runs["unfolded"], runs["folded"], runs["engine"], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
        if e.shape == a.shape:  # the engine decodes all rows; compare the full-batch steps
            torch.testing.assert_close(e, a, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_triton_backend_equals_sdpa_through_forward_cached():
    """The "triton" cached backend (the ring kernel; interpreted on CPU) gives SDPA's velocities, folded
    and unfolded, filling and wrapped. N = 16 tokens, head dim 32: shapes the kernel takes."""
    pytest.importorskip("triton")
    m = _dit(width=64, heads=2, sinks=1)
    assert m.cfg.tokens_per_frame == 16
    x, t, keys = _inputs(m.cfg, 2, m.cfg.window + 2)
    junk = _inputs(m.cfg, 2, x.shape[1], seed=2)[:2]
    want = _both_protocols(m, x, t, keys, junk)
    got = _both_protocols(m, x, t, keys, junk, attend=cached_attention("triton"))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
