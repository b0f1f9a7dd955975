"""The wire protocol's validation: every bad message is refused with the field named (no sockets)."""

import msgpack
import numpy as np
import pytest

from worldsim.serve import protocol as P


def pack(**msg):
    return msgpack.packb({"v": 1, **msg})


def refused(data: bytes) -> P.ProtocolError:
    with pytest.raises(P.ProtocolError) as e:
        P.decode(data)
    return e.value


def test_valid_messages_come_back_clean():
    assert P.decode(pack(type="hello", mode="lockstep", seed=3, fps=20, encoding="jpeg")) == {
        "v": 1, "type": "hello", "mode": "lockstep", "seed": 3, "fps": 20.0, "encoding": "jpeg",
    }  # fmt: skip
    msg = P.decode(pack(type="input", session="ab", seq=5, keys=[True, 0, 1, False]))
    assert msg["keys"] == [True, False, True, False]
    assert P.decode(pack(type="ping"))["type"] == "ping"
    assert P.decode(pack(type="reset", session="ab", seq=1, seed=None))["seed"] is None


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"\xc1", P.BAD_MESSAGE, None),  # never-used msgpack byte
        (pack(type="ping")[:-2], P.BAD_MESSAGE, None),  # truncated
        (pack(type="ping") + b"\x01", P.BAD_MESSAGE, None),  # trailing bytes
        (msgpack.packb([1, "hello"]), P.BAD_MESSAGE, None),  # not a map
        (msgpack.packb({"type": "ping"}), P.VERSION, "v"),
        (msgpack.packb({"v": 2, "type": "ping"}), P.VERSION, "v"),
        (msgpack.packb({"v": True, "type": "ping"}), P.VERSION, "v"),
        (pack(type="teleport"), P.BAD_TYPE, "type"),
        (pack(type=7), P.BAD_TYPE, "type"),
        (pack(type="hello"), P.BAD_FIELD, "mode"),  # missing
        (pack(type="hello", mode="turbo"), P.BAD_FIELD, "mode"),
        (pack(type="hello", mode="realtime", fps=0), P.BAD_FIELD, "fps"),
        (pack(type="hello", mode="realtime", fps=float("nan")), P.BAD_FIELD, "fps"),
        (pack(type="hello", mode="realtime", seed=-1), P.BAD_FIELD, "seed"),
        (pack(type="hello", mode="realtime", name="x" * 65), P.BAD_FIELD, "name"),
        (pack(type="hello", mode="realtime", admin=True), P.BAD_FIELD, "admin"),  # unknown field
        (pack(type="hello", mode="realtime", client_id="short"), P.BAD_FIELD, "client_id"),  # guessable
        (pack(type="input", session="ab", seq=True, keys=[]), P.BAD_FIELD, "seq"),  # bool is not an int
        (pack(type="input", session="ab", seq=0, keys=[]), P.BAD_FIELD, "seq"),
        (pack(type="input", session="ab", seq=1, keys=[2]), P.BAD_FIELD, "keys[0]"),
        (pack(type="input", session="ab", seq=1, keys="wasd"), P.BAD_FIELD, "keys"),
        (pack(type="input", session=5, seq=1, keys=[]), P.BAD_FIELD, "session"),
        (pack(type="step", seq=1, keys=[]), P.BAD_FIELD, "session"),
        (msgpack.packb({"v": 1, "type": "ping", "t": b"\x00" * 8}), P.BAD_MESSAGE, None),  # bin refused
        (msgpack.packb({"v": 1, "type": "ping", 5: 1}), P.BAD_MESSAGE, None),  # non-str map key
        (msgpack.packb({"v": 1, "type": "ping", "t": msgpack.ExtType(1, b"x")}), P.BAD_MESSAGE, None),
        (pack(type="input", session="ab", seq=1, keys=[0] * 65), P.BAD_MESSAGE, None),  # array limit
        (b"\x91" * 5000, P.BAD_MESSAGE, None),  # deep nesting
        (b"\x80" * (P.MAX_MESSAGE_BYTES + 1), P.BAD_MESSAGE, None),  # too large
    ],
)
def test_bad_messages_are_refused_with_the_field_named(data, code, field):
    e = refused(data)
    assert (e.code, e.field) == (code, field)
    if field is not None:
        assert repr(field.split("[")[0])[1:-1] in str(e)


def test_error_and_encode_round_trip():
    msg = msgpack.unpackb(P.error(P.BAD_FIELD, "field 'seq' ...", field="seq", seq=3))
    assert msg == {
        "v": 1,
        "type": "error",
        "code": "field",
        "field": "seq",
        "message": "field 'seq' ...",
        "seq": 3,
    }
    assert msgpack.unpackb(P.encode({"type": "pong", "t": 1.5})) == {"v": 1, "type": "pong", "t": 1.5}


def test_image_encodings():
    img = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    raw = P.encode_image(img, "raw")
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(8, 6, 3), img)
    jpeg = P.encode_image(img, "jpeg", 90)
    assert jpeg[:2] == b"\xff\xd8"


def test_client_speaks_the_same_version():
    from worldsim.controllers import client

    assert client.PROTOCOL_VERSION == P.PROTOCOL_VERSION
