"""`python -m worldsim.kernels.bench`: each Triton kernel against its PyTorch reference at the shapes we run.

CUDA only (timings under the interpreter mean nothing). Times one call with CUDA events after a
warm-up (median of repeats); prints a table and writes JSON with `--json FILE`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from collections.abc import Callable
from functools import partial

import torch
from worldsim.kernels.adaln_norm import adaln_layernorm, adaln_layernorm_reference
from worldsim.kernels.ring_attention import ring_attention, ring_attention_reference, supported
from worldsim.kernels.w8_matmul import supported as w8_supported
from worldsim.kernels.w8_matmul import w8_matmul

log = logging.getLogger(__name__)


def time_call(fn: Callable[[], object], repeats: int = 50) -> float:
    """Median milliseconds of `fn()` on the current CUDA stream."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()  # deliberate host sync: the clock must see finished work
        times.append(a.elapsed_time(b))
    return statistics.median(times)


# (name, B, F, N, D) for adaLN; (name, B, H, Fq, Fk, N, Dh, visible fraction) for attention
ADALN_SHAPES = [
    ("tiny S=1", 1, 1, 64, 256),
    ("tiny S=64", 64, 1, 64, 256),
    ("base S=1", 1, 1, 64, 512),
    ("base S=64", 64, 1, 64, 512),
    ("matrix-game-2", 1, 3, 880, 1536),
]
ATTN_SHAPES = [
    ("tiny S=1", 1, 4, 1, 16, 64, 64, 1.0),
    ("tiny S=64", 64, 4, 1, 16, 64, 64, 1.0),
    ("base S=64 (33 frames)", 64, 8, 1, 33, 64, 64, 1.0),
    ("base S=64, 1/4 visible", 64, 8, 1, 33, 64, 64, 0.25),
    ("base S=64, window 128", 64, 8, 1, 129, 64, 64, 1.0),
    ("base S=64, w128, 1/4 vis", 64, 8, 1, 129, 64, 64, 0.25),
    ("matrix-game-2 (3x880)", 1, 12, 3, 6, 880, 128, 1.0),
]

# (name, M, K, N) for the int8 weight matmul: M = sessions * 64 tokens; K -> N of qkv, proj, MLP up/down
# (the MLP is 4x wide: worldsim/model/dit.py)
W8_SHAPES = [
    (f"{preset} S={s} {layer}", s * 64, K, N)
    for preset, D in (("tiny", 256), ("base", 384), ("w512", 512))  # base is 384 wide; 512 was first planned
    for s in (1, 16, 64)
    for layer, K, N in (("qkv", D, 3 * D), ("proj", D, D), ("mlp-up", D, 4 * D), ("mlp-down", 4 * D, D))
]


def _cast_matmul(x, w, scale, bias):  # Int8Linear's PyTorch path (worldsim/engine/quant.py)
    return torch.nn.functional.linear(x, w.to(x.dtype)) * scale.to(x.dtype) + bias.to(x.dtype)


def _fp8_matmul(
    x, wq, sx, sw, bias
):  # Fp8Linear's fast path (worldsim/engine/fp8.py), activation cast included
    xq = (x.float() / sx).clamp(-448, 448).to(torch.float8_e4m3fn)
    return torch._scaled_mm(
        xq, wq.t(), scale_a=sx.expand(x.shape[0], 1).contiguous(), scale_b=sw[None, :], bias=bias,
        out_dtype=torch.bfloat16,
    )  # fmt: skip


