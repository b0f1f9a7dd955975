"""Dataset shards of format v2: one compressed `.npz` per shard (never pickle), a sha256 per shard in the
manifest, and a cache of decoded shards bounded by a memory budget (docs/design.md, Datasets).

A shard holds `frames` uint8 [N, F, H, W, 3], `keys` bool [N, F, K], `episode` int64 [N, F] (the episode
each frame belongs to, unique over the dataset) and `reset` bool [N, F] (the frame came from env.reset()).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from worldsim.errors import UserError

log = logging.getLogger(__name__)

ARRAYS = ("frames", "keys", "episode", "reset")
# decoded shards kept in memory: a 64x64 dataset of 300k frames (3.7 GB of pixels) stays decoded whole
CACHE_BYTES = 6 * 2**30
FIX = "collect the dataset again (`worldsim collect`) or restore the file from a copy"


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Write `arrays` compressed to `path` atomically; returns its manifest entry (file, bytes, sha256)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.ascontiguousarray(arrays[k]) for k in ARRAYS})
    data = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_present(folder: Path, entry: dict) -> None:
    """Cheap check at open: the shard exists and has the size the manifest wrote (a cut file fails here)."""
    path = folder / entry["file"]
    if not path.is_file():
        raise UserError(f"{path}: shard missing (meta.json lists it); {FIX}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise UserError(f"{path}: shard is {size} bytes, meta.json says {entry['bytes']} (cut short?); {FIX}")


def read_shard(folder: Path, entry: dict, tails: dict[str, tuple[tuple[int, ...], type]]) -> dict:
    """Read, verify (sha256) and decode the arrays `tails` names of one shard; `tails`: array name ->
    (shape after N, dtype)."""
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read shard ({e}); {FIX}") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{path}: shard damaged (sha256 differs from meta.json); {FIX}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in tails}  # a member decompresses only when read
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot decode shard ({e}); {FIX}") from None
    for name, (tail, dtype) in tails.items():
        a = arrays[name]
        if a.dtype != dtype or a.shape[1:] != tail or len(a) != entry["clips"]:
            raise UserError(
                f"{path}: {name} is {a.dtype} {list(a.shape)}, meta.json says {np.dtype(dtype)} "
                f"[{entry['clips']}, {', '.join(map(str, tail))}]; {FIX}"
            )
    return arrays


class ShardCache:
    """Decoded shards, least recently used dropped first once they pass `budget` bytes (one always stays)."""

    def __init__(self, load, budget: int = CACHE_BYTES) -> None:
        self.load, self.budget = load, budget
        self._held: OrderedDict[int, dict] = OrderedDict()
        self.decodes = 0  # shards decoded so far (a budget too small for the reads shows as many)

    def get(self, s: int) -> dict:
        if s in self._held:
            self._held.move_to_end(s)
            return self._held[s]
        return self.put(s, self.load(s))

    def put(self, s: int, arrays: dict) -> dict:
        """Hold shard `s`'s decoded arrays (counted as a decode), dropping the oldest past the budget."""
        self.decodes += 1
        self._held[s] = arrays
        while len(self._held) > 1 and sum(_nbytes(a) for a in self._held.values()) > self.budget:
            self._held.popitem(last=False)
        return arrays


def _nbytes(arrays: dict) -> int:
    return sum(a.nbytes for a in arrays.values() if a is not None)  # v1: no episode arrays
