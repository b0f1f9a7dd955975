"""The .wsrec format: round trip, truncation at any byte, junk and newer versions, field validation, CLI errors."""

import logging
import os

import msgpack
import numpy as np
import pytest

from worldsim.cli import main as cli_main
from worldsim.errors import UserError
from worldsim.record import RecordingError, RecordingReader, RecordingWriter, iter_records, read_recording
from worldsim.record.format import FORMAT_VERSION, pack_header, pack_keys, pack_record
from worldsim.record.summary import summarize

KEYS = ["forward", "back", "strafe_left", "strafe_right", "turn_left", "turn_right", "jump", "use", "fire"]


def _write(path, n=6, h=5, w=7, k=KEYS, seed=3):
    """Write n records of random frames; return (frames, keys, byte offset after the header and each record)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    keys = rng.random((n, len(k))) < 0.5
    ends = []
    with RecordingWriter(
        path, world="game", height=h, width=w, key_names=k, fps=24.0, seed=seed, extra={"level": 4}
    ) as wr:
        ends.append(os.path.getsize(path))  # the header is flushed at open
        for i in range(n):
            wr.write(i, keys[i], frames[i], time=i / 24, latency_ms=None if i == 0 else float(i))
            ends.append(os.path.getsize(path))  # flushed as written
    return frames, keys, ends


def test_round_trip(tmp_path):
    p = tmp_path / "a.wsrec"
    frames, keys, _ = _write(p)
    rec = read_recording(p)
    assert not rec.truncated
    h = rec.header
    assert (h["world"], h["seed"], h["fps"], h["height"], h["width"]) == ("game", 3, 24.0, 5, 7)
    assert h["key_names"] == KEYS and h["extra"] == {"level": 4} and h["version"] == FORMAT_VERSION
    assert len(rec.records) == 6
    for i, r in enumerate(rec.records):
        assert r.frame_number == i and r.time == pytest.approx(i / 24)
        assert r.keys.dtype == bool and r.keys.tolist() == keys[i].tolist()  # 9 keys: 2 packed bytes
        assert r.frame.dtype == np.uint8 and np.array_equal(r.frame, frames[i])
        assert r.latency_ms == (None if i == 0 else float(i))
    assert [r.frame_number for r in iter_records(p)] == list(range(6))


def test_writer_accepts_torch_and_rejects_bad_shapes(tmp_path):
    import torch

    with RecordingWriter(
        tmp_path / "t.wsrec", world="game", height=2, width=3, key_names=["a"], fps=30, seed=None
    ) as w:
        w.write(
            0, torch.tensor([1], dtype=torch.uint8), torch.full((2, 3, 3), 7, dtype=torch.uint8), reset_seed=9
        )
        with pytest.raises(ValueError, match=r"frame must be uint8 \[2, 3, 3\]"):
            w.write(1, [0], np.zeros((3, 2, 3), np.uint8))
        with pytest.raises(ValueError, match="keys has 2 entries"):
            w.write(1, [0, 1], np.zeros((2, 3, 3), np.uint8))
        w.write(1, [0], np.zeros((2, 3, 3), np.uint8))
        w.write(2, [0], np.zeros((2, 3, 3), np.uint8), reset_seed=10)
    assert summarize(tmp_path / "t.wsrec")["resets"] == 1  # the first frame's reset is not mid-session
    r = read_recording(tmp_path / "t.wsrec").records[0]
    assert r.keys.tolist() == [True] and r.reset_seed == 9 and int(r.frame[1, 2, 0]) == 7
    with pytest.raises(RecordingError, match="field 'fps'"):
        RecordingWriter(tmp_path / "u.wsrec", world="game", height=2, width=3, key_names=["a"], fps=0, seed=1)


def test_truncation_at_random_byte_offsets(tmp_path, caplog):
    full = tmp_path / "full.wsrec"
    frames, _, ends = _write(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.wsrec"
    rng = np.random.default_rng(1)
    offsets = set(rng.integers(ends[0], len(data) + 1, 150).tolist()) | set(ends)
    for off in sorted(offsets):
        cut.write_bytes(data[:off])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="worldsim.record"):
            rec = read_recording(cut)
        complete = sum(e <= off for e in ends[1:])
        assert len(rec.records) == complete, off
        assert rec.truncated == (off not in ends), off
        assert ("truncated" in caplog.text) == rec.truncated
        for i, r in enumerate(rec.records):
            assert np.array_equal(r.frame, frames[i])
    # Cut inside the header: nothing usable, and the error says so.
    for off in rng.integers(1, ends[0], 20).tolist():
        cut.write_bytes(data[:off])
        with pytest.raises(RecordingError, match="not a worldsim recording"):
            read_recording(cut)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a worldsim recording"),
        (bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)), "not a worldsim recording"),
        (msgpack.packb({"hello": "world"}) + msgpack.packb([1, 2, 3]), "not a worldsim recording"),
        (msgpack.packb([1, 2, 3]), "first object is a list"),
        (
            msgpack.packb({"format": "wsrec", "version": FORMAT_VERSION + 1}),
            f"version {FORMAT_VERSION + 1} is newer",
        ),
        (msgpack.packb({"format": "wsrec", "version": 1, "world": "game"}), "header has no field"),
        (
            b"\xc6\xff\xff\xff\xff" + b"x" * 100,
            "not a worldsim recording",
        ),  # a 4 GiB bin header: refused, not allocated
    ],
)
def test_not_a_recording(tmp_path, content, match):
    p = tmp_path / "x.wsrec"
    p.write_bytes(content)
    with pytest.raises(RecordingError, match=match) as e:
        read_recording(p)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def _header_and_record(tmp_path):
    """The header and first record of a written file, as the msgpack maps they were packed from."""
    p = tmp_path / "ok.wsrec"
    _write(p, n=1)
    header = RecordingReader(p).header
    r = read_recording(p).records[0]
    record = {"frame_number": r.frame_number, "time": r.time, "keys": pack_keys(r.keys)}
    return header, {**record, "frame": r.frame.tobytes(), "latency_ms": r.latency_ms}


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("frame", b"\x00" * 10, r"field 'frame' is 10 bytes .* expected H\*W\*3 = 5\*7\*3 = 105"),
        ("keys", b"\x00", r"field 'keys' .* expected 2 bytes of packed bits for 9 keys"),
        ("frame_number", -1, "field 'frame_number'"),
        ("time", "soon", "field 'time'"),
        ("latency_ms", "fast", "field 'latency_ms'"),
    ],
)
def test_bad_record_fields_are_named(tmp_path, field, value, match):
    header, record = _header_and_record(tmp_path)
    record[field] = value
    p = tmp_path / "bad.wsrec"
    p.write_bytes(pack_header(header) + pack_record(record))  # sound checksums over a bad field
    with pytest.raises(RecordingError, match=match):
        read_recording(p)


def test_bad_header_fields_are_named(tmp_path):
    header, record = _header_and_record(tmp_path)
    for field, value in [("height", 0), ("key_names", ["a", "a"]), ("seed", 1.5), ("extra", [])]:
        bad = {**header, field: value}
        p = tmp_path / "bad.wsrec"
        p.write_bytes(pack_header(bad) + pack_record(record))
        with pytest.raises(RecordingError, match=f"field '{field}'"):
            RecordingReader(p)


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.wsrec"
    junk.write_bytes(b"definitely not msgpack \xc1\xc1\xc1")
    for argv in (
        ["replay", str(junk), "--headless"],
        ["export", str(junk), str(tmp_path / "o.mp4")],
        ["verify", str(junk)],
        ["replay", str(tmp_path / "missing.wsrec"), "--headless"],
    ):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "error:" in err, err
    ok = tmp_path / "ok.wsrec"
    _write(ok)
    assert cli_main(["export", str(ok), str(tmp_path / "o.avi")]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err


def test_replay_headless_summary(tmp_path, capsys):
    p = tmp_path / "a.wsrec"
    _, keys, ends = _write(p)
    p.write_bytes(p.read_bytes()[: ends[-1] - 3])  # cut the last record
    assert cli_main(["replay", str(p), "--headless"]) == 0
    out = capsys.readouterr().out
    assert "world      game" in out and "frames     5" in out and "24 fps" in out
    usage = round(100 * keys[:5, 0].mean())
    assert f"forward {usage}%" in out
    assert "p50 2.50 ms" in out  # latencies 1..4 (record 0 has none)
    assert "truncated" in out


def test_replay_window_plays_every_frame(tmp_path):
    from worldsim.record.replay import replay_window

    p = tmp_path / "a.wsrec"
    _write(p, n=8)
    assert replay_window(p, scale=2, speed=50.0) == 8  # real pygame, SDL dummy video driver
