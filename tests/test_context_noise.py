"""The inference-time cache-write level can be chosen at load (`context_noise=`, play/eval --context-noise)."""

import torch

from worldsim.neural import NeuralWorld


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
