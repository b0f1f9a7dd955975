"""Datasets on disk: a folder with `meta.json` (the manifest) and shards of clips (never pickle).

v2 (written): `meta.json` + `shard-00000.npz`, ... compressed, each with a sha256 in the manifest
(worldsim/data/shards.py); per clip frames uint8 [N, F, H, W, 3], keys bool [N, F, K], the episode id and
a reset flag of every frame. v1 (still read): `shard-00000-frames.npy` + `shard-00000-keys.npy`, raw.
keys[t] is the key state that produced frames[t] (all-false for a frame from reset; v2 also flags it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.data.shards import ARRAYS, CACHE_BYTES, ShardCache, check_present, read_shard, write_shard
from worldsim.errors import UserError

log = logging.getLogger(__name__)

DATASET_FORMAT = "worldsim-dataset"
DATASET_VERSION = 2
# raw pixels per shard: few files, yet one decode (~0.3 s) stays short and a cache evicts in small steps
SHARD_BYTES = 64 * 1024 * 1024


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class DatasetWriter:
    """Collect clips into compressed shards; `close()` writes `meta.json` last, so a folder with one is
    complete. `extra`: manifest fields of the source (env id, policy mix, frame skip, seed, ...).

    Several writers may fill one folder side by side (parallel collection): each with its own `prefix`
    and `new=False`, then `write_meta` once with all their shards.
    """

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
        extra: dict | None = None,
        prefix: str = "shard",
        new: bool = True,
    ) -> None:
        self.out = Path(out)
        if new:
            check_new_folder(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.key_names, self.height, self.width, self.frames = list(key_names), height, width, frames
        self.source, self.fps, self.extra, self.prefix = source, fps, dict(extra or {}), prefix
        clip_bytes = frames * height * width * 3
        self.clips_per_shard = clips_per_shard or max(1, SHARD_BYTES // clip_bytes)
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        self._buffered = 0
        self.shards: list[dict] = []
        self.count = 0
        self.episodes: set[int] = set()

    def add(self, frames: Any, keys: Any, episode: Any = None, reset: Any = None) -> None:
        """Append clips: frames uint8 [n, F, H, W, 3], keys bool/uint8 [n, F, K] (numpy or torch);
        episode int [n, F] (episode id of each frame; default: each clip its own) and reset bool [n, F]
        (the frame came from a reset; default: none)."""
        f, k = _numpy(frames), _numpy(keys)
        n = f.shape[0]
        want_f = (n, self.frames, self.height, self.width, 3)
        if f.dtype != np.uint8 or f.shape != want_f:
            raise ValueError(
                f"frames must be uint8 [n, F, H, W, 3] = {list(want_f)}, got {f.dtype} {list(f.shape)}"
            )
        want_k = (n, self.frames, len(self.key_names))
        if k.shape != want_k:
            raise ValueError(f"keys must be [n, F, K] = {list(want_k)}, got {list(k.shape)}")
        if episode is None:
            first = self.count + self._buffered
            episode = np.repeat(np.arange(first, first + n)[:, None], self.frames, 1)
        e = _numpy(episode).astype(np.int64)
        r = np.zeros((n, self.frames), bool) if reset is None else _numpy(reset) != 0
        if e.shape != (n, self.frames) or r.shape != (n, self.frames):
            raise ValueError(
                f"episode and reset must be [n, F] = {[n, self.frames]}, got {e.shape}, {r.shape}"
            )
        for name, a in zip(ARRAYS, (np.ascontiguousarray(f), k != 0, e, r)):
            self._parts[name].append(a)
        self.episodes.update(np.unique(e).tolist())
        self._buffered += n
        while self._buffered >= self.clips_per_shard:
            self._flush(self.clips_per_shard)

    def _flush(self, n: int) -> None:
        whole = {k: np.concatenate(v) for k, v in self._parts.items()}
        entry = write_shard(
            self.out / f"{self.prefix}-{len(self.shards):05d}.npz", {k: a[:n] for k, a in whole.items()}
        )
        self.shards.append({**entry, "clips": n})
        self.count += n
        self._parts = {k: [a[n:]] if n < len(a) else [] for k, a in whole.items()}
        self._buffered -= n

    def finish(self) -> list[dict]:
        """Write the clips still buffered; the shards written (for `write_meta`)."""
        if self._buffered:
            self._flush(self._buffered)
        return self.shards

    def header(self) -> dict:
        """The manifest without its counts and shards."""
        return {"key_names": self.key_names, "height": self.height, "width": self.width, "frames": self.frames,
                "fps": self.fps, "source": self.source, **self.extra}  # fmt: skip

    def close(self) -> Path:
        return write_meta(self.out, self.header(), self.finish(), episodes=len(self.episodes))


def check_new_folder(out: Path) -> None:
    if (out / "meta.json").exists():
        raise UserError(f"--out {out} already holds a dataset (meta.json); pass a new folder or delete it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder path")


def write_meta(out: Path, header: dict, shards: list[dict], *, episodes: int) -> Path:
    """The manifest (meta.json), written last and atomically: a folder with one holds a whole dataset."""
    count = sum(s["clips"] for s in shards)
    if count == 0:
        raise UserError(f"no clips were collected for {out}; nothing to write")
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, **header, "count": count,
            "frame_count": count * header["frames"], "episode_count": episodes, "shards": shards}  # fmt: skip
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / "meta.json")
    log.info("wrote dataset %s: %d clips of %d frames at %dx%d, %d episodes", out, count, header["frames"],
             header["width"], header["height"], episodes)  # fmt: skip
    return out


class Dataset:
    """A dataset folder opened for random access.

    v2: shards are checked for presence and size at open, verified (sha256) and decoded on first use, and
    kept decoded in a `ShardCache` of `cache_bytes` (default 6 GiB: a 64x64 dataset of 300k frames stays
    whole; a larger one decodes shards again as reads move on). v1: `.npy` shards, memory-mapped.
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = CACHE_BYTES) -> None:
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
        self.meta, self.version = meta, meta["version"]
        self._episode_sets: list[set[int]] | None = None
        self.key_names: list[str] = list(meta["key_names"])
        self.height, self.width, self.frames = int(meta["height"]), int(meta["width"]), int(meta["frames"])
        F, K = self.frames, len(self.key_names)
        self._tails = {"frames": ((F, self.height, self.width, 3), np.uint8), "keys": ((F, K), np.bool_),
                       "episode": ((F,), np.int64), "reset": ((F,), np.bool_)}  # fmt: skip
        if self.version >= 2:
            for shard in meta["shards"]:
                check_present(self.path, shard)
            counts = [int(s["clips"]) for s in meta["shards"]]
            self.cache = ShardCache(
                lambda s: read_shard(self.path, meta["shards"][s], self._tails), cache_bytes
            )
        else:
            v1 = [self._load_v1(shard) for shard in meta["shards"]]
            counts = [len(a["frames"]) for a in v1]
            self.cache = ShardCache(lambda s: v1[s], budget=0)  # memory-mapped: nothing to hold
        # [S + 1] cumulative clip counts: global clip index -> (shard, local index)
        self._starts = np.cumsum([0] + counts)
        if self._starts[-1] != meta["count"] or meta["count"] == 0:
            raise UserError(
                f"{meta_path}: field 'count' is {meta['count']}, the shards hold {self._starts[-1]} clips"
            )

    def _load_v1(self, shard: dict) -> dict:
        f = self._load(shard["frames"], *self._tails["frames"][::-1])
        k = self._load(shard["keys"], *self._tails["keys"][::-1])
        if len(f) != len(k) or len(f) != shard["clips"]:
            raise UserError(
                f"{self.path}: shard {shard['frames']} holds {len(f)} clips, {shard['keys']} {len(k)}, meta says {shard['clips']}"
            )
        # v1 recorded no episodes: each clip stands alone
        return {"frames": f, "keys": k, "episode": None, "reset": None}

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

    @property
    def manifest(self) -> dict:
        """What a checkpoint records of its data: meta.json without the shard list, plus the folder."""
        return {"path": str(self.path), **{k: v for k, v in self.meta.items() if k != "shards"}}

    def split(self, name: str) -> np.ndarray:
        """Clip indices of split `name`: "train" or "heldout" (what eval scores and no trainer reads).

        Held out: the last tenth of the clips (at least one), so a model is scored on frames it never saw;
        a dataset of one clip has no held-out part (eval on it asks for more clips). Where episodes are
        recorded (v2), training clips of an episode that continues into the held-out part are dropped too,
        so no held-out episode is trained on (unless that would leave no training clip).
        """
        n = len(self)
        held = 0 if n < 2 else max(1, n // 10)
        if name == "train":
            train = np.arange(n - held)
            if held and self.version >= 2:
                ids = self._clip_episodes()
                seen = set().union(*ids[n - held :])
                clean = [i for i in train if seen.isdisjoint(ids[i])]
                train = np.asarray(clean, np.int64) if clean else train
            return train
        if name == "heldout":
            if held == 0:
                raise UserError(
                    f"{self.path} holds {n} clip; eval needs >= 2 (one is held out): collect more"
                )
            return np.arange(n - held, n)
        raise ValueError(f"split must be 'train' or 'heldout', got {name!r}")

    def _clip_episodes(self) -> list[set[int]]:
        """The episode ids in each clip (v2), read once: only the shards' small episode arrays decode."""
        if self._episode_sets is None:
            tails = {"episode": self._tails["episode"]}
            self._episode_sets = [
                set(row.tolist())
                for s in self.meta["shards"]
                for row in read_shard(self.path, s, tails)["episode"]
            ]
        return self._episode_sets

    def preload(self, clips: np.ndarray, threads: int = 8) -> None:
        """Decode the shards holding `clips` side by side in `threads` threads (zlib and sha256 release
        the GIL), where they fit the cache; random reads then never wait for a decode."""
        shards = sorted({int(np.searchsorted(self._starts, i, side="right") - 1) for i in clips})
        if self.version < 2 or not shards:
            return
        raw = sum(int(self.meta["shards"][s]["clips"]) for s in shards) * _clip_bytes(self._tails)
        if raw > self.cache.budget:
            log.info("%s: %.1f GiB of frames pass the %.1f GiB cache; shards decode as they are read",
                     self.path, raw / 2**30, self.cache.budget / 2**30)  # fmt: skip
            return
        with ThreadPoolExecutor(max(1, min(threads, len(shards)))) as pool:
            decoded = list(pool.map(self.cache.load, shards))
        for s, arrays in zip(shards, decoded):
            self.cache.put(s, arrays)

    def _locate(self, i: int) -> tuple[dict, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range: {self.path} holds {len(self)} clips")
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        return self.cache.get(s), i - int(self._starts[s])

    def clip(self, i: int, start: int = 0, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames [F', H, W, 3] uint8 and keys [F', K] bool of clip i, frames start..start+length (copies)."""
        arrays, j = self._locate(i)
        stop = self.frames if length is None else start + length
        return np.array(arrays["frames"][j, start:stop]), np.array(arrays["keys"][j, start:stop])

    def episodes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Episode id [F] int64 and reset flag [F] bool of every frame of clip i (v1: the clip's index and
        no resets: v1 recorded no episodes)."""
        arrays, j = self._locate(i)
        if arrays["episode"] is None:
            return np.full(self.frames, i, np.int64), np.zeros(self.frames, bool)
        return np.array(arrays["episode"][j]), np.array(arrays["reset"][j])


def _clip_bytes(tails: dict) -> int:
    """Decoded bytes of one clip: every array's tail shape times its item size."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in tails.values())


def load_dataset(path: str | Path) -> Dataset:
    return Dataset(path)