def run_w8(dtype: torch.dtype) -> list[dict]:
    """int8 weight matmul: Triton kernel vs the cast-matmul ("ref"), beside the plain fp linear and
    (bf16 on sm >= 8.9) fp8 `_scaled_mm` at the same shape."""
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    fp8 = dtype == torch.bfloat16 and torch.cuda.get_device_capability() >= (8, 9)
    for name, M, K, N in W8_SHAPES:
        x = torch.randn(M, K, device="cuda", dtype=dtype, generator=g)
        wf = torch.randn(N, K, device="cuda", dtype=dtype, generator=g) * 0.02
        scale = wf.float().abs().amax(1) / 127
        w = torch.round(wf.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = torch.zeros(N, device="cuda", dtype=dtype)
        row = {"kernel": "w8_matmul", "shape": name, "M": M, "K": K, "N": N}
        row["ref_ms"] = time_call(partial(_cast_matmul, x, w, scale, bias))
        row["triton_ms"] = time_call(partial(w8_matmul, x, w, scale, bias)) if w8_supported(x, w) else None
        row["fp_linear_ms"] = time_call(partial(torch.nn.functional.linear, x, wf, bias))
        row["fp8_scaled_mm_ms"] = None
        if fp8:
            sw = wf.float().abs().amax(1) / 448
            wq = (wf.float() / sw[:, None]).to(torch.float8_e4m3fn)
            sx = x.float().abs().amax() / 448
            try:
                row["fp8_scaled_mm_ms"] = time_call(partial(_fp8_matmul, x, wq, sx, sw, bias))
            except RuntimeError as e:
                log.warning("fp8 _scaled_mm refused %s: %s", name, e)
        rows.append(row)
    for r in rows:
        r["speedup"] = r["ref_ms"] / r["triton_ms"] if r["triton_ms"] else None
        r["dtype"] = str(dtype).removeprefix("torch.")
    return rows


def print_w8(rows: list[dict]) -> None:
    print(
        f"\n{'int8 weight matmul':<26} {'dtype':<9} {'fp lin':>8} {'cast ms':>8} {'triton':>8} {'fp8 mm':>8}"
    )
    for r in rows:
        f = [
            f"{r[k]:.4f}" if r[k] else "n/a"
            for k in ("fp_linear_ms", "ref_ms", "triton_ms", "fp8_scaled_mm_ms")
        ]
        print(f"{r['shape']:<26} {r['dtype']:<9} {f[0]:>8} {f[1]:>8} {f[2]:>8} {f[3]:>8}")


def run(dtype: torch.dtype) -> list[dict]:
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for name, B, F, N, D in ADALN_SHAPES:
        x = torch.randn(B, F, N, D, device="cuda", dtype=dtype, generator=g)
        mod = torch.randn(B, F, 1, 6, D, device="cuda", dtype=dtype, generator=g)
        sh, sc = mod[:, :, :, 0], mod[:, :, :, 1]
        ref = time_call(partial(adaln_layernorm_reference, x, sh, sc))
        tri = time_call(partial(adaln_layernorm, x, sh, sc))
        rows.append({"kernel": "adaln_layernorm", "shape": name, "ref_ms": ref, "triton_ms": tri})
    for name, B, H, Fq, Fk, N, Dh, frac in ATTN_SHAPES:
        q = torch.randn(B, H, Fq * N, Dh, device="cuda", dtype=dtype, generator=g)
        k = torch.randn(B, H, Fk * N, Dh, device="cuda", dtype=dtype, generator=g)
        v = torch.randn_like(k)
        mask = torch.rand(B, Fq, Fk, device="cuda", generator=g) < frac
        mask[:, :, 0] = True
        ok = supported(q, mask)
        ref = time_call(partial(ring_attention_reference, q, k, v, mask))
        tri = time_call(partial(ring_attention, q, k, v, mask)) if ok else None
        rows.append({"kernel": "ring_attention", "shape": name, "ref_ms": ref, "triton_ms": tri})
    for r in rows:
        r["speedup"] = r["ref_ms"] / r["triton_ms"] if r["triton_ms"] else None
        r["dtype"] = str(dtype).removeprefix("torch.")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.kernels.bench", description=__doc__)
    p.add_argument("--json", default=None, metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        p.exit(2, "error: worldsim.kernels.bench times CUDA kernels; run it on a GPU machine\n")
    rows = run(torch.bfloat16) + run(torch.float32)
    w8 = run_w8(torch.bfloat16) + run_w8(torch.float32)
    print(f"{'kernel':<16} {'shape':<26} {'dtype':<9} {'torch ms':>9} {'triton ms':>10} {'speed-up':>8}")
    for r in rows:
        tri = f"{r['triton_ms']:.4f}" if r["triton_ms"] else "n/a"
        sp = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        print(f"{r['kernel']:<16} {r['shape']:<26} {r['dtype']:<9} {r['ref_ms']:>9.4f} {tri:>10} {sp:>8}")
    print_w8(w8)
    rows += w8
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(
                {"rows": rows, "device": torch.cuda.get_device_name(), "torch": torch.__version__},
                f,
                indent=2,
            )
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
