"""Triton kernels against their PyTorch references (TRITON_INTERPRET=1 on CPU, the real kernels on CUDA)."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined (@triton.jit)

pytest.importorskip("triton")

import worldsim.kernels  # noqa: E402
from worldsim.kernels import (  # noqa: E402
    adaln_layernorm,
    adaln_layernorm_reference,
    ring_attention,
    ring_attention_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((2, 1, 8, 32), torch.float32), ((1, 3, 16, 48), torch.float32), ((3, 1, 64, 256), torch.bfloat16)],
)
def test_adaln_layernorm_matches_reference(shape, dtype):
    B, F, N, D = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, F, N, D, generator=g) * 3 + 1).to(DEVICE, dtype)
    mod = torch.randn(B, F, 1, 6, D, generator=g).to(DEVICE, dtype)  # as dit.Block slices it
    shift, scale = mod.unbind(3)[0], mod.unbind(3)[1]  # [B,F,1,D] strided views
    assert worldsim.kernels.available(x)
    got = adaln_layernorm(x, shift, scale)
    want = adaln_layernorm_reference(x.float(), shift.float(), scale.float())  # fp32 truth
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


def test_adaln_layernorm_rejects_bad_modulation():
    x = torch.randn(1, 2, 8, 32, device=DEVICE)
    with pytest.raises(ValueError, match="shift must be"):
        adaln_layernorm(x, torch.zeros(1, 1, 1, 32, device=DEVICE), torch.zeros(1, 2, 1, 32, device=DEVICE))


@pytest.mark.parametrize(
    ("B", "H", "Fq", "Fk", "N", "Dh", "dtype"),
    [
        (2, 2, 1, 5, 16, 16, torch.float32),
        (1, 3, 3, 7, 32, 32, torch.float32),
        (2, 2, 1, 4, 64, 64, torch.bfloat16),
    ],
)
def test_ring_attention_matches_reference(B, H, Fq, Fk, N, Dh, dtype):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, Fq * N, Dh, generator=g).to(DEVICE, dtype)
    k = torch.randn(B, H, Fk * N, Dh, generator=g).to(DEVICE, dtype)
    v = torch.randn(B, H, Fk * N, Dh, generator=g).to(DEVICE, dtype)
    mask = torch.rand(B, Fq, Fk, generator=g) < 0.5
    mask[:, :, 0] = True  # every query frame sees something (a sink)
    mask = mask.to(DEVICE)
    got = ring_attention(q, k, v, mask)
    want = ring_attention_reference(q.float(), k.float(), v.float(), mask)
    tol = 2e-3 if dtype == torch.float32 else 3e-2  # fp32 dots may run as TF32 on the GPU
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


def test_ring_attention_never_reads_hidden_frames():
    B, H, Fk, N, Dh = 1, 2, 6, 16, 16
    q = torch.randn(B, H, N, Dh, device=DEVICE)
    k = torch.randn(B, H, Fk * N, Dh, device=DEVICE)
    v = torch.randn(B, H, Fk * N, Dh, device=DEVICE)
    mask = torch.tensor([[[True, False, True, False, False, True]]], device=DEVICE)
    want = ring_attention_reference(q, k, v, mask)
    hidden = (~mask[0, 0]).repeat_interleave(N)  # [Fk*N] key rows of hidden frames
    k[:, :, hidden] = float("nan")  # a kernel that loads them would spread NaN
    v[:, :, hidden] = float("nan")
    torch.testing.assert_close(ring_attention(q, k, v, mask), want, atol=2e-3, rtol=2e-3)


def test_ring_attention_equals_the_models_cached_read():
    """Over a real KVCache (filling, then wrapped), the kernel equals SDPA with the cache's token mask."""
    from worldsim.model import get_preset
    from worldsim.model.attention import frame_mask
    from worldsim.model.kvcache import KVCache

    cfg = get_preset("test").replace(window=4, sinks=1, width=64, heads=2)  # N = 16 tokens, Dh = 32
    assert cfg.tokens_per_frame == 16
    cache = KVCache(cfg, 2, device=DEVICE)
    g = torch.Generator().manual_seed(2)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g))
    cache.length.copy_(torch.tensor([1, 9]))  # one game filling, one wrapped
    cache.slot_frame.copy_(torch.tensor([[0, -1, -1, -1], [8, 5, 6, 7]]))
    view = cache.begin()
    fmask = frame_mask(view.frames, cache.slot_frame, sinks=cfg.sinks, block_frames=1, window=cfg.window)
    q = torch.randn(2, cfg.heads, cfg.tokens_per_frame, cfg.head_dim, generator=g).to(DEVICE)
    kc, vc = cache.read(0, view)
    want = torch.nn.functional.scaled_dot_product_attention(q, kc, vc, attn_mask=view.mask)
    torch.testing.assert_close(ring_attention(q, kc, vc, fmask), want, atol=2e-3, rtol=2e-3)


def test_fused_blocks_compute_the_same_dit():
    """The engine's fused-adaLN blocks (Triton under the interpreter) give the DiT's velocity."""
    from worldsim.engine.fuse import FusedAdaLNBlock, fuse_adaln, unfuse
    from worldsim.model import DiT, get_preset

    cfg = get_preset("test")
    torch.manual_seed(0)
    dit = DiT(cfg).to(DEVICE)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(2, 3, cfg.latent_channels, *cfg.latent_hw, device=DEVICE)
    t = torch.rand(2, 3, device=DEVICE)
    keys = torch.rand(2, 3, cfg.num_keys, device=DEVICE) < 0.5
    with torch.no_grad():
        want = dit(x, t, keys)
        assert fuse_adaln(dit) == cfg.depth and isinstance(dit.blocks[0], FusedAdaLNBlock)
        got = dit(x, t, keys)
        unfuse(dit)
        assert type(dit.blocks[0]).__name__ == "Block"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
