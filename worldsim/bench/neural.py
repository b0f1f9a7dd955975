"""`worldsim bench neural`: frames/s, per-frame latency p50/p99 and GPU memory of the neural
world's per-frame step; `--compare` times eager vs CUDA graph, bf16 vs fp32, sessions 1/16/64 and the
anchor-shape presets in one process and prints one table (`--quick`: toy sizes, runs on CPU).

Timing: a warm-up (graph capture included), then half the time with a host sync after every step
(the latency percentiles), then half unsynced in chunks (frames/s: what a server ticking the world
sees). Numbers are measured, never derived.
"""

from __future__ import annotations

import argparse
import logging

import torch

from worldsim.bench.dense_sparse import sparse_rows
from worldsim.bench.plot import bar_chart, chart_path
from worldsim.bench.timing import (
    DTYPES,
    environment,
    fps_text,
    measure_world,
    memory_mib,
    reset_memory,
    time_steps,
    write_json_logged,
)
from worldsim.device import resolve_device
from worldsim.engine.dtype import engine_dtype
from worldsim.engine.latent import LatentEngine
from worldsim.errors import UserError
from worldsim.graph_world import GraphWorld
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.presets_anchor import ANCHOR_NAMES, VIDEO_FRAMES_PER_LATENT, anchor_preset, reported_fps
from worldsim.neural import NeuralWorld

log = logging.getLogger(__name__)


def build_world(
    *,
    checkpoint: str | None,
    device: torch.device,
    sessions: int,
    dtype: torch.dtype | None,
    graph: bool,
    preset: str | None = None,
    kernels: bool = False,
    steps: int | None = None,
    fold: bool = True,
):
    """A neural world: from a checkpoint, or (`preset`) the preset's shapes with random weights.

    `graph`: the engine's one-graph step; `kernels`: plus the fused Triton kernels (engine/fuse.py);
    `steps`: denoising steps (None = the config's); `fold=False`: a separate cache-write pass per frame.
    """

    if preset is None:
        world = NeuralWorld.from_checkpoint(
            checkpoint, device=device, batch_size=sessions, dtype=dtype, steps=steps, fold=fold
        )
    else:
        cfg = get_preset(preset)
        torch.manual_seed(0)
        with torch.device(device):
            dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
        start = torch.randn(4, 1, cfg.latent_channels, *cfg.latent_hw)
        world = NeuralWorld(
            dit, ae, cfg, batch_size=sessions, device=device, dtype=dtype, start_latents=start,
            checkpoint_name=f"{preset} (random weights)", steps=steps, fold=fold,
        )  # fmt: skip
    return GraphWorld(world, graph=graph, kernels=kernels) if graph or kernels else world


def measure_anchor(
    name: str, *, device: torch.device, dtype: torch.dtype, graph: bool, seconds: float, quick: bool
) -> dict:
    """Latent-only block steps of an anchor-shape preset (random weights, one session)."""

    cfg = anchor_preset(name, quick=quick)
    torch.manual_seed(0)
    with torch.device(device):
        dit = DiT(cfg)
    eng = LatentEngine(dit, batch_size=1, device=device, dtype=dtype, graph=graph)
    keys = torch.zeros(1, cfg.block_frames, cfg.num_keys, dtype=torch.bool, device=device)
    r = time_steps(lambda i: eng.step(keys), device, seconds)
    Fb = cfg.block_frames
    r.update(
        fps=r["steps_per_s"] * Fb, fps_per_session=r["steps_per_s"] * Fb, sessions=1,
        video_fps=r["steps_per_s"] * Fb * VIDEO_FRAMES_PER_LATENT, reported_video_fps=reported_fps(name),
        gpu_mib=memory_mib(device), params=dit.num_params(), tokens_per_frame=cfg.tokens_per_frame,
        block_frames=Fb, window=cfg.window, steps=cfg.steps,
    )  # fmt: skip

    return r


# ---------------------------------------------------------------------------------------------------
# The comparison (one process, one table)
# ---------------------------------------------------------------------------------------------------


