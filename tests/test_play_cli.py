"""`worldsim play` end to end: headless lockstep play with bots and recording, the window through the
CLI (dummy video driver) with a recording and a screenshot, and flag errors."""

import numpy as np
import pytest

from worldsim.cli import main
from worldsim.record import read_recording
from worldsim.record.verify import verify_recording
from worldsim.world import KEY_NAMES


def test_headless_bot_recording_reads_back_and_verifies(tmp_path, capsys):
    rec = tmp_path / "a.wsrec"
    argv = ["play", "--world", "game", "--size", "32", "--seed", "4", "--bot", "random-sticky"]
    assert main([*argv, "--headless", "--frames", "40", "--record", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "40 frames" in out and str(rec) in out
    r = read_recording(rec)
    assert not r.truncated
    assert r.header["world"] == "game" and r.header["seed"] == 4
    assert (r.header["height"], r.header["width"]) == (32, 32)
    assert list(r.header["key_names"]) == list(KEY_NAMES)
    assert [x.frame_number for x in r.records] == list(range(40))
    keys = np.stack([x.keys for x in r.records])
    assert not keys[0].any() and keys[1:].any(), "the bot pressed keys after the reset frame"
    assert all(x.latency_ms is not None for x in r.records)
    assert len({x.frame.tobytes() for x in r.records}) > 5
    # The recording is exactly what the game makes from that seed and those keys.
    assert verify_recording(rec).identical


def test_replay_bot_reproduces_a_recording(tmp_path):
    a, b = tmp_path / "a.wsrec", tmp_path / "b.wsrec"
    common = ["play", "--world", "game", "--size", "32", "--headless"]
    assert main([*common, "--seed", "9", "--bot", "random-sticky", "--frames", "30", "--record", str(a)]) == 0
    # No --seed: the replay takes the recording's; --frames beyond its end stops when the keys run out.
    assert main([*common, "--bot", f"replay:{a}", "--frames", "100", "--record", str(b)]) == 0
    ra, rb = read_recording(a), read_recording(b)
    assert rb.header["seed"] == 9 and len(rb.records) == len(ra.records) == 30
    for x, y in zip(ra.records, rb.records):
        assert np.array_equal(x.keys, y.keys) and np.array_equal(x.frame, y.frame)


def test_window_through_the_cli_records_and_saves_a_screenshot(tmp_path):
    rec, png = tmp_path / "w.wsrec", tmp_path / "shot.png"
    argv = ["play", "--world", "game", "--size", "32", "--fps", "60", "--frames", "20"]
    assert main([*argv, "--bot", "random-sticky", "--record", str(rec), "--screenshot", str(png)]) == 0
    r = read_recording(rec)
    assert len(r.records) == 20 and r.records[0].frame_number == 0
    numbers = [x.frame_number for x in r.records]
    assert numbers == sorted(numbers), "what the player saw, in order (frames the UI skipped are absent)"
    assert all(x.latency_ms is not None and 0 <= x.latency_ms < 5000 for x in r.records)
    import pygame

    shot = pygame.image.load(str(png))
    assert shot.get_width() == shot.get_height() and shot.get_width() % 32 == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--headless"], "--frames"),
        (["--fps", "0"], "--fps"),
        (["--world", "game", "--checkpoint", "x"], "--checkpoint"),
        (["--connect", "tcp://127.0.0.1:1", "--world", "game"], "--connect"),
        (["--headless", "--frames", "3", "--bot", "fly"], "random-sticky"),
        (["--scale", "0"], "--scale"),
        (["--vs-bench", "1"], "--vs-bench"),  # the bench follows headless play
        (["--headless", "--frames", "3", "--vs-bench", "1", "--server"], "--vs-bench"),
        (["--server", "--no-server"], "--server"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert main(["play", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_headless_play_prints_its_ratio_to_a_bench_of_the_same_world(capsys):
    argv = ["play", "--world", "game", "--size", "16", "--headless", "--frames", "20", "--vs-bench", "0.3"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("game: 20 frames") and "fps" in out[0]
    assert out[1].startswith("bench of the same world: ") and "play / bench = " in out[1]
    ratio = float(out[1].rsplit("= ", 1)[1])
    assert ratio > 0  # the value is a measurement (benchmarks, not tests, judge it)
