"""Small DiTs and inputs shared by the cache, fold and sparse tests (test preset, seeded), and the
command-line arguments of a training module on the test preset."""

import argparse

import torch

from worldsim.model import DiT, get_preset


def perturbed_dit(**changes) -> DiT:
    """The test preset with `changes`, every parameter nudged off the adaLN-Zero init (seed 0), or every
    block would be the identity and the tests could not tell cache paths apart."""
    torch.manual_seed(0)
    m = DiT(get_preset("test").replace(**changes)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def random_inputs(cfg, B: int, F: int, seed: int = 1):
    """Latents `[B,F,C,h,w]`, noise levels `[B,F]` and keys `[B,F,K]` bool, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, cfg.latent_channels, *cfg.latent_hw, generator=g)
    t = torch.rand(B, F, generator=g)
    keys = torch.rand(B, F, cfg.num_keys, generator=g) > 0.5
    return x, t, keys


def train_args(module, out, **kw) -> argparse.Namespace:
    """`module`'s parsed arguments for a CPU run of the test preset into `out`; `kw` become flags
    (`local_window=3` -> `--local-window 3`, `True` -> a bare flag)."""
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    argv = ["--out", str(out), "--preset", "test", "--device", "cpu", "--no-progress"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return p.parse_args(argv)
