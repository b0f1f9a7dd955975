"""The wire protocol (docs/protocol.md): msgpack maps with a version and a type, validated field by field.

Nothing here touches sockets or torch: `decode` turns bytes into a validated dict or raises
`ProtocolError` naming the field; `encode` packs a dict. The server and the tests share these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # client -> server; the transport drops bigger ones (zmq MAXMSGSIZE)
MAX_KEYS = 64
MAX_FPS = 240.0
MAX_SEQ = 2**63 - 1
MAX_SEED = 2**63 - 1
MAX_NAME = 64
ENCODINGS = ("raw", "jpeg")
MODES = ("realtime", "lockstep")

# Error codes (the `code` field of an error message).
BAD_MESSAGE = "bad_message"  # not msgpack, not a map, too large
VERSION = "version"  # missing or unsupported `v`
BAD_TYPE = "type"  # missing or unknown `type`
BAD_FIELD = "field"  # a field is missing, unknown, of the wrong type or out of range
UNKNOWN_SESSION = "unknown_session"  # no live session has that id (expired, closed, server restarted)
NOT_OWNER = "not_owner"  # the session belongs to another connection (or CURVE key)
CLIENT_LIMIT = "client_limit"  # this connection (or key) already holds its cap of sessions
WRONG_MODE = "mode"  # e.g. `input` on a lockstep session
SERVER_FULL = "server_full"
FLOOD = "flood"  # too many unanswered `step`s queued
INTERNAL = "internal"  # the world failed; the session is closed


class ProtocolError(ValueError):
    """A message broke the protocol; `code` and `field` go back to the client in an error message."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


# ---------------------------------------------------------------------------------------------
# Field checkers: each returns the cleaned value or raises ProtocolError naming the field.
# ---------------------------------------------------------------------------------------------

Checker = Callable[[str, Any], Any]


def _fail(field: str, value: Any, want: str) -> ProtocolError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ProtocolError(BAD_FIELD, f"field '{field}' must be {want}, got {shown}", field)


