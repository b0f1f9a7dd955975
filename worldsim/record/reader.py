"""Read `.wsrec` files: whole (`read_recording`) or streamed (`iter_records`, `RecordingReader`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from worldsim.record.format import (
    UNPACK_LIMITS,
    RecordingError,
    unpack_keys,
    validate_header,
    validate_record,
)

log = logging.getLogger(__name__)

# What msgpack raises on bytes that are not msgpack (or break our limits).
_DECODE_ERRORS = (
    msgpack.exceptions.ExtraData,
    msgpack.exceptions.FormatError,
    msgpack.exceptions.StackError,
    ValueError,  # includes UnicodeDecodeError and "exceeds max_*_len"
    TypeError,
)


@dataclass(frozen=True)
class Record:
    frame_number: int
    time: float
    keys: np.ndarray  # [K] bool: the key state that produced this frame
    frame: np.ndarray  # [H, W, 3] uint8
    latency_ms: float | None
    reset_seed: int | None = None


class RecordingReader:
    """Open a recording, validate its header, then iterate its records once.

    After iteration, `truncated` says whether the file ended inside a record (a crash mid-write);
    `end_offset` is the byte offset just past the last complete record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot open ({e.strerror})") from None
        self.size = os.fstat(self._file.fileno()).st_size
        self.truncated = False
        self.records_read = 0
        if self.size == 0:
            self.close()
            raise RecordingError(f"{self.path}: empty file, not a worldsim recording")
        self._unpacker = msgpack.Unpacker(self._file, raw=False, **UNPACK_LIMITS)
        try:
            first = next(self._unpacker)
        except StopIteration:
            self.close()
            raise RecordingError(
                f"{self.path}: not a worldsim recording, or cut inside its header ({self.size} bytes)"
            ) from None
        except _DECODE_ERRORS as e:
            self.close()
            raise RecordingError(f"{self.path}: not a worldsim recording ({type(e).__name__}: {e})") from None
        try:
            self.header = validate_header(first, str(self.path))
        except RecordingError:
            self.close()
            raise
        self.end_offset = self._unpacker.tell()
        self._shape = (self.header["height"], self.header["width"], 3)

    def __iter__(self) -> Iterator[Record]:
        num_keys = len(self.header["key_names"])
        try:
            while True:
                where = f"{self.path}: record {self.records_read} (byte {self.end_offset})"
                try:
                    obj = next(self._unpacker)
                except StopIteration:
                    break
                except _DECODE_ERRORS as e:
                    raise RecordingError(f"{where}: corrupt data ({type(e).__name__}: {e})") from None
                rec = validate_record(obj, self.header, where)
                self.end_offset = self._unpacker.tell()
                self.records_read += 1
                yield Record(
                    frame_number=rec["frame_number"],
                    time=float(rec["time"]),
                    keys=unpack_keys(rec["keys"], num_keys),
                    frame=np.frombuffer(rec["frame"], np.uint8).reshape(self._shape),
                    latency_ms=None if rec.get("latency_ms") is None else float(rec["latency_ms"]),
                    reset_seed=rec.get("reset_seed"),
                )
            # msgpack stops quietly on an incomplete last object: the bytes past the last record tell.
            if self.end_offset < self.size:
                self.truncated = True
                log.warning(
                    "%s: truncated: %d trailing bytes after record %d are an incomplete record "
                    "(the writer stopped mid-write); read %d complete records",
                    self.path,
                    self.size - self.end_offset,
                    self.records_read - 1,
                    self.records_read,
                )
        finally:
            self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Recording:
    header: dict
    records: list[Record] = field(default_factory=list)
    truncated: bool = False

    @property
    def fps(self) -> float:
        return float(self.header["fps"])

    @property
    def key_names(self) -> list[str]:
        return list(self.header["key_names"])


def read_recording(path: str | Path) -> Recording:
    """Read a whole recording into memory (frames stay views on the file's bytes, no copies)."""
    reader = RecordingReader(path)
    records = list(reader)
    return Recording(header=reader.header, records=records, truncated=reader.truncated)


def iter_records(path: str | Path) -> Iterator[Record]:
    """Stream the records of a recording (header checked first); warns through logging if truncated."""
    yield from RecordingReader(path)
