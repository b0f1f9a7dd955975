"""The inference-time cache-write level can be chosen at load (`context_noise=`, play/eval --context-noise)."""

import pytest
import torch
from models import perturbed_dit

from worldsim.checkpoint import load_checkpoint
from worldsim.frame import Pending, next_frame, prime, write_level
from worldsim.model import KVCache
from worldsim.neural import NeuralWorld
from worldsim.sampling import add_noise, sample_euler, schedule_for


def test_a_chosen_context_noise_level_is_the_one_the_world_writes_at():
    worlds = {t: NeuralWorld.from_checkpoint("tiny-student", device="cpu", dtype=torch.float32, context_noise=t)
              for t in (0.0, 0.3)}  # fmt: skip
    assert worlds[0.3].cfg.context_noise == 0.3 and worlds[0.0].cfg.context_noise == 0.0
    keys = torch.zeros(1, worlds[0.0].num_keys, dtype=torch.bool)
    frames = {}
    for t, w in worlds.items():
        w.reset(0)
        frames[t] = [w.step(keys) for _ in range(3)]
    # the start context enters the cache noised too: every frame differs (measured 4.0-6.6 gray levels on
    # average over the first three; rounding across CPUs moves single pixels by one level)
    assert (frames[0.3][-1].int() - frames[0.0][-1].int()).abs().float().mean() > 0.5


@pytest.mark.parametrize("fold", [False, True], ids=["unfolded", "folded"])
@torch.no_grad()
def test_idle_frames_enter_the_cache_at_the_idle_level(fold):
    """`idle_context_noise`: a frame made while no key is held is written at that level, the others at
    `context_noise`, row by row and frame by frame; the frames equal Euler on the full forward over a
    history noised so (past the ring's wrap)."""
    dit = perturbed_dit(sinks=1, steps=2, context_noise=0.0, idle_context_noise=0.3)
    cfg = dit.cfg
    B, schedule = 2, schedule_for(cfg)
    g = torch.Generator().manual_seed(5)

    def randn(F):
        return torch.randn(B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)

    ctx, ctx_keys = randn(2), torch.ones(B, 2, cfg.num_keys, dtype=torch.bool)
    cache = KVCache(cfg, B)
    pending = Pending.empty(dit, B, torch.device("cpu"), torch.float32) if fold else None
    prime(dit, cache, ctx, ctx_keys, pending=pending, level=cfg.context_noise)
    hist, t_hist, hist_keys = ctx, torch.zeros(B, 2), ctx_keys
    for i in range(cfg.window + 3):
        keys = torch.zeros(B, 1, cfg.num_keys, dtype=torch.bool)
        keys[0, 0, i % cfg.num_keys] = True  # row 0 always holds a key; row 1 only every third frame
        keys[1, 0, 0] = i % 3 == 0
        noise, write_noise = randn(1), randn(1)
        level = write_level(cfg, keys)
        assert level[0, 0] == 0 and level[1, 0] == pytest.approx(0.0 if i % 3 == 0 else 0.3)
        got = next_frame(dit, cache, sample_euler, schedule, keys, noise, pending=pending, level=level,
                         write_noise=write_noise)  # fmt: skip
        all_keys = torch.cat([hist_keys, keys], 1)

        def full(x, t, n, hist=hist, t_hist=t_hist, all_keys=all_keys):
            return dit(torch.cat([hist, x], 1), torch.cat([t_hist, t], 1), all_keys)[:, -1:]

        want = sample_euler(full, noise, schedule)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        hist = torch.cat([hist, add_noise(want, write_noise, level)], 1)
        t_hist, hist_keys = torch.cat([t_hist, level], 1), all_keys
    assert cache.length.tolist() == [hist.shape[1]] * B


def test_idle_context_noise_in_the_config_and_at_load():
    """Unset, a config writes no field (files older code reads); set, it round-trips and is checked."""
    from worldsim.model.config import ModelConfig, get_preset

    cfg = get_preset("test")
    assert "idle_context_noise" not in cfg.to_dict() and not cfg.write_noise
    idle = cfg.replace(idle_context_noise=0.1)
    assert ModelConfig.from_dict(idle.to_dict()).idle_context_noise == 0.1 and idle.write_noise
    keys = torch.zeros(1, 1, cfg.num_keys, dtype=torch.bool)
    assert write_level(cfg, keys) == 0.0 and write_level(cfg.replace(context_noise=0.2), keys) == 0.2
    with pytest.raises(ValueError, match="idle_context_noise must be null or in"):
        cfg.replace(idle_context_noise=1.5)
    shipped = load_checkpoint("tiny-student").config.context_noise  # walking keeps the checkpoint's level
    w = NeuralWorld.from_checkpoint(
        "tiny-student", device="cpu", dtype=torch.float32, idle_context_noise=0.05
    )
    assert w.cfg.idle_context_noise == 0.05 and w.cfg.context_noise == shipped
