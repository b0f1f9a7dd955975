"""Read `.wsrec` files: whole (`read_recording`) or streamed (`iter_records`, `RecordingReader`)."""

from __future__ import annotations

import logging
import mmap
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np

from worldsim.record.format import (
    CHUNK_HEAD,
    HEADER_CRC,
    MAGIC,
    MAX_RECORD_FIELDS_BYTES,
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


_PAYLOAD_LIMITS = {k: v for k, v in UNPACK_LIMITS.items() if k != "max_buffer_size"}  # unpackb's


@dataclass(frozen=True)
class Record:
    frame_number: int
    time: float
    keys: np.ndarray  # [K] bool: the key state that produced this frame
    frame: np.ndarray  # [H, W, 3] uint8
    latency_ms: float | None
    reset_seed: int | None = None
    after_gap: bool = False  # damaged records were skipped just before this one


class RecordingReader:
    """Open a recording, validate its header, then iterate its records once.

    After iteration, `truncated` says whether the file ended inside a record (a crash mid-write);
    `end_offset` is the byte offset just past the last complete record. In a version-2 file a damaged
    record (its checksum fails) is skipped: the reader resyncs on the next good record, and
    `records_skipped` / `bytes_skipped` / `damaged_at` (the byte offsets where damage began) say
    what was lost. A version-1 file has no checksums: damage ends the read with a RecordingError.
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
        self.records_skipped = 0
        self.bytes_skipped = 0
        self.damaged_at: list[int] = []
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
            self.end_offset = self._unpacker.tell()
            if self.header["version"] >= 2:
                self._check_header_crc()
        except RecordingError:
            self.close()
            raise
        self._shape = (self.header["height"], self.header["width"], 3)

    def _check_header_crc(self) -> None:
        n = self.end_offset
        self._file.seek(0)
        data = self._file.read(n + HEADER_CRC.size)
        if len(data) < n + HEADER_CRC.size:
            raise RecordingError(f"{self.path}: not a worldsim recording, or cut inside its header")
        (crc,) = HEADER_CRC.unpack_from(data, n)
        if zlib.crc32(data[:n]) != crc:
            raise RecordingError(
                f"{self.path}: the header is damaged (its checksum does not match); without a sound "
                "header no record can be read"
            )
        self.end_offset = n + HEADER_CRC.size

    def __iter__(self) -> Iterator[Record]:
        try:
            if self.header["version"] >= 2:
                yield from self._iter_chunks()
            else:
                yield from self._iter_plain()
            if self.truncated:
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

    def _record(self, obj: object, where: str, after_gap: bool = False) -> Record:
        rec = validate_record(obj, self.header, where)
        self.records_read += 1
        return Record(
            frame_number=rec["frame_number"],
            time=float(rec["time"]),
            keys=unpack_keys(rec["keys"], len(self.header["key_names"])),
            frame=np.frombuffer(rec["frame"], np.uint8).reshape(self._shape),
            latency_ms=None if rec.get("latency_ms") is None else float(rec["latency_ms"]),
            reset_seed=rec.get("reset_seed"),
            after_gap=after_gap,
        )

    def _iter_plain(self) -> Iterator[Record]:
        """Version 1: one msgpack object per record, no checksums."""
        while True:
            where = f"{self.path}: record {self.records_read} (byte {self.end_offset})"
            try:
                obj = next(self._unpacker)
            except StopIteration:
                break
            except _DECODE_ERRORS as e:
                raise RecordingError(f"{where}: corrupt data ({type(e).__name__}: {e})") from None
            rec = self._record(obj, where)
            self.end_offset = self._unpacker.tell()
            yield rec
        # msgpack stops quietly on an incomplete last object: the bytes past the last record tell.
        self.truncated = self.end_offset < self.size

    def _chunk(self, mm: mmap.mmap, pos: int) -> bytes | None:
        """The payload of the record framed at `pos` if its magic, length and checksum hold."""
        if self.size - pos < CHUNK_HEAD.size:
            return None
        magic, length, crc = CHUNK_HEAD.unpack_from(mm, pos)
        end = pos + CHUNK_HEAD.size + length
        if magic != MAGIC or not self._plausible(length) or end > self.size:
            return None
        payload = mm[pos + CHUNK_HEAD.size : end]
        return payload if zlib.crc32(payload) == crc else None

    def _resync(self, mm: mmap.mmap, start: int) -> int | None:
        """The offset of the next sound record at or after `start`, None if there is none."""
        i = mm.find(MAGIC, start)
        while i != -1:
            if self._chunk(mm, i) is not None:
                return i
            i = mm.find(MAGIC, i + 1)
        return None

    def _iter_chunks(self) -> Iterator[Record]:
        """Version 2: framed records with a crc32 each; a damaged one is skipped, not fatal."""
        if self.end_offset >= self.size:
            return
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = self.end_offset
            gap = False
            while pos < self.size:
                payload = self._chunk(mm, pos)
                if payload is not None:
                    where = f"{self.path}: record {self.records_read} (byte {pos})"
                    try:  # a sound checksum over bytes that are not a record: a writer's bug, named
                        obj = msgpack.unpackb(payload, raw=False, **_PAYLOAD_LIMITS)
                    except _DECODE_ERRORS as e:
                        raise RecordingError(f"{where}: not a record ({type(e).__name__}: {e})") from None
                    rec = self._record(obj, where, after_gap=gap)
                    gap = False
                    pos = self.end_offset = pos + CHUNK_HEAD.size + len(payload)
                    yield rec
                    continue
                nxt = self._resync(mm, pos + 1)
                if nxt is None and self._cut_at(mm, pos):
                    self.truncated = True  # the last record is incomplete: the writer stopped
                    return
                stop = self.size if nxt is None else nxt
                lost = max(1, mm[pos:stop].count(MAGIC))  # each record in the span began with MAGIC
                self.records_skipped += lost
                self.bytes_skipped += stop - pos
                self.damaged_at.append(pos)
                log.warning(
                    "%s: %d damaged byte(s) at byte %d (about %d record(s)) skipped; %s",
                    self.path,
                    stop - pos,
                    pos,
                    lost,
                    "reading on from the next sound record" if nxt is not None else "nothing sound after",
                )
                if nxt is None:
                    return
                pos, gap = nxt, True

    def _cut_at(self, mm: mmap.mmap, pos: int) -> bool:
        """Does the file end inside a record that begins soundly at `pos` (a cut, not damage)?"""
        tail = mm[pos : pos + CHUNK_HEAD.size]
        if len(tail) < CHUNK_HEAD.size:
            return MAGIC.startswith(tail[: len(MAGIC)])
        magic, length, _ = CHUNK_HEAD.unpack(tail)
        return magic == MAGIC and self._plausible(length) and pos + CHUNK_HEAD.size + length > self.size

    def _plausible(self, length: int) -> bool:
        """Could a record of this header have a payload of `length` bytes (its frame and its fields)?"""
        return 0 < length <= self._shape[0] * self._shape[1] * 3 + MAX_RECORD_FIELDS_BYTES

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
    records_skipped: int = 0  # damaged records skipped (version 2 files)

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
    return Recording(
        header=reader.header,
        records=records,
        truncated=reader.truncated,
        records_skipped=reader.records_skipped,
    )


def iter_records(path: str | Path) -> Iterator[Record]:
    """Stream the records of a recording (header checked first); warns through logging if truncated."""
    yield from RecordingReader(path)
