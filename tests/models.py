"""Small DiTs and inputs shared by the cache, fold and sparse tests (test preset, seeded), the
command-line arguments of a training module on the test preset, and the tolerance for frames."""

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


def assert_frames_close(a: torch.Tensor, b: torch.Tensor, *, levels: int = 1) -> None:
    """uint8 frames of one model computed by other kernels (another batch size, the engine's path).

    oneDNN picks its kernels by CPU and shape, so the fp32 sums come in another order: a difference of
    ~1e-6 that moves a pixel by one level where it sits on a rounding boundary. A real difference (a
    wrong cache slot, drift) moves many pixels by more: at most `levels`, on under 2% of the values.
    """
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
    d = (a.int() - b.int()).abs()
    assert d.max().item() <= levels and (d > 0).float().mean().item() < 0.02, (d.max(), d.float().mean())


def random_checkpoint(path, *, seed: int = 0, start: bool = True, **changes):
    """A randomly initialised test-preset model (with `changes`, e.g. `key_names=`) saved as a shipped
    checkpoint at `path`; every parameter nudged off the adaLN-Zero init so the model does something;
    start latents of two spawn seeds unless `start=False`."""
    from worldsim.checkpoint import save_checkpoint
    from worldsim.model.autoencoder import Autoencoder
    from worldsim.train.export import start_latents

    torch.manual_seed(seed)
    cfg = get_preset("test").replace(**changes)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    z = start_latents(ae, [0, 1])[1] if start else None
    save_checkpoint(path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=z)
    return path
