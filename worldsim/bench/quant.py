"""int8 weights vs fp: checkpoint sizes, per-layer and whole-DiT error, and the per-frame step time.

    python -m worldsim.bench.quant [--checkpoint tiny] [--device cuda] [--steps 50] [--json FILE]

Prints a table (a benchmark, not a test: the figures depend on the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def _sizes(checkpoint: str, tmp: Path) -> dict[str, int]:
    from worldsim.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
    from worldsim.engine.quant import export_int8

    src = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(src)
    bf16 = {
        g: {k: (t.to(torch.bfloat16) if t.is_floating_point() else t) for k, t in s.items()}
        for g, s in ckpt.tensors.items()
    }
    save_checkpoint(tmp / "bf16.safetensors", config=ckpt.config, tensors=bf16)
    export_int8(src, tmp / "int8.safetensors")
    dit_bytes = {
        "dit_bf16": sum(t.numel() * 2 for t in ckpt.tensors["dit"].values()),
        "dit_int8": sum(
            t.numel() * t.element_size()
            for t in load_checkpoint(tmp / "int8.safetensors").tensors["dit"].values()
        ),
    }
    return {
        "file_as_shipped": src.stat().st_size,
        "file_bf16": (tmp / "bf16.safetensors").stat().st_size,
        "file_int8": (tmp / "int8.safetensors").stat().st_size,
        **dit_bytes,
    }


@torch.no_grad()
def _errors(checkpoint: str) -> dict[str, float]:
    from worldsim.checkpoint import load_checkpoint
    from worldsim.engine.quant import Int8Linear, load_dit

    ckpt = load_checkpoint(checkpoint)
    fp, q = load_dit(ckpt).eval(), load_dit(ckpt, weights="int8").eval()
    layer = []
    for name, m in q.named_modules():
        if isinstance(m, Int8Linear):
            ref = fp.get_submodule(name)
            x = torch.randn(256, m.in_features, generator=torch.Generator().manual_seed(0))
            a, b = ref(x), m(x)
            layer.append(((a - b).norm() / a.norm()).item())
    cfg = ckpt.config
    g = torch.Generator().manual_seed(0)
    F = min(cfg.window, 8)
    x = torch.randn(2, F, cfg.latent_channels, *cfg.latent_hw, generator=g)
    t = torch.rand(2, F, generator=g)
    keys = torch.rand(2, F, cfg.num_keys, generator=g) > 0.5
    a, b = fp(x, t, keys), q(x, t, keys)
    return {
        "layers": len(layer),
        "layer_rel_err_max": max(layer),
        "layer_rel_err_mean": sum(layer) / len(layer),
        "dit_forward_rel_err": ((a - b).norm() / a.norm()).item(),
    }


@torch.inference_mode()
def _step_ms(checkpoint: str, weights: str, device: str, steps: int, batch: int) -> float:
    from worldsim.engine.quant import neural_world

    w = neural_world(checkpoint, weights=weights, device=device, batch_size=batch)
    w.reset(list(range(batch)))
    keys = torch.zeros(batch, w.num_keys, dtype=torch.bool, device=w.device)
    for _ in range(3):
        w.step(keys)
    if w.device.type == "cuda":
        torch.cuda.synchronize()  # deliberate host sync: timing
    t0 = time.perf_counter()
    for _ in range(steps):
        w.step(keys)
    if w.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def run(args: argparse.Namespace) -> int:
    from worldsim.train.common import resolve_device

    device = str(resolve_device(args.device))
    with tempfile.TemporaryDirectory() as d:
        sizes = _sizes(args.checkpoint, Path(d))
    errors = _errors(args.checkpoint)
    times = {w: _step_ms(args.checkpoint, w, device, args.steps, args.batch) for w in ("fp", "int8")}
    result = {
        "checkpoint": args.checkpoint,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sizes_bytes": sizes,
        "errors": errors,
        "step_ms": times,
        "batch": args.batch,
    }
    print(f"checkpoint {args.checkpoint} on {device} (torch {torch.__version__})")
    for k, v in sizes.items():
        print(f"  {k:<22} {v / 2**20:8.2f} MiB")
    for k, v in errors.items():
        print(f"  {k:<22} {v:8.4g}")
    for k, v in times.items():
        print(f"  step ms ({k}, batch {args.batch}) {v:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench.quant", description=__doc__)
    p.add_argument("--checkpoint", default="tiny", help="checkpoint name or path")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--steps", type=int, default=20, help="timed frames per weights kind")
    p.add_argument("--batch", type=int, default=1, help="games stepped together")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