def _int(lo: int, hi: int) -> Checker:
    def check(field: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _fail(field, v, f"an integer in [{lo}, {hi}]")
        return v

    return check


def _float(lo: float, hi: float) -> Checker:
    def check(field: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
            raise _fail(field, v, f"a number in [{lo}, {hi}]")
        return float(v)

    return check


def _str(max_len: int, min_len: int = 0) -> Checker:
    def check(field: str, v: Any) -> str:
        if not isinstance(v, str) or not min_len <= len(v) <= max_len:
            raise _fail(field, v, f"a string of {min_len} to {max_len} characters")
        return v

    return check


def _enum(*choices: str) -> Checker:
    def check(field: str, v: Any) -> str:
        if v not in choices or not isinstance(v, str):
            raise _fail(field, v, "one of " + ", ".join(repr(c) for c in choices))
        return v

    return check


def _nullable(inner: Checker) -> Checker:
    def check(field: str, v: Any) -> Any:
        return None if v is None else inner(field, v)

    return check


def _keys(field: str, v: Any) -> list[bool]:
    """A multi-hot key vector: an array of booleans (or 0/1 integers), one per key name."""
    if not isinstance(v, list) or len(v) > MAX_KEYS:
        raise _fail(field, v, f"an array of at most {MAX_KEYS} booleans (one per key name)")
    out = []
    for i, k in enumerate(v):
        if isinstance(k, bool):
            out.append(k)
        elif isinstance(k, int) and k in (0, 1):
            out.append(bool(k))
        else:
            raise _fail(f"{field}[{i}]", k, "true/false or 0/1")
    return out


_SESSION = _str(64)
_SEQ = _int(1, MAX_SEQ)
_SEED = _nullable(_int(0, MAX_SEED))
_TIME = _float(-1e12, 1e12)

# type -> {field: (required, checker)}. `v` and `type` are checked before these.
SCHEMAS: dict[str, dict[str, tuple[bool, Checker]]] = {
    "hello": {
        "mode": (True, _enum(*MODES)),
        "fps": (False, _float(1.0, MAX_FPS)),
        "seed": (False, _SEED),
        "encoding": (False, _enum(*ENCODINGS)),
        "quality": (False, _int(1, 100)),
        "name": (False, _str(MAX_NAME)),
        # 16+ random chars: a repeated hello with it from the same connection gets that session again.
        "client_id": (False, _str(MAX_NAME, min_len=16)),
    },
    "input": {"session": (True, _SESSION), "seq": (True, _SEQ), "keys": (True, _keys), "t": (False, _TIME)},
    "step": {"session": (True, _SESSION), "seq": (True, _SEQ), "keys": (True, _keys), "t": (False, _TIME)},
    "reset": {"session": (True, _SESSION), "seq": (True, _SEQ), "seed": (False, _SEED)},
    "stats": {"session": (True, _SESSION)},
    "ping": {"session": (False, _nullable(_SESSION)), "t": (False, _TIME)},
    "bye": {"session": (True, _SESSION)},
}


def _unpack(data: bytes) -> Any:
    # Limits keep a hostile 64 KiB message from expanding into a huge object; ext types (and so
    # timestamps and anything pickle-like) are refused outright.
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        use_list=True,
        max_str_len=4096,
        max_bin_len=0,
        max_array_len=MAX_KEYS,
        max_map_len=16,
        max_ext_len=0,
    )


def decode(data: bytes) -> dict[str, Any]:
    """Parse and validate one client message; raise ProtocolError naming what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(BAD_MESSAGE, f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        msg = _unpack(data)
    except Exception as e:  # noqa: BLE001 - any parse failure of outside bytes is the sender's error
        raise ProtocolError(BAD_MESSAGE, f"not a single valid msgpack value ({type(e).__name__})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_MESSAGE, f"a message must be a msgpack map, got {type(msg).__name__}")
    return validate(msg)


def validate(msg: dict[str, Any]) -> dict[str, Any]:
    """Check `v`, `type` and every field of a decoded message; return a clean copy."""
    v = msg.get("v")
    if isinstance(v, bool) or not isinstance(v, int) or v != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION, f"field 'v' must be the protocol version {PROTOCOL_VERSION}, got {v!r}", "v"
        )
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        shown = repr(kind)[:40]
        raise ProtocolError(
            BAD_TYPE, f"field 'type' must be one of {', '.join(SCHEMAS)}, got {shown}", "type"
        )
    schema = SCHEMAS[kind]
    out: dict[str, Any] = {"v": v, "type": kind}
    for name in msg:
        if name not in schema and name not in ("v", "type"):
            raise ProtocolError(
                BAD_FIELD, f"unknown field {str(name)[:40]!r} in a {kind!r} message", str(name)[:40]
            )
    for name, (required, check) in schema.items():
        if name in msg:
            out[name] = check(name, msg[name])
        elif required:
            raise ProtocolError(BAD_FIELD, f"field '{name}' is required in a {kind!r} message", name)
    return out


def encode(msg: dict[str, Any]) -> bytes:
    """Pack one message (the server's replies); adds the protocol version."""
    return msgpack.packb({"v": PROTOCOL_VERSION, **msg}, use_bin_type=True)


def error(code: str, message: str, *, field: str | None = None, **extra: Any) -> bytes:
    """An error message for the client: code, the field at fault (or nil), and a sentence."""
    return encode({"type": "error", "code": code, "field": field, "message": message, **extra})


def encode_image(image: Any, encoding: str, quality: int = 90) -> bytes:
    """Frame bytes for the wire: `raw` is H*W*3 RGB bytes row-major; `jpeg` is a baseline JPEG."""
    if encoding == "raw":
        return image.tobytes()  # numpy [H, W, 3] uint8, C order
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
