"""The frame function (worldsim/frame.py) against the full block-causal forward: prime + next_frame,
folded or not, equal a few-step Euler sampler run on `DiT.forward` over the whole history."""

import pytest
import torch
from models import perturbed_dit

from worldsim.frame import Pending, exit_schedule, next_frame, prime
from worldsim.model import KVCache
from worldsim.sampling import add_noise, sample_euler, sample_heun, schedule_for


@pytest.mark.parametrize("fold", [False, True], ids=["unfolded", "folded"])
@pytest.mark.parametrize(
    "changes",
    [dict(sinks=1), dict(sinks=1, context_noise=0.2), dict(block_frames=2, window=4, sinks=2)],
    ids=["sink1", "ctxnoise", "block2"],
)
@torch.no_grad()
def test_next_frame_is_euler_on_the_full_forward(fold, changes):
    dit = perturbed_dit(**changes, steps=2)
    cfg = dit.cfg
    B, Fb, level = 2, cfg.block_frames, cfg.context_noise
    schedule = schedule_for(cfg)
    g = torch.Generator().manual_seed(4)

    def randn(F):
        return torch.randn(B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)

    def rand_keys(F):
        return torch.rand(B, F, cfg.num_keys, generator=g) > 0.5

    ctx, ctx_keys, ctx_noise = randn(2 * Fb), rand_keys(2 * Fb), randn(2 * Fb)
    cache = KVCache(cfg, B)
    pending = Pending.empty(dit, B, torch.device("cpu"), torch.float32) if fold else None
    prime(dit, cache, ctx, ctx_keys, pending=pending, level=level, noise=ctx_noise if level else None)
    # the reference: the history as the cache holds it (written at the context noise level)
    hist = add_noise(ctx, ctx_noise, torch.full(ctx.shape[:2], level)) if level else ctx
    hist_keys = ctx_keys
    for _ in range(cfg.window // Fb + 2):  # past the ring's wrap
        keys, noise, write_noise = rand_keys(Fb), randn(Fb), randn(Fb)
        got = next_frame(dit, cache, sample_euler, schedule, keys, noise, pending=pending, level=level,
                         write_noise=write_noise)  # fmt: skip
        t_hist = torch.full(hist.shape[:2], level)
        all_keys = torch.cat([hist_keys, keys], 1)

        def full(x, t, n, hist=hist, t_hist=t_hist, all_keys=all_keys):
            v = dit(torch.cat([hist, x], 1), torch.cat([t_hist, t], 1), all_keys)  # the whole clip
            return v[:, -Fb:]

        want = sample_euler(full, noise, schedule)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        written = add_noise(want, write_noise, torch.full(want.shape[:2], level)) if level else want
        hist, hist_keys = torch.cat([hist, written], 1), all_keys
    assert cache.length.tolist() == [hist.shape[1]] * B


@torch.no_grad()
def test_active_rows_move_and_the_others_keep_their_state():
    """All rows computed at once (the engine's graph), only the active ones advance and become pending;
    an active row's frame equals what stepping it alone gives."""
    dit = perturbed_dit(sinks=1)
    cfg = dit.cfg
    schedule = schedule_for(cfg)
    g = torch.Generator().manual_seed(2)
    ctx = torch.randn(3, 2, cfg.latent_channels, *cfg.latent_hw, generator=g)
    ctx_keys = torch.zeros(3, 2, cfg.num_keys, dtype=torch.bool)
    noise = torch.randn(3, 1, cfg.latent_channels, *cfg.latent_hw, generator=g)
    keys = torch.rand(3, 1, cfg.num_keys, generator=g) > 0.5
    runs = []
    for active in (torch.tensor([1, 0, 1]), None):
        cache, pending = KVCache(cfg, 3), Pending.empty(dit, 3, torch.device("cpu"), torch.float32)
        prime(dit, cache, ctx, ctx_keys, pending=pending)
        before = pending.z.clone()
        rows = torch.tensor([0, 2]) if active is None else None
        k, n = (keys, noise) if rows is None else (keys[rows], noise[rows])
        x0 = next_frame(dit, cache, sample_euler, schedule, k, n, rows=rows,
                        active=active, pending=pending)  # fmt: skip
        runs.append((x0 if rows is not None else x0[[0, 2]], cache.length.clone(), pending.z.clone(), before))
    (a, len_a, pz_a, before), (b, len_b, pz_b, _) = runs
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert len_a.tolist() == len_b.tolist() == [3, 2, 3]
    assert torch.equal(pz_a[1], before[1]) and torch.equal(pz_b[1], before[1])  # row 1 did not move
    torch.testing.assert_close(pz_a[[0, 2]], a, atol=1e-5, rtol=1e-4)  # the new frames are pending


def test_exit_step_is_the_clean_prediction_and_only_it_keeps_gradient():
    dit = perturbed_dit(sinks=1, steps=3).requires_grad_(True)
    cfg = dit.cfg
    schedule = schedule_for(cfg)
    assert torch.equal(exit_schedule(schedule, 2), schedule)
    assert exit_schedule(schedule, 0).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"exit step must be in \[0, 3\)"):
        exit_schedule(schedule, 3)
    x = torch.randn(2, 1, cfg.latent_channels, *cfg.latent_hw)
    keys = torch.zeros(2, 1, cfg.num_keys, dtype=torch.bool)
    cache = KVCache(cfg, 2)
    with torch.no_grad():
        prime(dit, cache, x, keys)
    grad_on = []  # per DiT pass: was gradient recorded?
    hook = dit.patch_in.register_forward_pre_hook(lambda m, a: grad_on.append(torch.is_grad_enabled()))
    out = next_frame(dit, cache, sample_euler, schedule, keys, x, exit_step=1, grad=True)
    hook.remove()
    assert grad_on == [False, True, False]  # step 0, the exit step 1, the cache write
    assert out.requires_grad and cache.length.tolist() == [2, 2]
    out.pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dit.parameters())
    # the exit pass at step 1 is the clean prediction x0 = x_1 - t_1 v_1
    with torch.no_grad():
        cache2 = KVCache(cfg, 2)
        prime(dit, cache2, x, keys)
        x1 = x + (schedule[1] - schedule[0]) * dit.forward_cached(x, torch.ones(2, 1), keys, cache2)
        v1 = dit.forward_cached(x1, schedule[1].expand(2, 1), keys, cache2)
    torch.testing.assert_close(out.detach(), x1 - schedule[1] * v1, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="Euler"):
        next_frame(dit, cache, sample_heun, schedule, keys, x, grad=True)
