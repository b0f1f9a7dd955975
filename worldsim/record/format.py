"""The `.wsrec` format: constants, the msgpack limits, and field-by-field validation (docs/recording.md)."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import msgpack
import numpy as np

from worldsim.errors import UserError

FORMAT_NAME = "wsrec"
FORMAT_VERSION = 2  # 2: a crc32 after the header and on every record, framed for resync; 1: plain msgpack

# Version 2 frames every record as MAGIC | payload length (u32 LE) | crc32 of the payload (u32 LE) |
# payload (the record's msgpack map). 0xc1 is the one byte msgpack never uses, so a plain msgpack
# reader stops at once instead of misreading; a reader resyncs on MAGIC after a damaged record.
MAGIC = b"\xc1WSR"
CHUNK_HEAD = struct.Struct("<4sII")  # magic, payload length, crc32
HEADER_CRC = struct.Struct("<I")  # follows the header map: crc32 of the header's msgpack bytes

# Limits handed to msgpack's Unpacker so a hostile or corrupt file cannot make us allocate gigabytes.
MAX_FRAME_BYTES = 64 * 1024 * 1024  # one raw RGB frame: 4096 x 4096 x 3 fits
# A version-2 record's payload holds its H*W*3 frame bytes and at most this much more (its other fields).
# The reader refuses any other length before checksumming: a resync through noise stays cheap.
MAX_RECORD_FIELDS_BYTES = 64 * 1024
UNPACK_LIMITS = dict(
    max_buffer_size=MAX_FRAME_BYTES + (1 << 20),
    max_bin_len=MAX_FRAME_BYTES,
    max_str_len=1 << 20,
    max_array_len=1 << 16,
    max_map_len=1 << 12,
    max_ext_len=0,
)

HEADER_FIELDS = (
    "format",
    "version",
    "world",
    "checkpoint_hash",
    "seed",
    "fps",
    "height",
    "width",
    "key_names",
    "created",
    "extra",
)


class RecordingError(UserError):
    """A file that is not a readable `.wsrec` recording; the message names the file and the problem."""


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _require(cond: bool, where: str, field: str, value: Any, expected: str) -> None:
    if not cond:
        shown = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else repr(value)[:80]
        raise RecordingError(
            f"{where}: field '{field}' is {shown} ({_type_name(value)}), expected {expected}"
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def validate_header(obj: Any, where: str) -> dict:
    """Check the first object of a file; return the header as a plain dict."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        what = (
            f"a {_type_name(obj)}"
            if not isinstance(obj, dict)
            else f"a map with format={obj.get('format')!r}"
        )
        raise RecordingError(
            f"{where}: not a worldsim recording (its first object is {what}, not a wsrec header)"
        )
    version = obj.get("version")
    _require(_is_int(version) and version >= 1, where, "version", version, "an int >= 1")
    if version > FORMAT_VERSION:
        raise RecordingError(
            f"{where}: recording format version {version} is newer than this worldsim reads "
            f"({FORMAT_VERSION}); upgrade worldsim to read it"
        )
    for field in HEADER_FIELDS:
        if field not in obj:
            raise RecordingError(f"{where}: header has no field '{field}'")
    _require(
        isinstance(obj["world"], str) and obj["world"] != "", where, "world", obj["world"], "a non-empty str"
    )
    ch = obj["checkpoint_hash"]
    _require(ch is None or isinstance(ch, str), where, "checkpoint_hash", ch, "a str or nil")
    _require(obj["seed"] is None or _is_int(obj["seed"]), where, "seed", obj["seed"], "an int or nil")
    _require(_is_number(obj["fps"]) and obj["fps"] > 0, where, "fps", obj["fps"], "a number > 0")
    for field in ("height", "width"):
        v = obj[field]
        _require(_is_int(v) and 1 <= v <= 4096, where, field, v, "an int in 1..4096")
    names = obj["key_names"]
    _require(
        isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names),
        where,
        "key_names",
        names,
        "a list of distinct str",
    )
    _require(_is_number(obj["created"]), where, "created", obj["created"], "a unix time (float)")
    _require(isinstance(obj["extra"], dict), where, "extra", obj["extra"], "a map")
    return dict(obj)


def pack_header(header: dict, packer: msgpack.Packer | None = None) -> bytes:
    """A version-2 header: the msgpack map, then the crc32 of its bytes."""
    data = (packer or msgpack.Packer(use_bin_type=True)).pack(header)
    return data + HEADER_CRC.pack(zlib.crc32(data))


def record_head(payload: bytes) -> bytes:
    """The 12 bytes that frame a version-2 record's payload: MAGIC, its length, its crc32."""
    return CHUNK_HEAD.pack(MAGIC, len(payload), zlib.crc32(payload))


def pack_record(record: dict, packer: msgpack.Packer | None = None) -> bytes:
    """A version-2 record: its head (MAGIC, length, crc32), then the record's msgpack map."""
    payload = (packer or msgpack.Packer(use_bin_type=True)).pack(record)
    return record_head(payload) + payload


def pack_keys(keys: np.ndarray) -> bytes:
    """`[K]` bool -> ceil(K/8) bytes, key i at bit (i % 8) of byte i // 8 (little bit order)."""
    return np.packbits(keys.astype(bool), bitorder="little").tobytes()


def unpack_keys(data: bytes, num_keys: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8), count=num_keys, bitorder="little").astype(bool)


def validate_record(obj: Any, header: dict, where: str) -> dict:
    """Check one frame record against its header; return the fields decoded (keys/frame still bytes)."""
    if not isinstance(obj, dict):
        raise RecordingError(f"{where}: a frame record must be a map, got a {_type_name(obj)}")
    for field in ("frame_number", "time", "keys", "frame"):
        if field not in obj:
            raise RecordingError(f"{where}: frame record has no field '{field}'")
    n = obj["frame_number"]
    _require(_is_int(n) and n >= 0, where, "frame_number", n, "an int >= 0")
    _require(_is_number(obj["time"]), where, "time", obj["time"], "a finite number (seconds)")
    k = len(header["key_names"])
    keys = obj["keys"]
    _require(
        isinstance(keys, bytes) and len(keys) == (k + 7) // 8,
        where,
        "keys",
        keys,
        f"{(k + 7) // 8} bytes of packed bits for {k} keys",
    )
    frame = obj["frame"]
    h, w = header["height"], header["width"]
    _require(
        isinstance(frame, bytes) and len(frame) == h * w * 3,
        where,
        "frame",
        frame,
        f"H*W*3 = {h}*{w}*3 = {h * w * 3} bytes of raw RGB",
    )
    lat = obj.get("latency_ms")
    _require(lat is None or (_is_number(lat) and lat >= 0), where, "latency_ms", lat, "a number >= 0 or nil")
    rs = obj.get("reset_seed")
    _require(rs is None or _is_int(rs), where, "reset_seed", rs, "an int or nil")
    return obj
