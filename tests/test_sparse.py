"""Sparse attention (local-window layers + periodic global layers): trained in, so the cached inference
path must equal the training forward, and a local layer must really not see frames out of its window."""

import os

import pytest
import torch

if not torch.cuda.is_available():  # before triton is imported: the ring kernel runs interpreted on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

from models import perturbed_dit as _model  # noqa: E402
from models import random_inputs as _inputs
from models import train_args

from worldsim.engine.attention import cached_attention  # noqa: E402
from worldsim.model import DiT, KVCache, get_preset  # noqa: E402
from worldsim.model.attention import frame_masks, layer_frame_mask, mask_windows  # noqa: E402
from worldsim.model.config import ModelConfig  # noqa: E402

# --- config ------------------------------------------------------------------------------------------


def test_layer_windows_and_validation():
    cfg = get_preset("tiny").replace(local_window=4, global_every=4)  # depth 8
    assert cfg.sparse
    assert [cfg.layer_window(i) for i in range(8)] == [4, 4, 4, 16, 4, 4, 4, 16]
    assert mask_windows(cfg) == (16, 4)
    all_local = cfg.replace(global_every=0)
    assert {all_local.layer_window(i) for i in range(8)} == {4} and all_local.sparse
    dense = get_preset("tiny")
    assert not dense.sparse and mask_windows(dense) == (16,)
    for bad, field in [
        (dict(local_window=16), "local_window=16 must be < window"),
        (dict(local_window=-1), "must be >= 0"),
        (dict(global_every=2), "needs local_window > 0"),
        (dict(local_window=4, global_every=9), "global_every=9 > depth=8"),
        (dict(block_frames=2, local_window=3), "multiple of block_frames=2"),
    ]:
        with pytest.raises(ValueError, match=field):
            get_preset("tiny").replace(**bad)
    with pytest.raises(ValueError, match="out of range"):
        cfg.layer_window(8)


def test_old_configs_load_dense_and_sparse_round_trips():
    old = get_preset("tiny").to_dict()
    del old["local_window"], old["global_every"]  # a checkpoint written before sparse attention
    cfg = ModelConfig.from_dict(old)
    assert (cfg.local_window, cfg.global_every, cfg.sparse) == (0, 0, False)
    sparse = cfg.replace(local_window=8, global_every=2)
    assert ModelConfig.from_dict(sparse.to_dict()) == sparse


def test_local_frame_mask_hides_exactly_the_old_frames():
    cfg = get_preset("test").replace(window=4, local_window=2, global_every=2, sinks=1)
    f = torch.arange(6)
    masks = frame_masks(f, f, cfg)  # {4: [6, 1+6], 2: [6, 1+6]}
    assert set(masks) == {4, 2}
    local, glob = masks[2], masks[4]
    assert torch.equal(layer_frame_mask(f, f, cfg, 0), local) and torch.equal(
        layer_frame_mask(f, f, cfg, 1), glob
    )
    assert local[:, 0].all() and glob[:, 0].all()  # sinks: always visible
    assert local[5, 1:].tolist() == [False, False, False, False, True, True]
    assert glob[5, 1:].tolist() == [False, False, True, True, True, True]


# --- the model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, rows",
    [
        (dict(sinks=0, window=4, local_window=2, global_every=2), None),
        (dict(sinks=1, window=4, local_window=2, global_every=2), None),
        (dict(sinks=1, window=6, local_window=2, global_every=0), [2, 0]),  # all local; gathered rows
        (dict(sinks=2, window=4, block_frames=2, local_window=2, global_every=2), None),
    ],
    ids=["sink0", "sink1", "all-local-rows", "block2"],
)
@torch.no_grad()
def test_cached_generation_equals_full_forward(changes, rows):
    m = _model(**changes)
    cfg = m.cfg
    B, F = 3, 3 * cfg.window + 2  # well past the ring wrap
    x, t, keys = _inputs(cfg, B, F)
    idx = torch.tensor(rows) if rows is not None else None
    full = m(x, t, keys) if idx is None else m(x[idx], t[idx], keys[idx])
    cache = KVCache(cfg, B)
    Fb, outs = cfg.block_frames, []
    for f in range(0, F, Fb):
        sl = slice(f, f + Fb)
        xs, ts, ks = (
            (x[:, sl], t[:, sl], keys[:, sl]) if idx is None else (x[idx, sl], t[idx, sl], keys[idx, sl])
        )
        m.forward_cached(torch.randn_like(xs), torch.rand_like(ts), ks, cache, rows=idx)  # a denoising pass
        outs.append(m.forward_cached(xs, ts, ks, cache, rows=idx))  # the write pass
        cache.advance(idx)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-4)
    # sparse is not dense: the same weights with the dense mask give another function
    dense = DiT(cfg.replace(local_window=0, global_every=0)).eval()
    dense.load_state_dict(m.state_dict())
    assert not torch.allclose(dense(*(a if idx is None else a[idx] for a in (x, t, keys))), full, atol=1e-3)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@torch.no_grad()
