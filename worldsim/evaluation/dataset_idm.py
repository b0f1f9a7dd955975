"""The inverse-dynamics model of a recorded dataset: idm.py's model and training loop on frame pairs of
the dataset's training clips, for action following in `worldsim eval --data`.

Trained inside the eval the first time a dataset is scored and cached next to the dataset
(DIR/idm-vN.safetensors; runs/idm/ where that folder cannot be written): the IDM is a measuring
instrument of that dataset, so it lives with it, every checkpoint scored on the dataset is read by the
same one, and no extra command stands between collecting and scoring. The file records a fingerprint of
the dataset's manifest: another dataset in the same folder retrains it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from worldsim.checkpoint import repo_root
from worldsim.evaluation.idm import (
    IDM,
    IDM_VERSION,
    accuracy,
    chance_accuracy,
    effective_keys,
    fit_idm,
    load_idm,
    save_idm,
)
from worldsim.evaluation.recorded import is_one_hot, load_clips

log = logging.getLogger(__name__)

TRAIN_BYTES = 512 * 1024 * 1024  # frames of training clips held in memory at once (a random subset beyond)


def fingerprint(ds) -> str:
    """A short hash of the dataset's manifest (key names, size, counts, source, shards)."""
    return hashlib.sha256(json.dumps(ds.meta, sort_keys=True).encode()).hexdigest()[:16]


def label_keys(keys: torch.Tensor, key_names, one_hot: bool) -> torch.Tensor:
    """The labels the IDM learns: the recorded keys, with opposite pairs cancelled for a multi-hot set
    (both held, the game moves by neither)."""
    return keys if one_hot else effective_keys(keys, key_names)


def pair_batches(
    frames: torch.Tensor, keys: torch.Tensor, resets: torch.Tensor, batch: int, steps: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`steps` random batches of (prev, cur, keys of cur, valid) from clips `[N,F,...]`; a pair whose
    second frame begins an episode is not valid (nothing in the first frame leads to it)."""
    g = torch.Generator().manual_seed(seed)
    N, F = keys.shape[:2]
    for _ in range(steps):
        n = torch.randint(0, N, (batch,), generator=g).to(frames.device)
        t = torch.randint(1, F, (batch,), generator=g).to(frames.device)
        yield frames[n, t - 1], frames[n, t], keys[n, t], ~resets[n, t]


def train_dataset_idm(
    ds, *, steps: int = 1500, batch: int = 64, lr: float = 3e-3, seed: int = 0, device="cpu",
    progress: bool = False,
) -> tuple[IDM, dict]:  # fmt: skip
    """Train an IDM on the dataset's training clips (at most TRAIN_BYTES of frames, a seeded random
    subset beyond); returns it and its accuracy on frame pairs of the held-out clips."""
    torch.manual_seed(seed)
    one_hot = is_one_hot(ds)
    train = ds.split("train")
    fit = max(1, TRAIN_BYTES // (ds.frames * ds.height * ds.width * 3))
    if len(train) > fit:
        train = np.sort(np.random.default_rng(seed).choice(train, fit, replace=False))
    frames, keys, resets, _ = load_clips(ds, train, one_hot, device)
    keys = label_keys(keys, ds.key_names, one_hot)
    batches = pair_batches(frames, keys, resets, batch, steps, seed)
    with torch.enable_grad():  # the evaluator runs under no_grad
        model, loss = fit_idm(
            batches, len(ds.key_names), steps, lr=lr, one_hot=one_hot, device=device, progress=progress
        )
    del frames
    held = load_clips(ds, ds.split("heldout"), one_hot, device)
    h_frames, h_keys, h_resets = held[0], label_keys(held[1], ds.key_names, one_hot), held[2]
    with torch.no_grad():
        prev, cur = h_frames[:, :-1].flatten(0, 1), h_frames[:, 1:].flatten(0, 1)  # [N*(F-1),H,W,3]
        logits = torch.cat([model(a, b) for a, b in zip(prev.split(256), cur.split(256))])
    labels, valid = h_keys[:, 1:].flatten(0, 1), ~h_resets[:, 1:].flatten()
    result = accuracy(logits, labels, valid, one_hot)
    result.update(chance=chance_accuracy(labels, valid))
    result.update(train_steps=steps, batch=batch, train_clips=int(len(train)), final_loss=loss)
    log.info("dataset IDM trained: held-out real accuracy %s", result)
    return model, {"one_hot": one_hot, "heldout_real": result}


def _cache_paths(ds, path) -> list[Path]:
    if path is not None:
        return [Path(path)]
    name = f"idm-v{IDM_VERSION}.safetensors"
    return [Path(ds.path) / name, repo_root() / "runs" / "idm" / f"data-{fingerprint(ds)}-{name}"]


def get_dataset_idm(
    ds, *, path: str | os.PathLike | None = None, steps: int = 1500, device="cpu", progress: bool = False
) -> tuple[IDM, dict]:
    """The IDM of this dataset: the cached one (`path`, else next to the dataset, else runs/idm) when
    its fingerprint matches, else trained now and cached at the first of those that can be written."""
    candidates, fp = _cache_paths(ds, path), fingerprint(ds)
    for p in candidates:
        if not p.is_file():
            continue
        try:
            model, info = load_idm(p, device)
            if info.get("dataset") == fp:
                return model, {**info, "path": str(p)}
            log.warning(
                "%s was trained on another dataset (fingerprint %s); retraining", p, info.get("dataset")
            )
        except (ValueError, OSError, KeyError) as e:
            log.warning("cannot read the IDM %s (%s); retraining", p, e)
    log.info("training an inverse-dynamics model on %s (%d steps)", ds.path, steps)
    model, trained = train_dataset_idm(ds, steps=steps, device=device, progress=progress)
    info = {"size": [ds.height, ds.width], "key_names": list(ds.key_names), "dataset": fp, **trained}
    for p in candidates:
        try:
            save_idm(model, p, info)
        except OSError as e:  # a read-only dataset folder: the runs/ cache takes it
            log.warning("cannot write the IDM to %s (%s)", p, e)
            continue
        return model, {**info, "num_keys": model.num_keys, "version": IDM_VERSION, "path": str(p)}
    return model, {**info, "num_keys": model.num_keys, "version": IDM_VERSION, "path": None}
