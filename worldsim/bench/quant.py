"""8-bit weights vs fp in one process: fp / int8 / int8-triton / fp8 step time and fidelity per batch.

    python -m worldsim.bench.quant [--checkpoint tiny | --preset base] [--device cuda] [--batches 1,16,64]
                                   [--frames 20] [--fidelity-frames 32] [--graph] [--json FILE]

For each batch: one fp world (the checkpoint, or a preset's shapes with random weights), fp8 calibrated on
it (engine/fp8.py), then every weights kind built from the same DiT with `apply_weights` and timed on the
eager per-frame step (and the CUDA-graph step with `--graph`). Fidelity: PSNR of each kind's uint8 frames
against the fp frames of the same rollout (same seeds and keys) at horizons 1/8/32, and (checkpoints only)
PSNR against the real game from the same real start frames on the same explorer keys. int8-triton is
int8 with the Triton matmul forced on (kernels/w8_matmul.py; CUDA only). Plus, for checkpoints, file
sizes and the int8 layer / whole-DiT error. A benchmark, not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from worldsim.checkpoint import load_checkpoint, load_module, resolve_checkpoint, save_checkpoint
from worldsim.data import Explorer
from worldsim.device import resolve_device
from worldsim.engine import quant
from worldsim.engine.fp8 import calibrate
from worldsim.engine.quant import Int8Linear, apply_weights, export_int8, load_dit
from worldsim.game import GameWorld
from worldsim.graph_world import GraphWorld
from worldsim.metrics import psnr
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.neural import NeuralWorld

log = logging.getLogger(__name__)

KINDS = ("fp", "int8", "int8-triton", "fp8")
HORIZONS = (1, 8, 32)


def _sizes(checkpoint: str, tmp: Path) -> dict[str, int]:

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


# ---------------------------------------------------------------------------------------------------
# Worlds of every kind from one set of components
# ---------------------------------------------------------------------------------------------------


def components(checkpoint: str | None, preset: str | None) -> dict:
    """The fp DiT, autoencoder, config and start latents of a checkpoint or (random weights) a preset."""

    if preset is not None:
        cfg = get_preset(preset)
        torch.manual_seed(0)
        start = torch.randn(4, 1, cfg.latent_channels, *cfg.latent_hw)
        return dict(dit=DiT(cfg), ae=Autoencoder(cfg.autoencoder), cfg=cfg, start=(start, None), name=preset)

    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.config
    start = ckpt.tensors.get("start", {})
    return dict(
        dit=load_dit(ckpt), ae=load_module(Autoencoder(cfg.autoencoder), ckpt, "autoencoder"), cfg=cfg,
        start=(start.get("latents"), start.get("keys")), name=ckpt.path.stem,
    )  # fmt: skip


def make_world(parts: dict, dit, batch: int, device: str, dtype: torch.dtype | None):

    z, k = parts["start"]
    return NeuralWorld(
        dit, parts["ae"], parts["cfg"], batch_size=batch, device=device, dtype=dtype,
        start_latents=z, start_keys=k, checkpoint_name=parts["name"],
    )  # fmt: skip


class _TritonForced:
    """int8-triton: the Triton int8 matmul on every Int8Linear while inside."""

    def __enter__(self):

        self.prev, quant.W8_KERNEL_ALWAYS = quant.W8_KERNEL_ALWAYS, True

    def __exit__(self, *exc):

        quant.W8_KERNEL_ALWAYS = self.prev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # deliberate host sync: timing


@torch.inference_mode()
def step_ms(world, frames: int) -> float:
    """Median-free mean ms per `world.step` over `frames` frames after 3 warm-up frames (zero keys)."""
    world.reset(list(range(world.batch_size)))
    keys = torch.zeros(world.batch_size, world.num_keys, dtype=torch.bool, device=world.device)
    for _ in range(3):
        world.step(keys)
    _sync(world.device)
    t0 = time.perf_counter()
    for _ in range(frames):
        world.step(keys)
    _sync(world.device)
    return (time.perf_counter() - t0) / frames * 1e3


@torch.inference_mode()
def rollout(world, frames: int, seed: int = 1) -> torch.Tensor:
    """uint8 frames `[F+1, B, H, W, 3]` (on the CPU) from seeds 0..B-1 with seeded random keys."""

    B = world.batch_size
    g = torch.Generator().manual_seed(seed)
    out = [world.reset(list(range(B))).cpu()]
    for _ in range(frames):
        out.append(world.step(torch.rand(B, world.num_keys, generator=g) < 0.25).cpu())
    return torch.stack(out)


def _psnr_at(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:

    return {str(h): round(psnr(a[h], b[h]).mean().item(), 2) for h in HORIZONS if h < a.shape[0]}


@torch.inference_mode()
def real_game_psnr(world, frames: int = 32, context: int = 4, seed: int = 0) -> dict[str, float]:
    """PSNR vs the real game at horizons 1/8/32, from `context` real frames on the same explorer keys."""

    B, dev = world.batch_size, world.device
    game = GameWorld(batch_size=B, size=(world.height, world.width), level="default", device=dev)
    explorer = Explorer(B, game.num_keys, seed, dev)
    real = [game.reset([seed + i for i in range(B)])]
    keys = [torch.zeros(B, game.num_keys, dtype=torch.bool, device=dev)]
    for _ in range(context - 1):
        keys.append(explorer.act(game.blocked))
        real.append(game.step(keys[-1]))
    world.reset_from_frames(torch.stack(real, 1), torch.stack(keys, 1))
    out = {}
    for i in range(1, frames + 1):
        k = explorer.act(game.blocked)
        r, g = game.step(k), world.step(k)
        if i in HORIZONS:
            out[str(i)] = round(psnr(g, r).mean().item(), 2)
    return out


def run_batch(parts: dict, batch: int, args, device: str, dtype) -> dict:
    """Every kind at one batch size: eager (and graph) step ms, PSNR vs fp, PSNR vs the real game."""

    fp_world = make_world(parts, parts["dit"], batch, device, dtype)
    cal = calibrate(fp_world, frames=args.calibration_frames, games=min(4, batch))
    cuda = fp_world.device.type == "cuda"
    res: dict = {"batch": batch, "fp8_calibration_s": round(cal.info["seconds"], 2), "kinds": {}}
    ref = None
    for kind in KINDS:
        if kind == "int8-triton" and not cuda:
            continue  # the Triton path runs on CUDA only (the interpreter is not a speed)
        dit = apply_weights(fp_world.dit, kind.split("-")[0], calibration=cal)
        world = fp_world if kind == "fp" else make_world(parts, dit, batch, device, dtype)
        forced = _TritonForced() if kind == "int8-triton" else None
        r: dict = {}
        if forced:
            forced.__enter__()
        try:
            r["eager_ms"] = round(step_ms(world, args.frames), 3)
            if args.graph and cuda:
                gw = GraphWorld(world, graph=True)
                r["graph_ms"] = round(step_ms(gw, args.frames), 3)
            if args.fidelity_frames:
                frames = rollout(world, args.fidelity_frames)
                if kind == "fp":
                    ref = frames
                r["psnr_vs_fp"] = _psnr_at(frames, ref)
            if args.real and parts.get("name") and args.preset is None and batch <= args.real_max_batch:
                r["psnr_vs_real"] = real_game_psnr(world)
        finally:
            if forced:
                forced.__exit__(None, None, None)
        res["kinds"][kind] = r
        log.info("batch %d %s: %s", batch, kind, r)
        del world, dit
    return res


def print_table(result: dict) -> None:
    print(f"\n{result['model']} on {result['device']} (torch {result['torch']}, {result['dtype']})")
    print(f"fp8 matmul: {result['fp8_path']}; fps/sess = 1000 / the faster of eager and graph ms")
    head = f"{'batch':>5} {'weights':<12} {'eager ms':>9} {'graph ms':>9} {'fps/sess':>9}"
    head += "".join(f" {'vs fp@' + str(h):>8}" for h in HORIZONS)
    head += "".join(f" {'real@' + str(h):>8}" for h in HORIZONS)
    print(head)
    for b in result["batches"]:
        for kind, r in b["kinds"].items():
            best = min(v for v in (r.get("eager_ms"), r.get("graph_ms")) if v)
            line = f"{b['batch']:>5} {kind:<12} {r['eager_ms']:>9.2f} "
            line += f"{r['graph_ms']:>9.2f}" if "graph_ms" in r else f"{'-':>9}"
            line += f" {1e3 / best:>9.1f}"
            for key in ("psnr_vs_fp", "psnr_vs_real"):
                d = r.get(key, {})
                line += "".join(f" {d[str(h)]:>8.2f}" if str(h) in d else f" {'-':>8}" for h in HORIZONS)
            print(line)


def run(args: argparse.Namespace) -> int:

    device = str(resolve_device(args.device))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    parts = components(None if args.preset else args.checkpoint, args.preset)
    result = {
        "model": f"{args.preset} (random weights)" if args.preset else args.checkpoint,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype or ("bf16" if device.startswith("cuda") else "fp32"),
        "frames": args.frames,
        "batches": [],
    }
    cuda = device.startswith("cuda")
    fast = cuda and result["dtype"] == "bf16" and torch.cuda.get_device_capability(device) >= (8, 9)
    result["fp8_path"] = "torch._scaled_mm" if fast else "emulation (fp8 values, fp32 matmul: not a speed)"
    if args.preset is None and not args.no_sizes:
        with tempfile.TemporaryDirectory() as d:
            result["sizes_bytes"] = _sizes(args.checkpoint, Path(d))
        result["int8_errors"] = _errors(args.checkpoint)
    for b in args.batches:
        result["batches"].append(run_batch(parts, b, args, device, dtype))
    for k, v in result.get("sizes_bytes", {}).items():
        print(f"  {k:<22} {v / 2**20:8.2f} MiB")
    for k, v in result.get("int8_errors", {}).items():
        print(f"  int8 {k:<22} {v:8.4g}")
    print_table(result)
    if args.json:
        tmp = f"{args.json}.tmp"
        Path(tmp).write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)
    return 0


def _batches(s: str) -> list[int]:
    try:
        out = [int(v) for v in s.split(",") if v]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--batches takes positive integers like 1,16,64, got {s!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench.quant", description=__doc__)
    p.add_argument("--checkpoint", default="tiny", help="checkpoint name or path")
    p.add_argument("--preset", default=None, help="time a preset's shapes with random weights (e.g. base)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on CUDA, fp32 else")
    p.add_argument("--batches", type=_batches, default=[1, 16, 64], help="sessions per step, e.g. 1,16,64")
    p.add_argument("--frames", type=int, default=20, help="timed frames per kind and batch")
    p.add_argument(
        "--fidelity-frames", type=int, default=32, help="frames of the PSNR-vs-fp rollout (0: none)"
    )
    p.add_argument("--calibration-frames", type=int, default=8, help="frames of the fp8 calibration rollouts")
    p.add_argument("--graph", action="store_true", help="also time the one-CUDA-graph step (CUDA only)")
    p.add_argument("--no-real", dest="real", action="store_false", help="skip PSNR vs the real game")
    p.add_argument("--real-max-batch", type=int, default=16, help="PSNR vs the real game up to this batch")
    p.add_argument("--no-sizes", action="store_true", help="skip the int8 file sizes and layer errors")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
