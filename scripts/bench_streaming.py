"""Generator steps per second of streamed self-forcing against fresh rollouts, in one run, same teacher,
batch and critic steps (each mode at its own default rollout shape: streamed chunks of half a window,
fresh rollouts of 1.5 windows). Prints a table and the ratio.

    python scripts/bench_streaming.py                               # test preset, a random teacher, CPU
    python scripts/bench_streaming.py --teacher tiny --device cuda --steps 30 --batch 16 --chunk 8
(other flags go to both runs)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from worldsim.train import self_forcing
from worldsim.train.options import add_self_forcing_arguments


def _random_teacher(folder: Path) -> Path:
    """A test-preset teacher with random weights (the speed does not depend on what it learned)."""
    from worldsim.checkpoint import save_checkpoint
    from worldsim.model import DiT, get_preset
    from worldsim.model.autoencoder import Autoencoder
    from worldsim.train.export import start_latents

    torch.manual_seed(0)
    cfg = get_preset("test")
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder).eval()
    _, z = start_latents(ae, [0, 1])
    path = folder / "teacher-test.safetensors"
    save_checkpoint(path, config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(), start_latents=z)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="checkpoint (default: a random test-preset teacher)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20, help="generator steps per mode")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--critic-steps", type=int, default=5)
    p.add_argument("--chunk", type=int, default=None, help="streamed frames per step (default half a window)")
    a, extra = p.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher = a.teacher or str(_random_teacher(tmp))
        rows = []
        chunk = ["--chunk", str(a.chunk)] if a.chunk else []
        for name, flags in (("streamed", chunk), ("fresh", ["--rollout-frames", "0"])):
            parser = argparse.ArgumentParser()
            add_self_forcing_arguments(parser)
            argv = ["--teacher", teacher, "--device", a.device, "--steps", str(a.steps), "--batch", str(a.batch),
                    "--critic-steps", str(a.critic_steps), "--out", str(tmp / name), "--no-progress",
                    "--ckpt-every", str(10**9), *flags, *extra]  # fmt: skip
            m = self_forcing.train(parser.parse_args(argv))
            frames = m["chunk"] if m["streamed"] else m["rollout_frames"]
            rows.append((name, m["steps_per_second"], frames, m["steps_per_second"] * frames * m["batch"]))
    print(f"{'mode':10} {'steps/s':>9} {'frames/step':>12} {'gen frames/s':>13}")
    for name, sps, frames, fps in rows:
        print(f"{name:10} {sps:9.3f} {frames:12d} {fps:13.1f}")
    print(f"streamed / fresh generator steps/s: {rows[0][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
