"""`RecordingWriter`: append a `.wsrec` session file record by record, each flushed as it is written."""

from __future__ import annotations

import os
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from worldsim.record.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    pack_header,
    pack_keys,
    record_head,
    validate_header,
)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class RecordingWriter:
    """Write a header, then one record per frame; a crash leaves every complete record readable.

    The file is created 0600. Records are flushed to the OS as written (a process crash loses nothing already written); there is
    no fsync per frame, so a power cut may lose the last few.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        world: str,
        height: int,
        width: int,
        key_names: Sequence[str],
        fps: float,
        seed: int | None,
        checkpoint_hash: str | None = None,
        extra: dict | None = None,
    ) -> None:
        self.path = Path(path)
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "world": str(world),
            "checkpoint_hash": checkpoint_hash,
            "seed": None if seed is None else int(seed),
            "fps": float(fps),
            "height": int(height),
            "width": int(width),
            "key_names": [str(k) for k in key_names],
            "created": _time.time(),
            "extra": dict(extra or {}),
        }
        # The same checks the reader applies, so a bad header fails here rather than at replay time.
        self.header = validate_header(header, f"RecordingWriter({self.path})")
        self._packer = msgpack.Packer(use_bin_type=True)
        packed_header = pack_header(header, self._packer)  # before opening: unpackable `extra` leaves no file
        # 0600: a recording shows what a player did; only its owner reads it unless they share it.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        self._file = os.fdopen(fd, "wb")
        self._file.write(packed_header)
        self._file.flush()
        self._t0 = _time.monotonic()
        self.frames_written = 0

    @property
    def num_keys(self) -> int:
        return len(self.header["key_names"])

    def write(
        self,
        frame_number: int,
        keys: Any,
        frame: Any,
        *,
        time: float | None = None,
        latency_ms: float | None = None,
        reset_seed: int | None = None,
    ) -> None:
        """Append one frame. `keys` [K] bool/uint8: the key state that produced this frame.

        `frame` [H, W, 3] uint8 (numpy or torch). `time` defaults to seconds since the writer opened.
        `reset_seed`: set when this frame came from `reset(seed)` rather than `step(keys)` (a mid-session
        reset), so `worldsim verify` can follow it; the first record is always the reset frame.
        """
        if self._file.closed:
            raise ValueError(f"RecordingWriter({self.path}) is closed; open a new writer to record more")
        k = _to_numpy(keys).reshape(-1)
        if k.shape[0] != self.num_keys:
            raise ValueError(f"keys has {k.shape[0]} entries, the header names {self.num_keys} keys")
        if k.dtype.kind == "f":
            raise ValueError(f"keys must be bool or uint8 multi-hot, got dtype {k.dtype}")
        f = _to_numpy(frame)
        expected = (self.header["height"], self.header["width"], 3)
        if f.shape != expected or f.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {list(expected)} (H, W, 3), got {f.dtype} {list(f.shape)}")
        record = {
            "frame_number": int(frame_number),
            "time": float(_time.monotonic() - self._t0 if time is None else time),
            "keys": pack_keys(k != 0),
            "frame": np.ascontiguousarray(f).tobytes(),
            "latency_ms": None if latency_ms is None else float(latency_ms),
        }
        if reset_seed is not None:
            record["reset_seed"] = int(reset_seed)
        payload = self._packer.pack(record)
        self._file.write(record_head(payload))  # two writes into the buffer: no copy of the frame
        self._file.write(payload)
        self._file.flush()
        self.frames_written += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