def test_local_layer_ignores_frames_out_of_its_window_global_layer_does_not(backend):
    m = _model(window=6, local_window=2, global_every=2, sinks=1)  # depth 2: layer 0 local, layer 1 global
    m.attention = backend
    cfg = m.cfg
    assert [cfg.layer_window(i) for i in range(cfg.depth)] == [2, 6]
    x, t, keys = _inputs(cfg, 1, 6)
    outs: dict[int, torch.Tensor] = {}
    hooks = [
        blk.register_forward_hook(lambda mod, a, o, i=i: outs.__setitem__(i, o))
        for i, blk in enumerate(m.blocks)
    ]
    m(x, t, keys)
    ref = dict(outs)
    x2 = x.clone()
    x2[:, :3] += 1.0  # frames 0..2: out of frame 4's local window (3, 4), inside its global window
    m(x2, t, keys)
    for h in hooks:
        h.remove()
    # block outputs [B, F, N, D]: layer 0 at frames 4, 5 sees only frames 3..5; layer 1 sees them all
    torch.testing.assert_close(outs[0][:, 4:], ref[0][:, 4:], atol=0, rtol=0)
    assert not torch.allclose(outs[0][:, 3], ref[0][:, 3])  # frame 3 does see frame 2
    assert not torch.allclose(outs[1][:, 4:], ref[1][:, 4:])


