"""What a trainer takes from a dataset folder (`--data DIR`): key names, frame size, held-out clips to
score on, start frames for the export, and the manifest the checkpoint records (docs/design.md, Datasets)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from worldsim.data.dataset import Dataset
from worldsim.data.loader import make_loader, resize_frames
from worldsim.errors import UserError
from worldsim.train import common

log = logging.getLogger(__name__)

START_FRAMES = 16  # episode-start frames a dataset run keeps for the export's start latents


def open_data(folder: str | Path | None) -> Dataset | None:
    """The dataset `--data` names, or None without --data."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise UserError(f"--data {folder} is not a folder; make a dataset with `worldsim collect`")
    return Dataset(folder)


def with_keys(cfg, ds: Dataset, *, fresh: bool, origin: str):
    """The model config with the dataset's key names: a fresh run takes them; a run from `origin`
    (--init, --resume) must already have them (its key embedding is trained on those keys)."""
    names = tuple(ds.key_names)
    if tuple(cfg.key_names) == names:
        return cfg
    if not fresh:
        raise UserError(
            f"--data {ds.path}: its keys {list(names)} differ from the keys of {origin} "
            f"{list(cfg.key_names)}; train from a fresh --preset or pass a dataset with those keys"
        )
    log.info("--data %s: the model's %d keys are the dataset's %s", ds.path, len(names), list(names))
    return cfg.replace(key_names=names)


def image_size(ds: Dataset) -> int | tuple[int, int]:
    """The autoencoder image size of a dataset's frames (an int when square)."""
    return ds.height if ds.height == ds.width else (ds.height, ds.width)


def scoring_batches(ds: Dataset | None, *, batch: int, frames: int, size: tuple[int, int], device, seed: int,
                    flag: str):  # fmt: skip
    """Clips a run scores itself on: the dataset's held-out split (never trained on), resized to `size`,
    or without a dataset the game's, from seeds training never uses. `flag` names what set `frames`."""
    if ds is None:
        return common.game_batches(batch=batch, frames=frames, size=size, device=device, seed=seed)
    if frames > ds.frames:
        raise UserError(f"{flag} {frames} is longer than the clips of --data {ds.path} ({ds.frames} frames); "
                        f"pass {flag} <= {ds.frames} or collect longer clips")  # fmt: skip
    side = None if (ds.height, ds.width) == tuple(size) else size[0]
    return make_loader(str(ds.path), batch=batch, frames=frames, size=side, device=device, seed=seed,
                       split="heldout")  # fmt: skip


def start_frames(ds: Dataset, size: int, n: int = START_FRAMES) -> torch.Tensor:
    """uint8 [S, size, size, 3]: the first frames of training episodes (reset frames; else clip starts),
    from which a model trained on the dataset starts."""
    picks = []
    train = ds.split("train")
    for i in train:
        _, reset = ds.episodes(int(i))
        picks += [(int(i), int(t)) for t in np.flatnonzero(reset)]
        if len(picks) >= n:
            break
    if len(picks) < n:  # too few recorded resets: the starts of the training clips fill up
        picks += [(int(i), 0) for i in train[: n - len(picks)]]
    f = torch.from_numpy(np.stack([ds.clip(i, t, 1)[0][0] for i, t in picks[:n]]))
    if f.shape[1:3] != (size, size):
        f = resize_frames(f[None], size)[0]
    return f
