"""Runs that stop and go on elsewhere: the compact train state, the cumulative budget, live metrics, and a
run folder that a failed start does not leave behind.

Two train states sit in a run folder. `<stage>.pt` is the full one (fp32 weights, EMA, optimizer moments):
a resume from it on the same disk is exact. `<stage>.state.safetensors` (+ `.partN` files, each <= 16 MiB,
the size that comes back from a GPU machine) is the compact one, written beside it: the EMA weights as int8
per row (the shipped 8-bit format), the training weights as an int8 difference from the EMA (small, so
close to exact), frozen parts in bf16, and no optimizer moments: AdamW with betas (0.9, 0.95) re-estimates
them within a few dozen steps, during which the resumed run ramps its learning rate back up over
REWARM_STEPS steps on the same schedule. 2 bytes a parameter instead of 16: a copy of the tiny teacher's
run is ~16 MiB, the base teacher's ~42 MiB. `--resume` takes the full state when it is there, else the
compact one, so copying the compact files into a fresh `--out` on another machine continues the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from worldsim.checkpoint import load_checkpoint, save_checkpoint
from worldsim.errors import UserError
from worldsim.storage8 import dequantize_stored, quantize_stored
from worldsim.train import common

log = logging.getLogger(__name__)

COMPACT_SUFFIX = ".state.safetensors"
REWARM_STEPS = 20  # LR ramp after a resume without optimizer moments (AdamW's second moment: ~20 steps)
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------------------------------
# Compact state
# ---------------------------------------------------------------------------------------------------


def compact_path(out: str | os.PathLike, stage: str) -> Path:
    return Path(out) / f"{stage}{COMPACT_SUFFIX}"


def save_compact(
    path: Path,
    *,
    config,
    model: Mapping[str, torch.Tensor],
    ema: Mapping[str, torch.Tensor],
    frozen: Mapping[str, Mapping[str, torch.Tensor]],
    meta: dict,
) -> Path:
    """Write the compact state (module doc): `model` and `ema` state dicts of one module, `frozen` groups
    ({name: state dict}, stored bf16/fp32) and `meta` (JSON: step, schedule, history, budget, ...)."""
    stored_ema = quantize_stored(ema)  # int8 per row (loads back as floats)
    # the difference from the EMA as it loads back (not the exact EMA), so that EMA + difference is the
    # training weights to the difference's own int8 precision, not to the EMA's
    ema_back = dequantize_stored(path, "dit", stored_ema)
    delta = {k: (v.float() - ema_back[k].float()) if v.is_floating_point() else v for k, v in model.items()}
    tensors = {
        "dit": stored_ema,
        "delta": quantize_stored(delta, min_numel=1024),
        **{g: _bf16_matrices(s) for g, s in frozen.items()},
    }
    save_checkpoint(path, config=config, tensors=tensors, metrics={"train_state": meta})
    return path


def _bf16_matrices(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bfloat16) if v.is_floating_point() and v.ndim >= 2 else v for k, v in state.items()}


def load_compact(path: Path) -> dict:
    """The compact state as the full state's layout: config, model, ema, frozen groups, meta (opt: None)."""
    ckpt = load_checkpoint(path)
    meta = ckpt.metrics.get("train_state")
    if not isinstance(meta, dict) or "delta" not in ckpt.tensors:
        raise UserError(f"{path} is a checkpoint, not a compact train state; pass it with --init instead")
    ema = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.tensors["dit"].items()}
    delta = ckpt.tensors["delta"]
    model = {k: ema[k] + delta[k].float() if v.is_floating_point() else v for k, v in ema.items()}
    frozen = {
        g: {k: v.float() if v.is_floating_point() else v for k, v in s.items()}
        for g, s in ckpt.tensors.items()
        if g not in ("dit", "delta")
    }
    return {**meta, "config": ckpt.config.to_dict(), "model": model, "ema": ema, "opt": None, **frozen}


def load_train_state(path: str | os.PathLike, flag: str = "state") -> dict:
    """A full train state (`.pt`) or a compact one (`.state.safetensors`), in the full state's layout."""
    if str(path).endswith(COMPACT_SUFFIX):
        return load_compact(Path(path))
    return common.load_state(path, flag=flag)