@torch.no_grad()
def test_dense_config_masks_unchanged():
    """local_window=0 builds one mask, the one the dense rule always built."""
    m = _model()
    cfg = m.cfg
    x, t, keys = _inputs(cfg, 2, 2 * cfg.window)
    assert mask_windows(cfg) == (cfg.window,)
    assert KVCache(cfg, 1).begin().local_mask is None
    explicit = _model(local_window=cfg.window // 2, global_every=1)  # every layer global = dense
    assert not explicit.cfg.sparse
    torch.testing.assert_close(explicit(x, t, keys), m(x, t, keys), atol=0, rtol=0)


# --- training and the benchmark ---------------------------------------------------------------------


def test_sparse_teacher_fine_tunes_from_a_dense_one(tmp_path):
    """`worldsim train teacher --init dense/teacher.pt --local-window 2 --global-every 2`: the dense
    weights, the sparse mask; a resume cannot change the mask; self-forcing reads the sparse config."""
    from worldsim.errors import UserError
    from worldsim.train import autoencoder as ae_train
    from worldsim.train import teacher
    from worldsim.train.sf_state import load_teacher

    ae_train.train(train_args(ae_train, tmp_path / "ae", steps=2, batch=2, heldout=4))
    teacher.train(
        train_args(teacher, tmp_path / "dense", autoencoder=tmp_path / "ae/autoencoder.pt", steps=2, batch=2)
    )
    dense = torch.load(tmp_path / "dense/teacher.pt", weights_only=True)
    assert dense["config"]["local_window"] == 0
    m = teacher.train(
        train_args(
            teacher,
            tmp_path / "sp",
            init=tmp_path / "dense/teacher.pt",
            window=6,
            local_window=2,
            global_every=2,
            steps=1,
            batch=2,
            lr=1e-12,
        )
    )
    sparse = torch.load(tmp_path / "sp/teacher.pt", weights_only=True)
    assert [sparse["config"][k] for k in ("window", "local_window", "global_every")] == [6, 2, 2]
    assert (m["local_window"], m["global_every"], m["clip_frames"]) == (2, 2, 9)  # 1.5 x the new window
    for k, v in dense["ema"].items():  # started from the dense teacher's (EMA) weights
        torch.testing.assert_close(sparse["model"][k], v, atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="--local-window 3: the run being resumed trains with local_window=2"):
        teacher.train(train_args(teacher, tmp_path / "sp", resume=True, local_window=3, steps=2, batch=2))
    with pytest.raises(UserError, match="local_window=4 must be < window=4"):  # --init's window
        teacher.train(
            train_args(teacher, tmp_path / "bad", init=tmp_path / "dense/teacher.pt", local_window=4)
        )
    cfg, *_ = load_teacher(tmp_path / "sp/teacher.pt", torch.device("cpu"))  # what self-forcing starts from
    assert cfg.sparse and cfg.layer_window(0) == 2 and cfg.layer_window(1) == cfg.window


def test_bench_rows_pair_dense_and_sparse(tmp_path, capsys):
    import json

    from worldsim.bench.dense_sparse import sparse_variant
    from worldsim.bench.sparse import main
    from worldsim.errors import UserError

    out = tmp_path / "sparse.json"
    assert main(["--quick", "--device", "cpu", "--seconds", "0.05", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["window"], r["sparse"], r["sessions"]) for r in rows} == {
        (w, s, n) for w in (8, 16) for s in (False, True) for n in (1, 2)
    }
    assert all(r["fps"] > 0 and r["vs_eager"] == 1.0 for r in rows), rows
    assert "test w16 L2/G2" in capsys.readouterr().out
    with pytest.raises(UserError, match="local_window=32 must be < window=32"):
        sparse_variant(get_preset("base"), 32, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.no_grad()
def test_flex_and_cache_match_sdpa_on_cuda_for_sparse_configs():
    """Compiled FlexAttention (the training backend on CUDA) builds the same sparse mask as SDPA."""
    m = _model(window=8, local_window=2, global_every=2, sinks=1).cuda()
    x, t, keys = (a.cuda() for a in _inputs(m.cfg, 2, 3 * m.cfg.window + 2))
    ref = m(x, t, keys)
    m.attention = "flex"
    torch.testing.assert_close(m(x, t, keys), ref, atol=1e-4, rtol=1e-3)
    m.attention = "sdpa"
    cache, outs = KVCache(m.cfg, 2, device="cuda"), []
    for f in range(x.shape[1]):
        outs.append(m.forward_cached(x[:, f : f + 1], t[:, f : f + 1], keys[:, f : f + 1], cache))
        cache.advance()
    torch.testing.assert_close(torch.cat(outs, 1), ref, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", ["sdpa", "triton"])
@torch.no_grad()
def test_folded_cache_write_keeps_the_sparse_mask(backend):
    """The folded protocol (the write pass of block b inside block b+1's first pass) gives the unfolded
    velocities for a sparse config too, and so does the ring kernel fed the local frame mask."""
    if backend == "triton":
        pytest.importorskip("triton")
    m = _model(width=64, heads=2, window=6, local_window=2, global_every=2, sinks=1)  # N=16, Dh=32
    cfg = m.cfg
    x, t, keys = _inputs(cfg, 2, cfg.window + 3)  # past the ring wrap
    junk = _inputs(cfg, 2, x.shape[1], seed=2)[:2]
    runs = {}
    for name in ("unfolded", backend):
        att = cached_attention("sdpa" if name == "unfolded" else backend)
        unfolded, folded = KVCache(cfg, 2), KVCache(cfg, 2)
        outs_u, outs_f = [], []
        for f in range(x.shape[1]):
            sl, prev = slice(f, f + 1), slice(f - 1, f)
            xn, tn = junk[0][:, sl], junk[1][:, sl]
            outs_u.append(m.forward_cached(xn, tn, keys[:, sl], unfolded, attend=att))
            m.forward_cached(x[:, sl], t[:, sl], keys[:, sl], unfolded, attend=att)  # the write pass
            unfolded.advance()
            if f == 0:  # nothing pending yet
                outs_f.append(m.forward_cached(xn, tn, keys[:, sl], folded, staged=True, attend=att))
            else:
                xf, tf = torch.cat([x[:, prev], xn], 1), torch.cat([t[:, prev], tn], 1)  # [B,2,...]
                kf = torch.cat([keys[:, prev], keys[:, sl]], 1)
                outs_f.append(m.forward_cached(xf, tf, kf, folded, pending=True, staged=True, attend=att))
            folded.advance()
        runs[name] = (torch.cat(outs_u, 1), torch.cat(outs_f, 1))
    ref = runs["unfolded"][0]
    for out in (*runs[backend], runs["unfolded"][1]):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
