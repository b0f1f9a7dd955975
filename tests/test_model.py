"""DiT and its config: presets, checks, the attention rule and backends, conditioning."""

import json

import pytest
import torch

from worldsim.model import PRESETS, DiT, ModelConfig, get_preset
from worldsim.model.attention import sequence_mask, visible
from worldsim.model.autoencoder import Autoencoder


def _randomized(cfg: ModelConfig) -> DiT:
    torch.manual_seed(0)
    m = DiT(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def _inputs(cfg, B, F):
    h, w = cfg.latent_hw
    return (
        torch.randn(B, F, cfg.latent_channels, h, w),
        torch.rand(B, F),
        torch.rand(B, F, cfg.num_keys) > 0.5,
    )


def test_presets_sizes():
    assert set(PRESETS) >= {"test", "tiny", "base"}
    tiny, base = get_preset("tiny"), get_preset("base")
    assert tiny.tokens_per_frame == 64 and tiny.image_hw == (64, 64) and tiny.window == 16
    assert base.tokens_per_frame == 64 and base.image_hw == (128, 128) and base.sinks >= 1
    with torch.device("meta"):
        assert 5e6 < DiT(tiny).num_params() < 8e6
        dit_params = DiT(base).num_params()
        ae_params = sum(p.numel() for p in Autoencoder(base.autoencoder).parameters())
    assert 15e6 < dit_params < 40e6
    # base ships with 8-bit DiT weights and a bf16 autoencoder in <= 30 MiB (docs/design.md §4)
    assert dit_params * 1 + ae_params * 2 < 29.5 * 2**20


def test_config_roundtrips_through_json_and_rejects_bad_values():
    cfg = get_preset("base")
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="window"):
        get_preset("test").replace(block_frames=3, window=4)
    with pytest.raises(ValueError, match="heads"):
        get_preset("test").replace(heads=3)
    with pytest.raises(ValueError, match="newer"):
        ModelConfig.from_dict({**cfg.to_dict(), "version": 99, "future_field": 1})
    with pytest.raises(ValueError, match="schedule"):
        get_preset("test").replace(schedule="cosine")


def test_visibility_rule():
    f = torch.arange(8)
    m = visible(f[:, None], f[None], block_frames=2, window=4)
    assert m[3, 2] and m[2, 3]  # same block: full attention
    assert m[3, 0] and not m[4, 1]  # two blocks back is outside a 4-frame window
    assert not m[1, 2]  # never the future
    tok = sequence_mask(3, 2, sinks=1, block_frames=1, window=2)
    assert tok.shape == (6, 8) and tok[:, :2].all()  # sinks visible to all
    assert not tok[4, 2] and tok[4, 4] and tok[4, 6] and not tok[0, 4]


def test_forward_shapes_and_zero_init():
    cfg = get_preset("test")
    m = DiT(cfg)
    x, t, keys = _inputs(cfg, 2, 3)
    v = m(x, t, keys)
    assert v.shape == x.shape
    assert torch.count_nonzero(v) == 0  # adaLN-Zero: the output layer starts at zero
    with pytest.raises(ValueError, match="keys"):
        m(x, t, keys[..., :2])


@torch.no_grad()
def test_block_causal_no_future_leak_and_keys_matter():
    cfg = get_preset("test").replace(window=8)
    m = _randomized(cfg)
    x, t, keys = _inputs(cfg, 1, 5)
    v = m(x, t, keys)
    x2 = x.clone()
    x2[:, 3:] = torch.randn_like(x2[:, 3:])
    v2 = m(x2, t, keys)
    torch.testing.assert_close(v2[:, :3], v[:, :3])
    assert not torch.allclose(v2[:, 3:], v[:, 3:])
    # keys of frame 2 change frames >= 2 only; the null (dropped) key state differs from any keys
    keys2 = keys.clone()
    keys2[:, 2] = ~keys2[:, 2]
    v3 = m(x, t, keys2)
    torch.testing.assert_close(v3[:, :2], v[:, :2])
    assert not torch.allclose(v3[:, 2], v[:, 2])
    drop = torch.zeros(1, 5, dtype=torch.bool)
    drop[:, 4] = True
    assert not torch.allclose(m(x, t, keys, drop_keys=drop)[:, 4], v[:, 4])


@torch.no_grad()
def test_flex_backend_matches_sdpa():
    cfg = get_preset("test").replace(block_frames=2, window=4, sinks=1)
    m = _randomized(cfg)
    x, t, keys = _inputs(cfg, 2, 6)
    ref = m(x, t, keys)
    m.attention = "flex"
    torch.testing.assert_close(m(x, t, keys), ref, atol=1e-5, rtol=1e-4)


def test_backward_reaches_every_parameter():
    cfg = get_preset("test")
    m = DiT(cfg)
    x, t, keys = _inputs(cfg, 2, 3)
    drop = torch.tensor([[True, False, False], [False, False, True]])
    target = torch.randn_like(x)
    (m(x, t, keys, drop_keys=drop) - target).square().mean().backward()
    # adaLN-Zero: at init only the zero-initialised output layer gets gradient; one SGD step opens it
    assert m.final.linear.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.zero_grad()
    (m(x, t, keys, drop_keys=drop) - target).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_temporal_rope_is_relative_and_periodic_in_the_window():
    from worldsim.model.rope import apply_rope, cos_sin, temporal_angles

    W, Dh = 16, 64
    q, k = torch.randn(Dh, dtype=torch.float64), torch.randn(Dh, dtype=torch.float64)

    def score(n: int, m: int) -> float:
        cq, sq = cos_sin(temporal_angles(torch.tensor([n]), Dh, W).double(), torch.float64)
        ck, sk = cos_sin(temporal_angles(torch.tensor([m]), Dh, W).double(), torch.float64)
        return float(apply_rope(q[None], cq, sq) @ apply_rope(k[None], ck, sk).T)

    for n, m in [(14, 13), (15, 3), (0, 0), (7, 2)]:
        for shift in (3, 17, 10**6 + 5):  # across a wrap of the ring and far beyond
            assert score(n + shift, m + shift) == pytest.approx(score(n, m), abs=1e-5)
    # every distance a query can see (0..W-1) is told apart
    by_distance = [score(20 + d, 20) for d in range(W)]
    assert min(abs(a - b) for i, a in enumerate(by_distance) for b in by_distance[i + 1 :]) > 1e-4