def open_resume(out: Path, stage: str, full_file: str, resume: bool) -> dict | None:
    """The state to resume from: the full `<out>/<full_file>` if present, else the compact state; None when
    not resuming. An existing state without --resume is refused (a run never silently overwrites one)."""
    full, compact = out / full_file, compact_path(out, stage)
    if not resume:
        for p in (full, compact):
            if p.exists():
                raise UserError(f"{p} exists; pass --resume to continue that run or pick another --out")
        return None
    if full.is_file():
        return common.load_state(full)
    if compact.is_file():
        log.info("--resume: no %s; continuing from the compact state %s", full.name, compact.name)
        return load_compact(compact)
    raise UserError(
        f"--resume: no train state in {out} (neither {full.name} nor {compact.name}); drop --resume to start "
        f"a new run there, or copy a run's {compact.name} (and its .part files) into it"
    )


def rewarm(step: int, resumed_at: int | None) -> float:
    """LR multiplier in the first REWARM_STEPS steps after a resume without optimizer moments."""
    if resumed_at is None or step >= resumed_at + REWARM_STEPS:
        return 1.0
    return (step - resumed_at + 1) / (REWARM_STEPS + 1)


# ---------------------------------------------------------------------------------------------------
# Cumulative budget: what every run of a model has spent, carried from state to state and into the card
# ---------------------------------------------------------------------------------------------------


def new_budget() -> dict:
    return {"steps": 0, "clips": 0, "device_minutes": {}, "runs": 0}


def add_run(budget: dict | None, *, steps: int, clips: int, seconds: float, device: torch.device) -> dict:
    b = {**new_budget(), **(budget or {})}
    b["device_minutes"] = dict(b.get("device_minutes", {}))
    kind = _device_kind(device)
    b["steps"] += steps
    b["clips"] += clips
    b["device_minutes"][kind] = round(b["device_minutes"].get(kind, 0.0) + seconds / 60.0, 2)
    b["runs"] += 1
    return b


def _device_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


# ---------------------------------------------------------------------------------------------------
# Live metrics and the run folder
# ---------------------------------------------------------------------------------------------------


class MetricsLog:
    """Append one JSON object per line to `<out>/metrics.jsonl` as training goes (flushed per line)."""

    def __init__(self, out: Path, enabled: bool = True):
        self.path = out / METRICS_FILE
        self.enabled = enabled
        self.t0 = time.monotonic()

    def write(self, **fields) -> None:
        if not self.enabled:
            return
        row = {"time_s": round(time.monotonic() - self.t0, 2), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (a job system's time limit) ask a training loop to stop at the next step
    boundary, so the saved state is always whole (an interrupt inside a step would leave the optimizer a step
    ahead of the step count); a second Ctrl-C stops at once. Installed from the main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def finish(self, step: int) -> bool:
        """Put the old handlers back; True (logged) when the loop ended on a stop request."""
        self.restore()
        if self.requested:
            log.warning("interrupted at step %d: saving the train state (--resume continues it)", step)
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "%s: finishing this step, then saving (Ctrl-C again stops at once)", signal.Signals(signum).name
        )


@contextlib.contextmanager
def run_folder(out: Path) -> Iterator[Path]:
    """Create `out` for a run; a run that fails before writing anything there leaves no empty folder."""
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise


def plot_metrics(paths: list[Path], out: Path, keys: tuple[str, ...] = ("loss", "ema_val_loss")) -> Path:
    """One PNG of `keys` against step for every metrics.jsonl in `paths` (runs side by side)."""
    import matplotlib  # heavy, and only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), dpi=100, squeeze=False)
    for path in paths:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        label = Path(path).parent.name or Path(path).stem
        for ax, key in zip(axes[0], keys):
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if pts:
                ax.plot(*zip(*pts), label=label, linewidth=1)
    for ax, key in zip(axes[0], keys):
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m worldsim.train.resume RUN/metrics.jsonl [...] --out PNG`: plot runs' live metrics."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m worldsim.train.resume", description=main.__doc__)
    p.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl files (or run folders)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument(
        "--keys", default="loss,ema_val_loss", help="comma-separated fields (default loss,ema_val_loss)"
    )
    a = p.parse_args(argv)
    paths = [m / METRICS_FILE if m.is_dir() else m for m in a.metrics]
    missing = [str(m) for m in paths if not m.is_file()]
    if missing:
        sys.stderr.write(f"error: no metrics file at {', '.join(missing)}\n")
        return 2
    print(plot_metrics(paths, a.out, tuple(a.keys.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
