"""What every training stage shares: devices, step/time budgets, schedules, EMA, atomic train state, plots."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from worldsim.device import resolve_device  # noqa: F401 - the trainers read it from here
from worldsim.errors import UserError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Devices and arguments
# ---------------------------------------------------------------------------------------------------


def check_positive(**values: float | int | None) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {v}")


# the parameters a model grown with --prev-frame has that the one it starts from lacks (zero-initialised)
GROWN = frozenset({"prev_in.weight", "prev_in.bias"})


def load_grown(model: nn.Module, state: dict, origin: str) -> None:
    """Load `state` into `model`; parameters in `GROWN` that `state` lacks are zeroed, so the model
    computes what `state`'s did. Anything else missing or left over is refused."""
    missing = set(model.state_dict()) - set(state)
    extra = set(state) - set(model.state_dict())
    if missing - GROWN or extra:
        raise UserError(
            f"{origin}: its weights do not fit this model (missing {sorted(missing - GROWN)[:4]}, "
            f"unexpected {sorted(extra)[:4]}); frame stacking is the only field a start may add"
        )
    with torch.no_grad():  # zero whatever the model held there (a student copied from a stacked teacher)
        for name in missing:
            model.get_parameter(name).zero_()
    model.load_state_dict(state, strict=not missing)
    if missing:
        log.info("%s: frame stacking added (%s zero-initialised: the model starts as %s)",
                 origin, ", ".join(sorted(missing)), origin)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Budgets and schedules
# ---------------------------------------------------------------------------------------------------


class Budget:
    """Stop after `steps` optimizer steps or `minutes` of wall time, whichever comes first."""

    def __init__(self, steps: int, minutes: float | None = None):
        self.steps, self.seconds = steps, None if minutes is None else minutes * 60.0
        self.t0 = time.monotonic()

    def done(self, step: int) -> bool:
        if step >= self.steps:
            return True
        return self.seconds is not None and time.monotonic() - self.t0 >= self.seconds

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warmup to 1, cosine down to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


# ---------------------------------------------------------------------------------------------------
# Train state: plain tensors and dicts via torch.save, loaded with weights_only=True; atomic writes
# ---------------------------------------------------------------------------------------------------


def atomic_save(obj: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(obj: dict, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def load_state(path: str | os.PathLike, flag: str = "--resume") -> dict:
    """A train state (weights_only). `flag`: the command-line flag that named `path`, for the hint."""
    path = Path(path)
    resume = flag == "--resume"
    if not path.is_file():
        fix = "train first or drop --resume" if resume else "pass the .pt file a `worldsim train` run wrote"
        raise UserError(f"{flag}: no train state at {path}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which
        fix = (
            "delete it or pick another --out" if resume else "pass the .pt file a `worldsim train` run wrote"
        )
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]  # torch's own runs for lines
        raise UserError(f"{flag} {path} is not a readable worldsim train state ({why}); {fix}") from e


def open_state(
    state_path: Path, kind: str, args: argparse.Namespace, hparams: tuple[str, ...]
) -> dict | None:
    """The run's train state on --resume (its own hyperparameters restored into `args`), else None.

    A state of another kind, or an existing state without --resume, is refused: a run never
    silently overwrites or continues the wrong one.
    """
    if not args.resume:
        if state_path.exists():
            raise UserError(f"{state_path} exists; pass --resume to continue it or pick another --out")
        return None
    state = load_state(state_path)
    if state.get("kind") != kind:
        raise UserError(f"{state_path} is not a {kind.replace('_', '-')} train state; pick another --out")
    restore_hparams(args, state.get("hparams", {}), hparams)
    return state


def restore_hparams(args: argparse.Namespace, stored: dict, names: tuple[str, ...]) -> None:
    """On --resume the run's own hyperparameters win over the command line's (logged when they differ)."""
    for k in names:
        if k in stored and getattr(args, k, None) != stored[k]:
            log.info(
                "--resume: keeping %s=%s from the train state (command line had %s)",
                k,
                stored[k],
                getattr(args, k, None),
            )
            setattr(args, k, stored[k])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DDP wrappers (their state_dict keys differ)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def game_batches(
    *,
    batch: int,
    frames: int,
    size: int | tuple[int, int],
    device: torch.device,
    seed: int,
    render_batch: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Frames uint8 `[B,F,H,W,3]` and keys bool `[B,F,K]` rendered on the fly by the real game.

    On a GPU one game tick costs about the same for 32 games as for 1000 (launch-bound), so the games
    are stepped `render_batch` at a time (default: ~8k frames per render on CUDA, capped at 1024 games)
    and the result is served in slices of `batch`: no clip is used twice, rendering costs ~1/8.
    """
    from worldsim.data import make_loader

    if render_batch is None:
        render_batch = min(1024, max(batch, 8192 // frames)) if device.type == "cuda" else batch
    render_batch = max(batch, render_batch // batch * batch)
    loader = make_loader("game", batch=render_batch, frames=frames, size=size, device=device, seed=seed)
    if render_batch == batch:
        return loader
    return _slices(loader, batch)


def _slices(loader: Iterator[tuple[torch.Tensor, torch.Tensor]], batch: int):
    for frames, keys in loader:
        for i in range(0, frames.shape[0], batch):
            yield frames[i : i + batch], keys[i : i + batch]


# ---------------------------------------------------------------------------------------------------
# Logs and plots
# ---------------------------------------------------------------------------------------------------


def save_loss_plot(history: dict[str, list[float]], path: str | os.PathLike, title: str) -> None:
    """Plot every series in `history` (except "step") against history["step"], log-scale y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history.get("step", [])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, ys in history.items():
        if name == "step" or not ys:
            continue
        ax.plot(steps[: len(ys)], ys, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def progress(total: int, initial: int, disable: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=disable, desc=desc, dynamic_ncols=True, mininterval=1.0)
