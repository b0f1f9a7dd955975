"""`worldsim bench train`: the teacher's training throughput (clips/s, ms per part, DiT FLOP use).

One variant is one way of feeding and running the teacher's step: `live` renders clips with the game and
encodes them every step (the training path before the latent store), `store` samples windows from the
latent store; `eager` or `compile` (torch.compile with static shapes); the training forward's attention
backend (`sdpa` with a dense additive mask, or `flex` with a block mask that skips the masked tiles).
`--compare` times today's path (live, eager, sdpa) and the new ones in one process, so their ratio holds
when the machine's speed drifts. Random weights: the cost of a step does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass

import torch

from worldsim.bench.plot import bar_chart, chart_path
from worldsim.device import resolve_device
from worldsim.errors import UserError
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.config import get_preset
from worldsim.model.dit import DiT
from worldsim.train.common import game_batches
from worldsim.train.flow import encode_clips, flow_matching_loss, sample_t, train_step
from worldsim.train.store import LatentStore, StoreSpec, game_source

log = logging.getLogger(__name__)

# bf16 dense tensor-core peak (FLOP/s) by device name, for the FLOP utilization (none: not reported)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
PARTS = ("data", "encode", "forward_backward", "optimizer")
DEFAULT_BATCH = {"test": 4, "tiny": 64, "base": 32}  # the training defaults the table measured


@dataclass(frozen=True)
class Variant:
    source: str = "live"
    compile: bool = False
    attention: str = "sdpa"

    @property
    def name(self) -> str:
        return f"{self.source}+{'compile' if self.compile else 'eager'}+{self.attention}"


def compare_variants(device: torch.device) -> list[Variant]:
    """Today's path first (the ratio's denominator), then the new ones."""
    rows = [Variant("live"), Variant("store"), Variant("store", compile=True)]
    if device.type == "cuda":
        rows.append(Variant("store", compile=True, attention="flex"))
    return rows


# ---------------------------------------------------------------------------------------------------
# FLOPs of one training clip (useful work only: the visible attention pairs, not the masked ones)
# ---------------------------------------------------------------------------------------------------


def dit_forward_flops(cfg, frames: int) -> float:
    """Multiply-adds x 2 of the DiT's forward on one clip of `frames` frames: linear layers per token plus
    attention over the key frames each query frame may see (block-causal window + sinks)."""
    D, N, L = cfg.width, cfg.tokens_per_frame, cfg.depth
    hidden = int(D * cfg.mlp_ratio)
    per_token = 2 * L * (D * 3 * D + D * D + 2 * D * hidden)  # qkv, proj, mlp
    per_token += 2 * cfg.latent_channels * cfg.patch_size**2 * D * 2  # patch in and out
    tokens = frames * N
    attn = 0.0
    for layer in range(L):
        w = cfg.layer_window(layer) // cfg.block_frames
        for f in range(frames):
            seen = min(f // cfg.block_frames + 1, w) * cfg.block_frames + cfg.sinks
            attn += 2 * 2 * N * seen * N * D  # q.k and p.v for N queries over seen*N keys
    return per_token * tokens + attn


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


# ---------------------------------------------------------------------------------------------------
# One variant
# ---------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # deliberate host sync: the clock must see finished work


def measure(
    variant: Variant,
    *,
    preset: str,
    batch: int,
    seconds: float,
    device: torch.device,
    clip: int | None = None,
) -> dict:
    """Time `variant`'s teacher step for ~`seconds` (after warm-up and compilation); parts timed apart."""
    torch.manual_seed(0)
    cfg = get_preset(preset)
    frames = clip or cfg.window + max(1, cfg.window // 2)
    ae = Autoencoder(cfg.autoencoder).to(device).eval().requires_grad_(False)
    model = DiT(cfg).to(device).train()
    model.attention = variant.attention
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    fill_s = None
    if variant.source == "store":
        t0 = time.perf_counter()
        spec = StoreSpec(trajectories=max(64, 2 * batch), length=max(2 * frames, 64), refresh_every=0)
        store = LatentStore(ae, game_source(size=cfg.image_hw, device=device, seed=0), spec,
                            num_keys=cfg.num_keys, device=device)  # fmt: skip
        _sync(device)
        fill_s = time.perf_counter() - t0
        fill_frames = spec.trajectories * spec.length

        def data():
            return store.sample(batch, frames)

        def encode(x):
            return x
    else:
        clips = game_batches(batch=batch, frames=frames, size=cfg.image_hw, device=device, seed=0)

        def data():
            return next(clips)

        def encode(x):
            return encode_clips(ae, x)

    fwd = torch.compile(model, dynamic=False) if variant.compile else model

    def step():
        x, keys = data()
        z0 = encode(x)
        t = sample_t(z0.shape[:2], shift=cfg.schedule_shift, context_prob=0.5, context_max=0.1, device=device)
        drop = torch.rand(t.shape, device=device) < 0.1
        return train_step(fwd, model, opt, z0, t, keys, drop, grad_clip=1.0, amp=amp)

    t0 = time.perf_counter()
    for _ in range(3):  # compile (a few graphs: first call, backward), cuDNN / cuBLAS autotune
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        loss, _ = step()
        n += 1
        if n % 8 == 0:
            _sync(device)
    _sync(device)
    elapsed = time.perf_counter() - t0
    parts = _parts(data, encode, fwd, model, opt, cfg, amp, device)
    flops = 3 * dit_forward_flops(cfg, frames) * batch  # forward + backward (2x) per step
    peak = peak_flops(device)
    row = {
        "variant": variant.name,
        "source": variant.source,
        "compile": variant.compile,
        "attention": variant.attention,
        "preset": preset,
        "batch": batch,
        "clip_frames": frames,
        "steps": n,
        "seconds": round(elapsed, 3),
        "clips_per_second": round(n * batch / elapsed, 2),
        "frames_per_second": round(n * batch * frames / elapsed, 1),
        "parts_ms": parts,
        "dit_tflop_per_step": round(flops / 1e12, 4),
        "achieved_tflops": round(flops * n / elapsed / 1e12, 2),
        "warmup_seconds": round(warm_s, 1),
        "final_loss": round(float(loss.detach()), 4),
    }
    if peak:
        row["mfu"] = round(flops * n / elapsed / peak, 4)
    if fill_s is not None:
        row["store_fill_seconds"] = round(fill_s, 2)
        row["store_fill_frames_per_second"] = round(fill_frames / fill_s, 1)
    if device.type == "cuda":
        row["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def _parts(data, encode, fwd, model, opt, cfg, amp, device, reps: int = 5) -> dict:
    """Milliseconds per part of a step, each part synced apart (so their sum exceeds the unsynced step)."""
    acc = dict.fromkeys(PARTS, 0.0)
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        x, keys = data()
        _sync(device)
        t1 = time.perf_counter()
        z0 = encode(x)
        _sync(device)
        t2 = time.perf_counter()
        t = sample_t(z0.shape[:2], shift=cfg.schedule_shift, context_prob=0.5, context_max=0.1, device=device)
        drop = torch.rand(t.shape, device=device) < 0.1  # as the step: the compiled graph takes a mask
        with amp:
            loss = flow_matching_loss(fwd, z0, t, keys, drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _sync(device)
        t4 = time.perf_counter()
        for k, (a, b) in zip(PARTS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
            acc[k] += (b - a) * 1e3 / reps
    return {k: round(v, 2) for k, v in acc.items()}


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def format_table(rows: list[dict]) -> str:
    head = f"{'variant':<26} {'clips/s':>9} {'ratio':>6} {'data':>7} {'encode':>7} {'fwd+bwd':>8} {'optim':>7} {'MFU':>6}"
    lines = [head, "-" * len(head)]
    base = rows[0]["clips_per_second"]
    for r in rows:
        p = r["parts_ms"]
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        lines.append(
            f"{r['variant']:<26} {r['clips_per_second']:>9.1f} {r['clips_per_second'] / base:>5.2f}x "
            f"{p['data']:>7.1f} {p['encode']:>7.1f} {p['forward_backward']:>8.1f} {p['optimizer']:>7.1f} {mfu:>6}"
        )
    lines.append("ms per part, each synced apart; ratio: clips/s over the first row's, in this run")
    return "\n".join(lines)


def summarize(rows: list[dict], device: torch.device) -> dict:
    """The JSON result of timed `rows`: one row's clips/s, parts and MFU; with several, the fastest of the
    new ones and its `ratio` over the first (today's path)."""
    best = rows[-1] if len(rows) == 1 else max(rows[1:], key=lambda r: r["clips_per_second"])
    result = {
        "rows": rows,
        "clips_per_second": best["clips_per_second"],
        "parts_ms": best["parts_ms"],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    if "mfu" in best:
        result["mfu"] = best["mfu"]
    if len(rows) > 1:
        result["best"] = best["variant"]
        result["ratio"] = round(best["clips_per_second"] / rows[0]["clips_per_second"], 3)
    return result


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    preset = args.preset or "tiny"
    try:
        get_preset(preset)
    except ValueError as e:
        raise UserError(f"--preset: {e}") from e
    batch = DEFAULT_BATCH.get(preset, 8) if args.batch is None else args.batch  # --batch 0 is an error
    if args.seconds <= 0 or batch < 1:
        raise UserError(f"need --seconds > 0 and --batch >= 1, got {args.seconds}, {batch}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.compare:
        variants = compare_variants(device)
    else:
        variants = [Variant(args.source, compile=args.compile, attention=args.attention or "sdpa")]
    rows = []
    for v in variants:
        log.info("timing %s (%s, batch %d, %s)", v.name, preset, batch, device)
        rows.append(measure(v, preset=preset, batch=batch, seconds=args.seconds, device=device,
                            clip=args.clip_frames))  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    print(format_table(rows))
    result = summarize(rows, device)
    if "ratio" in result:
        print(f"best: {result['best']} at {result['ratio']}x today's {rows[0]['variant']}")
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.json)
        if len(rows) > 1:
            bar_chart([r["variant"] for r in rows], [r["clips_per_second"] for r in rows], chart_path(args.json),
                      title=f"worldsim bench train --compare ({preset}, batch {batch})", unit="clips/s")  # fmt: skip
    return 0
