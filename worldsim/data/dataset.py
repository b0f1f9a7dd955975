"""Datasets on disk: a folder with `meta.json` and shards of clips as `.npy` (never pickle).

Layout: `meta.json` + `shard-00000-frames.npy` uint8 [N, F, H, W, 3] + `shard-00000-keys.npy` bool
[N, F, K], ... ; keys[t] is the key state that produced frames[t] (all-false for a frame from reset).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.errors import UserError

log = logging.getLogger(__name__)

DATASET_FORMAT = "worldsim-dataset"
DATASET_VERSION = 1
SHARD_BYTES = 256 * 1024 * 1024  # target shard size: large enough for few files, small enough to write


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


class DatasetWriter:
    """Collect clips into shards; `close()` writes `meta.json` last, so a folder with one is complete."""

    def __init__(
        self,
        out: str | Path,
        *,
        key_names: Sequence[str],
        height: int,
        width: int,
        frames: int,
        source: str,
        fps: float | None = None,
        clips_per_shard: int | None = None,
    ) -> None:
        self.out = Path(out)
        if (self.out / "meta.json").exists():
            raise UserError(
                f"--out {self.out} already holds a dataset (meta.json); pass a new folder or delete it"
            )
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file; pass a folder path")
        self.out.mkdir(parents=True, exist_ok=True)
        self.key_names, self.height, self.width, self.frames = list(key_names), height, width, frames
        self.source, self.fps = source, fps
        clip_bytes = frames * height * width * 3
        self.clips_per_shard = clips_per_shard or max(1, SHARD_BYTES // clip_bytes)
        self._frames: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._buffered = 0
        self._shards: list[dict] = []
        self.count = 0

    def add(self, frames: Any, keys: Any) -> None:
        """Append clips: frames uint8 [n, F, H, W, 3], keys bool/uint8 [n, F, K] (numpy or torch)."""
        f, k = _numpy(frames), _numpy(keys)
        want_f = (f.shape[0], self.frames, self.height, self.width, 3)
        if f.dtype != np.uint8 or f.shape != want_f:
            raise ValueError(
                f"frames must be uint8 [n, F, H, W, 3] = {list(want_f)}, got {f.dtype} {list(f.shape)}"
            )
        want_k = (f.shape[0], self.frames, len(self.key_names))
        if k.shape != want_k:
            raise ValueError(f"keys must be [n, F, K] = {list(want_k)}, got {list(k.shape)}")
        self._frames.append(np.ascontiguousarray(f))
        self._keys.append(k != 0)
        self._buffered += f.shape[0]
        while self._buffered >= self.clips_per_shard:
            self._flush(self.clips_per_shard)

    def _flush(self, n: int) -> None:
        frames, keys = np.concatenate(self._frames), np.concatenate(self._keys)
        name = f"shard-{len(self._shards):05d}"
        _atomic_save(self.out / f"{name}-frames.npy", frames[:n])
        _atomic_save(self.out / f"{name}-keys.npy", keys[:n])
        self._shards.append({"frames": f"{name}-frames.npy", "keys": f"{name}-keys.npy", "clips": n})
        self.count += n
        self._frames, self._keys = ([frames[n:]], [keys[n:]]) if n < len(frames) else ([], [])
        self._buffered = len(frames) - n

    def close(self) -> Path:
        if self._buffered:
            self._flush(self._buffered)
        if self.count == 0:
            raise UserError(f"no clips were collected for {self.out}; nothing to write")
        meta = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "key_names": self.key_names,
            "height": self.height,
            "width": self.width,
            "frames": self.frames,
            "fps": self.fps,
            "source": self.source,
            "count": self.count,
            "shards": self._shards,
        }
        tmp = self.out / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, self.out / "meta.json")
        log.info(
            "wrote dataset %s: %d clips of %d frames at %dx%d",
            self.out,
            self.count,
            self.frames,
            self.width,
            self.height,
        )
        return self.out


class Dataset:
    """A dataset folder opened for random access: shards are memory-mapped, read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise UserError(
                f"{self.path} is not a dataset folder (no meta.json); make one with `worldsim collect`"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
            raise UserError(f"{meta_path}: field 'format' must be '{DATASET_FORMAT}'")
        if not isinstance(meta.get("version"), int) or meta["version"] > DATASET_VERSION:
            raise UserError(
                f"{meta_path}: dataset version {meta.get('version')!r} is newer than this worldsim reads; upgrade"
            )
        for field in ("key_names", "height", "width", "frames", "count", "shards", "source"):
            if field not in meta:
                raise UserError(f"{meta_path}: missing field '{field}'")
        self.meta = meta
        self.key_names: list[str] = list(meta["key_names"])
        self.height, self.width, self.frames = int(meta["height"]), int(meta["width"]), int(meta["frames"])
        self._frames: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        for shard in meta["shards"]:
            f = self._load(shard["frames"], np.uint8, (self.frames, self.height, self.width, 3))
            k = self._load(shard["keys"], np.bool_, (self.frames, len(self.key_names)))
            if len(f) != len(k) or len(f) != shard["clips"]:
                raise UserError(
                    f"{self.path}: shard {shard['frames']} holds {len(f)} clips, {shard['keys']} {len(k)}, meta says {shard['clips']}"
                )
            self._frames.append(f)
            self._keys.append(k)
        # [S + 1] cumulative clip counts: global clip index -> (shard, local index)
        self._starts = np.cumsum([0] + [len(f) for f in self._frames])
        if self._starts[-1] != meta["count"] or meta["count"] == 0:
            raise UserError(
                f"{meta_path}: field 'count' is {meta['count']}, the shards hold {self._starts[-1]} clips"
            )

    def _load(self, name: str, dtype: type, tail: tuple[int, ...]) -> np.ndarray:
        path = self.path / name
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot load shard ({e})") from None
        if a.dtype != dtype or a.shape[1:] != tail:
            raise UserError(
                f"{path}: expected {np.dtype(dtype)} [N, {', '.join(map(str, tail))}], got {a.dtype} {list(a.shape)}"
            )
        return a

    def __len__(self) -> int:
        return int(self._starts[-1])

    def split(self, name: str) -> np.ndarray:
        """Clip indices of split `name`: "train" or "heldout" (what eval scores and no trainer reads).

        Held out: the last tenth of the clips (at least one), so a model is scored on frames it never saw;
        a dataset of one clip has no held-out part (eval on it asks for more clips).
        """
        n = len(self)
        held = 0 if n < 2 else max(1, n // 10)
        if name == "train":
            return np.arange(n - held)
        if name == "heldout":
            if held == 0:
                raise UserError(f"{self.path} holds {n} clip; eval needs >= 2 (one is held out): collect more")
            return np.arange(n - held, n)
        raise ValueError(f"split must be 'train' or 'heldout', got {name!r}")

    def clip(self, i: int, start: int = 0, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames [F', H, W, 3] uint8 and keys [F', K] bool of clip i, frames start..start+length (copies)."""
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        j = i - int(self._starts[s])
        stop = self.frames if length is None else start + length
        return np.array(self._frames[s][j, start:stop]), np.array(self._keys[s][j, start:stop])


def load_dataset(path: str | Path) -> Dataset:
    return Dataset(path)
