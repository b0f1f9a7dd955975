"""The ring-buffer KV cache: cached generation equals the full block-causal forward, forever."""

import pytest
import torch
from models import perturbed_dit as _model
from models import random_inputs as _inputs

from worldsim.model import KVCache


def _generate(m, cache, x, t, keys, *, junk_passes=2, rows=None):
    """The inference protocol per block: denoising passes (junk inputs), then the write pass."""
    Fb = m.cfg.block_frames
    outs = []
    for f in range(0, x.shape[1], Fb):
        sl = slice(f, f + Fb)
        for _ in range(junk_passes):
            m.forward_cached(
                torch.randn_like(x[:, sl]), torch.rand_like(t[:, sl]), keys[:, sl], cache, rows=rows
            )
        outs.append(m.forward_cached(x[:, sl], t[:, sl], keys[:, sl], cache, rows=rows))
        cache.advance(rows)
    return torch.cat(outs, 1)


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(sinks=0), dict(block_frames=2, window=4, sinks=2), dict(prev_frame=True),
     dict(block_frames=2, window=4, sinks=2, prev_frame=True)],
    ids=["sink1", "nosink", "block2-sink2", "stacked", "block2-stacked"],
)  # fmt: skip
@torch.no_grad()
def test_cached_generation_equals_full_forward(changes):
    m = _model(**changes)
    cfg = m.cfg
    B, F = 2, 3 * cfg.window + 2  # well past the point where the ring wraps
    x, t, keys = _inputs(cfg, B, F)
    full = m(x, t, keys)
    cache = KVCache(cfg, B)
    cached = _generate(m, cache, x, t, keys)
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)
    # and the window really bounds the context: frame 0 reaches at most depth * window frames ahead
    x2 = x.clone()
    x2[:, 0] += 1.0
    horizon = cfg.depth * cfg.window + cfg.prev_frame  # frame stacking: frame 1's input holds frame 0
    torch.testing.assert_close(m(x2, t, keys)[:, horizon:], full[:, horizon:], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(m(x2, t, keys)[:, 1], full[:, 1])


@torch.no_grad()
def test_frame_ten_thousand_behaves_like_frame_ten():
    m = _model(depth=1)
    cfg = m.cfg
    W = cfg.window
    x, t, keys = _inputs(cfg, 1, W + 1, seed=2)  # window content + the query frame
    fresh = KVCache(cfg, 1)
    ref = _generate(m, fresh, x, t, keys, junk_passes=0)[:, -1]

    old = KVCache(cfg, 1)
    junk_x, junk_t, junk_k = _inputs(cfg, 1, 1, seed=3)
    for n in range(10_000 - W):  # 10^4 frames of other content
        if n < 10_000 - 3 * W:
            old.begin()  # the bookkeeping of a pass (slot claims, counters) without the model ...
        else:  # ... and real K/V for the last windows, so the ring is full of other content
            m.forward_cached(junk_x + n, junk_t, junk_k, old)
        old.advance()
    late = _generate(m, old, x, t, keys, junk_passes=0)[:, -1]
    torch.testing.assert_close(late, ref, atol=1e-5, rtol=1e-5)
    assert int(old.length) == 10_000 + 1


@torch.no_grad()
def test_cache_tensors_are_never_reallocated():
    m = _model(prev_frame=True)
    cfg = m.cfg
    B = 3
    cache = KVCache(cfg, B)
    x, t, keys = _inputs(cfg, B, 2 * cfg.window + 3)
    _generate(m, cache, x[:, :2], t[:, :2], keys[:, :2])  # warm-up
    before = [(a.data_ptr(), a.shape, a.dtype) for a in cache.tensors()]
    _generate(m, cache, x, t, keys)
    cache.reset(torch.tensor([1]))
    _generate(m, cache, x[:, :3], t[:, :3], keys[:, :3])
    _generate(m, cache, x[1:2, :3], t[1:2, :3], keys[1:2, :3], rows=torch.tensor([2]))
    cache.reset()
    _generate(m, cache, x[:, :1], t[:, :1], keys[:, :1])
    assert [(a.data_ptr(), a.shape, a.dtype) for a in cache.tensors()] == before


@pytest.mark.parametrize("prev_frame", [False, True], ids=["plain", "stacked"])
@torch.no_grad()
def test_reset_one_game_leaves_the_others_alone(prev_frame):
    m = _model(prev_frame=prev_frame)
    cfg = m.cfg
    F = cfg.window + 3
    x, t, keys = _inputs(cfg, 2, 2 * F)
    cache = KVCache(cfg, 2)
    _generate(m, cache, x[:, :F], t[:, :F], keys[:, :F])
    cache.reset(torch.tensor([0]))
    out = _generate(m, cache, x[:, F:], t[:, F:], keys[:, F:])
    # game 1 continued: as if it had never been interrupted
    torch.testing.assert_close(out[1], m(x[1:], t[1:], keys[1:])[0, F:], atol=2e-5, rtol=1e-4)
    # game 0 restarted: as a fresh game over the second half only
    torch.testing.assert_close(out[0], m(x[:1, F:], t[:1, F:], keys[:1, F:])[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("prev_frame", [False, True], ids=["plain", "stacked"])
@torch.no_grad()
def test_rows_subset_matches_full_batch(prev_frame):
    m = _model(prev_frame=prev_frame)
    cfg = m.cfg
    x, t, keys = _inputs(cfg, 3, cfg.window + 2)
    a, b = KVCache(cfg, 3), KVCache(cfg, 3)
    full = _generate(m, a, x, t, keys)
    rows = torch.tensor([2, 0])
    sub = _generate(m, b, x[rows], t[rows], keys[rows], rows=rows)
    torch.testing.assert_close(sub, full[rows], atol=2e-5, rtol=1e-4)
    assert int(b.length[1]) == 0 and bool((b.slot_frame[1] == -1).all())


def test_cached_pass_backpropagates_and_later_writes_do_not_break_it():
    m = _model()
    cfg = m.cfg
    x, t, keys = _inputs(cfg, 2, cfg.window + 2)
    cache = KVCache(cfg, 2)
    with torch.no_grad():
        _generate(m, cache, x[:, :-1], t[:, :-1], keys[:, :-1])
        ref = m(x, t, keys)[:, -1:]
    xg = x[:, -1:].clone().requires_grad_(True)
    out = m.forward_cached(xg, t[:, -1:], keys[:, -1:], cache)  # grad enabled
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    with torch.no_grad():  # the write pass and a further frame rewrite the cache in place
        m.forward_cached(x[:, -1:], t[:, -1:], keys[:, -1:], cache)
        cache.advance()
        m.forward_cached(x[:, :1], t[:, :1], keys[:, :1], cache)
    out.square().sum().backward()
    assert xg.grad.abs().sum() > 0 and m.sink_k.grad.abs().sum() > 0
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
