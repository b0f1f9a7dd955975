"""Damaged recordings: every record outside the damage reads back, the rest is counted, and old
(version 1, no checksum) files still read. Real files, bytes flipped and cut at many positions."""

import msgpack
import numpy as np
import pytest
from test_record import KEYS, _write

from worldsim.cli import main as cli_main
from worldsim.record import RecordingError, read_recording
from worldsim.record.format import pack_keys

N = 40


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 40-record file: (its bytes, its frames, the byte offset after the header and after each record)."""
    p = tmp_path_factory.mktemp("rec") / "a.wsrec"
    frames, _, ends = _write(p, n=N)
    return p.read_bytes(), frames, ends


def _record_at(ends, offset):
    """The index of the record whose bytes hold `offset`."""
    return next(i for i in range(N) if ends[i] <= offset < ends[i + 1])


def _version_1(header, records):
    """The bytes a version-1 writer made: plain msgpack maps one after another, no checksums."""
    out = msgpack.packb({**header, "version": 1})
    for r in records:
        out += msgpack.packb(
            {"frame_number": r.frame_number, "time": r.time, "keys": pack_keys(r.keys),
             "frame": r.frame.tobytes(), "latency_ms": r.latency_ms}
        )  # fmt: skip
    return out


def _read(tmp_path, data):
    p = tmp_path / "damaged.wsrec"
    p.write_bytes(data)
    return read_recording(p)


def test_one_flipped_byte_anywhere_loses_only_its_record(tmp_path, written):
    data, frames, ends = written
    rng = np.random.default_rng(7)
    positions = set(rng.integers(ends[0], len(data), 300).tolist())
    positions |= {e + d for e in ends[:-1] for d in range(12)}  # every byte of every record's framing
    for pos in sorted(positions):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        rec = _read(tmp_path, bytes(bad))
        hit = _record_at(ends, pos)
        assert [r.frame_number for r in rec.records] == [i for i in range(N) if i != hit], pos
        for r in rec.records:
            assert np.array_equal(r.frame, frames[r.frame_number])
        # The record right after the damage says so (collect and verify must not join across it).
        assert [r.frame_number for r in rec.records if r.after_gap] == ([hit + 1] if hit + 1 < N else [])
        if hit == N - 1 and rec.truncated:  # a flipped length in the last record reads as a cut
            assert rec.records_skipped == 0
        else:
            assert rec.records_skipped == 1 and not rec.truncated, pos


def test_flips_in_the_header_refuse_the_file(tmp_path, written):
    data, _, ends = written
    for pos in range(ends[0]):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        with pytest.raises(RecordingError):
            _read(tmp_path, bytes(bad))


def test_cut_out_spans_and_many_flips_keep_every_undamaged_record(tmp_path, written):
    data, frames, ends = written
    rng = np.random.default_rng(11)
    for _ in range(150):  # a span cut out of the middle (a bad disk block, a botched copy)
        a = int(rng.integers(ends[0], len(data) - 1))
        b = int(rng.integers(a + 1, min(len(data), a + 3 * (ends[2] - ends[1])) + 1))
        rec = _read(tmp_path, data[:a] + data[b:])
        kept = [i for i in range(N) if ends[i + 1] <= a or ends[i] >= b]
        got = [r.frame_number for r in rec.records]
        if b == len(data):  # cut to the end: a truncation, no resync needed
            assert got == [i for i in range(N) if ends[i + 1] <= a]
            continue
        assert got == kept, (a, b)
        for r in rec.records:
            assert np.array_equal(r.frame, frames[r.frame_number])
    for _ in range(50):  # several records damaged in one file
        hits = sorted(set(rng.integers(0, N, 6).tolist()))
        bad = bytearray(data)
        for h in hits:
            bad[int(rng.integers(ends[h], ends[h + 1]))] ^= 0xFF
        rec = _read(tmp_path, bytes(bad))
        assert [r.frame_number for r in rec.records] == [i for i in range(N) if i not in hits]


def test_version_1_files_still_read(tmp_path, written):
    data, frames, ends = written
    rec = _read(tmp_path, data)
    plain = _version_1(rec.header, rec.records)
    old = _read(tmp_path, plain)
    assert old.header["version"] == 1 and old.header["key_names"] == KEYS and not old.truncated
    assert len(old.records) == N and all(np.array_equal(r.frame, f) for r, f in zip(old.records, frames))


def test_replay_headless_reports_the_damage_and_the_records_around_it(tmp_path, written, capsys):
    data, _, ends = written
    bad = bytearray(data)
    for h in (3, 4, 20):  # two neighbours and one more: two damaged spans, three records
        bad[(ends[h] + ends[h + 1]) // 2] ^= 0xFF
    p = tmp_path / "d.wsrec"
    p.write_bytes(bytes(bad))
    assert cli_main(["replay", str(p), "--headless"]) == 0
    out = capsys.readouterr().out
    assert f"frames     {N - 3}" in out
    assert "damaged    3 record(s) skipped in 2 place(s)" in out and f"byte {ends[3]}" in out
    # A version-1 file has no checksums: the summary still shows the records before the damage.
    rec = read_recording(p)
    plain = _version_1(rec.header, rec.records[:10])
    p.write_bytes(plain + b"\xc1" + plain[-200:])
    assert cli_main(["replay", str(p), "--headless"]) == 0
    out = capsys.readouterr().out
    assert "frames     10" in out and "damaged    reading stopped at record 10" in out


def test_verify_checks_every_frame_it_can_rebuild_around_the_damage(tmp_path, capsys):
    from test_record_verify import _record_game

    from worldsim.record.format import MAGIC

    p = tmp_path / "g.wsrec"
    _record_game(p, level=3)  # 40 frames, a mid-session reset at frame 25
    data = bytearray(p.read_bytes())
    starts = [i for i in range(len(data)) if data.startswith(MAGIC, i)]
    assert len(starts) == 40
    data[starts[10] + 100] ^= 0x01  # record 10: its frame is lost, and the game state after it
    p.write_bytes(bytes(data))
    assert cli_main(["verify", str(p)]) == 0
    out = capsys.readouterr().out
    # records 0-9 and 25-39 (from the reset on) re-run; 11-24 cannot: the state after 10 is unknown
    assert "identical: 25 frames match the game" in out and "1 damaged record(s) skipped; 14 frame(s)" in out


def test_collect_never_joins_a_clip_across_a_damaged_span(tmp_path, written):
    from worldsim.data import Dataset
    from worldsim.data.collect import collect_recordings

    data, frames, ends = written
    bad = bytearray(data)
    bad[(ends[7] + ends[8]) // 2] ^= 0xFF  # record 7 is lost: 0-6 and 8-39 are the two stretches
    p = tmp_path / "d.wsrec"
    p.write_bytes(bytes(bad))
    ds = Dataset(collect_recordings([p], tmp_path / "ds", frames=5, any_world=True, progress=False))
    assert len(ds) == 1 + 6  # 0-4 (5-6 do not fill a clip), then 8-12, ..., 33-37
    assert np.array_equal(ds.clip(1)[0], frames[8:13])