def compare(
    *, device: torch.device, checkpoint: str | None, seconds: float, quick: bool, json_path: str | None = None
) -> dict:
    """Eager vs graph (vs graph + fused kernels) x dtype x sessions on the checkpoint (and `base`
    shapes), then the anchors.

    `quick`: the `test` preset and toy anchors at sessions 1 and 2 (CPU-sized). Graph rows only on CUDA;
    bf16 only on CUDA (CPU bf16 matmuls are no deployment target). `json_path` is rewritten after
    every row, so a run stopped by a time limit still leaves what it measured.
    """
    from worldsim.kernels.common import (
        triton_importable,  # the kernels package imports triton (heavy, optional)
    )

    cuda = device.type == "cuda"
    modes = ("eager", "graph") if cuda else ("eager",)
    world_modes = modes + ("graph+k",) if cuda and triton_importable() else modes
    dtypes = ("bf16", "fp32") if cuda else ("fp32",)
    sessions = (1, 2) if quick else (1, 16, 64)
    if quick:
        models = [("test (random)", None, "test", dtypes)]
    else:
        models = [(checkpoint or "default checkpoint", checkpoint, None, dtypes)]
        if cuda:
            models.append(("base (random)", None, "base", ("bf16",)))
    rows: list[dict] = []

    def result() -> dict:
        for r in rows:  # graph speed-up against the eager row of the same work
            same = ("model", "dtype", "sessions")
            eager = [
                e for e in rows if e["mode"] == "eager" and "fps" in e and all(e[k] == r[k] for k in same)
            ]
            r["vs_eager"] = r["fps"] / eager[0]["fps"] if eager and "fps" in r else None
        out = {"rows": rows, "quick": quick, "seconds_per_row": seconds, **environment(device)}
        if json_path:
            write_json_logged(json_path, out)
        return out

    for label, ckpt, preset, dts in models:
        for dt in dts:
            for S in sessions:
                for mode in world_modes:
                    reset_memory(device)
                    try:
                        world = build_world(
                            checkpoint=ckpt, device=device, sessions=S, dtype=DTYPES[dt],
                            graph=mode != "eager", preset=preset, kernels=mode == "graph+k",
                        )  # fmt: skip
                        r = measure_world(world, seconds)
                        if preset is None:  # the checkpoint's own name (resolves the default)
                            label = world.describe().get("checkpoint") or label
                        world.close()
                        del world
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one row, not the table
                        log.error("%s %s S=%d %s failed: %s", label, dt, S, mode, e)
                        r = {"sessions": S, "error": f"{type(e).__name__}: {e}"[:300]}
                    rows.append({"model": label, "dtype": dt, "mode": mode, **r})
                    log.info("%s %s S=%d %s: %s frames/s", label, dt, S, mode, fps_text(r.get("fps")))
                    result()
    if cuda or quick:
        for name in ANCHOR_NAMES:
            for mode in modes:
                reset_memory(device)
                dt = dtypes[0]
                try:
                    r = measure_anchor(
                        name,
                        device=device,
                        dtype=DTYPES[dt],
                        graph=mode == "graph",
                        seconds=seconds,
                        quick=quick,
                    )
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one row, not the table
                    log.error("%s %s failed: %s", name, mode, e)
                    r = {"sessions": 1, "error": f"{type(e).__name__}: {e}"[:300]}
                rows.append({"model": name + (" (quick)" if quick else ""), "dtype": dt, "mode": mode, **r})
                log.info("%s %s: %s latent frames/s", name, mode, fps_text(r.get("fps")))
                result()
    else:
        log.info("anchor shapes skipped: 1.1B-parameter models are timed on CUDA only (use --quick on CPU)")

    def add(row: dict) -> None:
        rows.append(row)
        result()

    ring = ("graph+ring",) if cuda and triton_importable() else ()

    sparse_rows(device=device, seconds=seconds, quick=quick, modes=modes + ring, dtype=dtypes[0], on_row=add)
    return result()


