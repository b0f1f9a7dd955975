"""Recorded clips as the evaluation reads them: the dataset's key set (one-hot or multi-hot), where an
episode resets inside a clip, and the held-out clips loaded as tensors.

A frame that begins a new episode cannot be predicted from the frames before it, so the scores stop at
it (dataset_runner.py) and the IDM never trains on the pair that crosses it (dataset_idm.py). Where the
resets come from, in order: the dataset reader's own record (`ds.resets(i)` -> bool `[F]`, True where
frame t begins an episode, when the reader has it); for a one-hot key set, the all-off key row the
collector writes for a reset frame (a Discrete action space always has exactly one key on); else none:
every clip is scored as one episode, and the JSON says so.
"""

from __future__ import annotations

import numpy as np
import torch

from worldsim.errors import UserError

RESETS_FROM_READER = "the dataset's episode-reset record"
RESETS_FROM_KEYS = "one-hot keys: a frame with no key on is an env reset"
RESETS_NONE = "none: the dataset records no episode resets, so every clip is scored as one episode"
_SAMPLE_CLIPS = 64  # clips read to tell a one-hot key set from a multi-hot one


def is_one_hot(ds) -> bool:
    """Whether the dataset's keys are one-hot (a Discrete action: exactly one key on in every frame but a
    reset frame), read from its training clips; multi-hot otherwise (the game, MultiBinary)."""
    train = ds.split("train")
    idx = (
        train[np.linspace(0, len(train) - 1, min(len(train), _SAMPLE_CLIPS)).astype(int)]
        if len(train)
        else []
    )
    rows = (
        np.concatenate([ds.clip(int(i), 0, ds.frames)[1] for i in idx])
        if len(idx)
        else np.zeros((0, 0), bool)
    )
    on = rows.sum(1)
    return bool((on > 0).any() and (on <= 1).all()) and len(ds.key_names) > 1


def episode_resets(ds, i: int, keys: np.ndarray, one_hot: bool) -> tuple[np.ndarray, str]:
    """Bool `[F]`, True where frame t of clip `i` begins a new episode (t >= 1), and where that came from."""
    if int(ds.meta.get("version", 1)) >= 2:  # v2 records every frame's reset flag (Dataset.episodes)
        r = np.asarray(ds.episodes(i)[1], bool).copy()
        r[0] = False  # a clip that starts at a reset is one episode from its first frame
        return r, RESETS_FROM_READER
    if one_hot:
        r = ~keys.any(1)
        r[0] = False  # a clip that starts at a reset is one episode from its first frame
        return r, RESETS_FROM_KEYS
    return np.zeros(len(keys), bool), RESETS_NONE


def load_clips(ds, indices, one_hot: bool, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Clips `indices` as frames uint8 `[N,F,H,W,3]`, keys bool `[N,F,K]` and resets bool `[N,F]` on
    `device`, and where the resets came from."""
    frames, keys, resets, source = [], [], [], RESETS_NONE
    for i in indices:
        f, k = ds.clip(int(i), 0, ds.frames)
        r, source = episode_resets(ds, int(i), k, one_hot)
        frames.append(f)
        keys.append(k)
        resets.append(r)
    if not frames:
        raise UserError(f"{ds.path}: no clips to read")
    as_t = [torch.from_numpy(np.stack(x)).to(device) for x in (frames, keys, resets)]
    return as_t[0], as_t[1].bool(), as_t[2].bool(), source


def manifest(ds) -> dict:
    """The dataset's manifest (meta.json) as the JSON records it: everything but the list of shards."""
    return {k: v for k, v in ds.meta.items() if k != "shards"}