def chart(rows: list[dict], json_path: str) -> None:
    """The comparison's frames/s as bars beside its JSON (rows that failed are left out)."""
    done = [r for r in rows if "fps" in r]
    labels = [f"{r['model'][:24]} {r['dtype']} {r['mode']} S={r['sessions']}" for r in done]
    bar_chart(labels, [r["fps"] for r in done], chart_path(json_path),
              title="worldsim bench neural --compare", unit="frames/s (all sessions)")  # fmt: skip


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'model':<24} {'dtype':<5} {'mode':<7} {'sess':>4} {'frames/s':>9} {'fps/sess':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'GPU MiB':>8} {'x eager':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(
                f"{r['model'][:24]:<24} {r['dtype']:<5} {r['mode']:<7} {r['sessions']:>4} {r['error'][:60]}"
            )
            continue
        mem = f"{r['gpu_mib']:.0f}" if r.get("gpu_mib") is not None else "-"
        vs = f"{r['vs_eager']:.2f}" if r.get("vs_eager") is not None else "-"
        lines.append(
            f"{r['model'][:24]:<24} {r['dtype']:<5} {r['mode']:<7} {r['sessions']:>4} {r['fps']:>9.1f} "
            f"{r['fps_per_session']:>9.1f} {r['ms_p50']:>8.2f} {r['ms_p99']:>8.2f} {mem:>8} {vs:>7}"
        )
        if "video_fps" in r and not r["model"].endswith("(quick)"):  # toy sizes compare with nothing
            lines.append(
                f"{'':<24} latent frames; video frames/s (x4 VAE) = {r['video_fps']:.1f} "
                f"(reported by the authors: {r['reported_video_fps']:.0f})"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------

DTYPE_ROUNDS = 3  # --dtype both: fp32 and bf16 rows alternate this many times (the CPU's speed drifts)


def one_row(args: argparse.Namespace, device: torch.device, quick: bool, dtype, seconds: float) -> dict:
    """One configuration of `worldsim bench neural` as a table row."""
    graph = device.type == "cuda" and not getattr(args, "eager", False)
    fused = bool(getattr(args, "kernels", False))
    reset_memory(device)
    world = build_world(
        checkpoint=args.checkpoint, device=device, sessions=args.sessions, dtype=dtype, graph=graph,
        preset="test" if quick else None, kernels=fused,
        steps=getattr(args, "steps", None), fold=not getattr(args, "no_fold", False),
    )  # fmt: skip
    r = measure_world(world, seconds)
    inner = getattr(world, "world", world)
    world.close()
    return {
        "model": world.describe().get("checkpoint") or "?",
        "dtype": {v: k for k, v in DTYPES.items()}.get(inner.dtype, str(inner.dtype)),
        "mode": ("graph" if graph else "eager") + ("+k" if fused else "") + ("" if inner.fold else "+nofold"),
        "steps": inner.steps,
        "vs_eager": None,
        **r,
    }


def dtype_ab(args: argparse.Namespace, device: torch.device, quick: bool) -> list[dict]:
    """fp32 and bf16 rows, alternating `DTYPE_ROUNDS` times in this process; each row is the run with the
    median frames/s of its dtype (its `runs_fps` lists them all)."""
    runs: dict[torch.dtype, list[dict]] = {torch.float32: [], torch.bfloat16: []}
    for _ in range(DTYPE_ROUNDS):
        for dtype, rows in runs.items():
            rows.append(one_row(args, device, quick, dtype, args.seconds / (2 * DTYPE_ROUNDS)))
    out = []
    for rows in runs.values():
        rows.sort(key=lambda r: r["fps"])
        out.append({**rows[len(rows) // 2], "runs_fps": [round(r["fps"], 2) for r in rows]})
    return out


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.sessions < 1 or args.seconds <= 0:
        raise UserError(f"need --sessions >= 1 and --seconds > 0; got {args.sessions}, {args.seconds}")
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1 (denoising passes per frame), got {args.steps}")
    quick = bool(getattr(args, "quick", False))
    if args.compare:
        result = compare(
            device=device, checkpoint=args.checkpoint, seconds=args.seconds, quick=quick, json_path=args.json
        )
        print(format_table(result["rows"]))
        if args.json:
            chart(result["rows"], args.json)
    elif getattr(args, "dtype", "auto") == "both":
        rows = dtype_ab(args, device, quick)
        print(format_table(rows))
        ratio = rows[1]["fps"] / rows[0]["fps"]
        print(f"bf16 / fp32: {ratio:.2f}x (medians of {DTYPE_ROUNDS} alternating runs each, one process)")
        if args.json:
            write_json_logged(args.json, {"rows": rows, "bf16_over_fp32": ratio, **environment(device)})
    else:
        choice = getattr(args, "dtype", "auto")
        dtype = DTYPES.get(choice) or engine_dtype(device)
        row = one_row(args, device, quick, dtype, args.seconds)
        print(format_table([row]))
        if args.json:
            write_json_logged(args.json, {**row, **environment(device)})
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m worldsim.bench.neural`: the same benchmark, with `--quick` and `--eager`."""
    p = argparse.ArgumentParser(prog="python -m worldsim.bench.neural", description=__doc__)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--compare", action="store_true")
    p.add_argument("--quick", action="store_true", help="toy sizes (the test preset, toy anchors)")
    p.add_argument("--eager", action="store_true", help="time the eager step even on CUDA")
    p.add_argument("--kernels", action="store_true", help="use the fused Triton kernels (engine/fuse.py)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    p.add_argument("--no-fold", action="store_true", help="a separate cache-write pass per frame")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "both"], default="auto",
                   help="activations; both: fp32 vs bf16 alternating in this process, with their ratio")  # fmt: skip
    p.add_argument("--json", default=None, metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except UserError as e:
        p.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    raise SystemExit(main())
