"""The server with the real GameWorld and real sockets on loopback: sessions, inputs, errors, liveness."""

import time

import msgpack
import numpy as np
import pytest
import torch
import zmq
from waiting import wait_for
from worldsim.controllers.client import Client, ServerError

from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.record import RecordingReader
from worldsim.serve import Server, world_factory

SIZE = 16


def start(**kw) -> Server:
    kw.setdefault("max_sessions", 4)
    kw.setdefault("stats_interval_s", 0)
    return Server(world_factory("game", size=SIZE), **kw).start()


def frames_until(client: Client, n: int, timeout_s=10.0, keys=None):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        if keys is not None:
            client.send_keys(keys)
        f = client.poll_frame(timeout_ms=100)
        if f is not None:
            got.append(f)
    assert len(got) >= n, f"only {len(got)} of {n} frames in {timeout_s} s"
    return got


class Raw:
    """A bare DEALER speaking msgpack, for messages the Client would never send."""

    def __init__(self, addr):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(addr)

    def send(self, **msg):
        self.sock.send(msgpack.packb({"v": 1, **msg}))

    def recv(self, want_type=None, timeout_ms=5000):
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                msg = msgpack.unpackb(self.sock.recv())
                if want_type is None or msg["type"] == want_type:
                    return msg
        raise AssertionError(f"no {want_type or 'message'} within {timeout_ms} ms")

    def close(self):
        self.sock.close(0)


@pytest.fixture
def server():
    s = start()
    yield s
    s.stop()


def reference_frames(seed, key_rows):
    w = GameWorld(batch_size=1, size=SIZE)
    out = [w.reset([seed])[0].numpy()]
    for k in key_rows:
        out.append(w.step(torch.tensor([k], dtype=torch.bool))[0].numpy())
    return out


def test_realtime_session_streams_frames_that_carry_input_seq(server):
    with Client(server.address, fps=30, name="rt") as c:
        welcome = c.connect()
        assert (welcome["height"], welcome["width"], welcome["mode"]) == (SIZE, SIZE, "realtime")
        assert welcome["key_names"] == [
            "forward",
            "back",
            "strafe_left",
            "strafe_right",
            "turn_left",
            "turn_right",
        ]
        seq = c.send_keys([0, 0, 0, 0, 1, 0])
        frames = frames_until(c, 10)
        assert all(f.image.shape == (SIZE, SIZE, 3) and f.image.dtype == np.uint8 for f in frames)
        numbers = [f.number for f in frames]
        assert numbers == sorted(numbers) and numbers[-1] >= 9
        assert frames[-1].input_seq == seq
        assert any(f.latency_ms is not None and 0 < f.latency_ms < 5000 for f in frames)
        st = c.stats()
        assert st["mode"] == "realtime" and st["frames"] >= 10 and st["inputs"] == 1
        assert st["latency_ms"]["n"] == 1 and st["client"]["frames"] >= 10


def test_newest_input_wins_between_ticks():
    server = start(fps=2.0)  # a 500 ms tick leaves room to send three inputs inside one interval
    try:
        with Client(server.address, fps=2.0, seed=11) as c:
            c.connect()
            frames_until(c, 1)  # frame 0 (reset)
            frames_until(c, 1)  # a tick: the next one is ~500 ms away
            c.send_keys([1, 0, 0, 0, 0, 0])
            c.send_keys([0, 0, 0, 0, 1, 0])
            last = c.send_keys([0, 0, 0, 0, 0, 1])
            f = frames_until(c, 1)[0]
            assert f.input_seq == last
            st = c.stats()
            assert st["stale_inputs"] == 2 and st["inputs"] == 3
            # the frame equals the real game stepped with the newest keys (and no other keys since)
            ref = reference_frames(11, [[0, 0, 0, 0, 0, 0]] * (f.number - 1) + [[0, 0, 0, 0, 0, 1]])
            assert np.array_equal(f.image, ref[f.number])
    finally:
        server.stop()


def test_out_of_order_input_is_ignored(server):
    raw = Raw(server.address)
    try:
        raw.send(type="hello", mode="realtime", fps=30, seed=1)
        sid = raw.recv("welcome")["session"]
        raw.send(type="input", session=sid, seq=5, keys=[1, 0, 0, 0, 0, 0])
        raw.send(type="input", session=sid, seq=4, keys=[0, 1, 0, 0, 0, 0])
        wait_for(lambda: raw.recv("frame")["input_seq"] == 5, what="a frame reflecting seq 5")
        raw.send(type="stats", session=sid)
        assert raw.recv("stats")["stale_inputs"] >= 1
    finally:
        raw.close()


def test_lockstep_is_deterministic_and_matches_the_game(server):
    keys = [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 1]] * 3
    ref = reference_frames(7, keys)
    runs = []
    for _ in range(2):
        with Client(server.address, mode="lockstep") as c:
            c.connect()
            first = c.reset(seed=7)
            assert first.number == 0
            frames = [first] + [c.step(k) for k in keys]
            assert [f.number for f in frames] == list(range(len(keys) + 1))
            assert all(f.latency_ms is not None for f in frames[1:])
            runs.append(frames)
    for a, b, r in zip(*runs, ref):
        assert np.array_equal(a.image, r) and np.array_equal(b.image, r)
    assert not np.array_equal(ref[0], ref[-1])


def test_errors_name_the_field_and_the_server_goes_on(server):
    with Client(server.address, mode="lockstep", seed=1) as c:
        c.connect()
        c.reset(seed=1)
        raw = Raw(server.address)  # a session of its own (another's session is not its to use)
        try:
            raw.send(type="hello", mode="lockstep")
            sid = raw.recv("welcome")["session"]
            raw.send(type="step", session=sid, seq=99, keys=[1, 0])  # wrong key count
            err = raw.recv("error")
            assert (err["code"], err["field"]) == ("field", "keys") and "6 keys" in err["message"]
            raw.send(type="input", session=sid, seq=100, keys=[0] * 6)  # input on a lockstep session
            assert raw.recv("error")["code"] == "mode"
            raw.send(type="step", session="nope", seq=1, keys=[0] * 6)
            err = raw.recv("error")
            assert (err["code"], err["field"], err["session"]) == ("unknown_session", "session", "nope")
            raw.sock.send_multipart([b"two", b"frames"])
            assert raw.recv("error")["code"] == "bad_message"
        finally:
            raw.close()
        assert c.step([1, 0, 0, 0, 0, 0]).number == 1  # the good session is untouched
        assert server.bad_messages == 4


def test_server_full_then_a_vanished_client_expires_and_frees_its_slot():
    server = start(max_sessions=1, session_timeout_s=0.5)
    try:
        gone = Raw(server.address)
        gone.send(type="hello", mode="realtime", fps=30)
        gone.recv("welcome")
        gone.close()  # vanishes without a bye
        with Client(server.address, timeout_s=1.0) as c, pytest.raises(ServerError, match="server_full"):
            c.connect()
        wait_for(lambda: server.stats()["sessions"] == 0, what="the vanished session to expire")
        with Client(server.address) as c:
            c.connect()
            frames_until(c, 3)
    finally:
        server.stop()


def test_bye_frees_the_slot_and_a_client_can_reconnect():
    server = start(max_sessions=1)
    try:
        for _ in range(3):
            with Client(server.address, mode="lockstep") as c:
                c.connect()
                assert c.step([0, 0, 0, 0, 1, 0]).number == 1
            wait_for(lambda: server.stats()["sessions"] == 0, what="bye to close the session")
        assert server.sessions_opened == 3
    finally:
        server.stop()


def test_repeated_hello_with_a_client_id_keeps_one_session(server):
    raw = Raw(server.address)
    try:
        for _ in range(3):
            raw.send(type="hello", mode="lockstep", client_id="abc123" * 3)
        ids = {raw.recv("welcome")["session"] for _ in range(3)}
        assert len(ids) == 1 and server.stats()["sessions"] == 1
    finally:
        raw.close()


def test_a_realtime_client_rides_through_a_server_restart():
    a = start()
    addr = a.address
    c = Client(addr, timeout_s=2.0)
    try:
        c.connect()
        first_session = c.session
        frames_until(c, 3, keys=[1, 0, 0, 0, 0, 0])
        a.stop()
        b = start(bind=addr)
        try:
            deadline = time.monotonic() + 15
            while c.session == first_session and time.monotonic() < deadline:
                c.send_keys([1, 0, 0, 0, 0, 0])
                c.poll_frame(timeout_ms=50)
            assert c.session != first_session, "the client never got a session on the new server"
            frames_until(c, 3, keys=[1, 0, 0, 0, 0, 0])
            assert b.stats()["sessions"] == 1
        finally:
            c.close()
            b.stop()
    finally:
        a.stop()


def test_slow_client_loses_frames_without_stalling_others():
    server = Server(world_factory("game", size=64), max_sessions=2, fps=60.0, send_hwm=2).start()
    try:
        slow = Client(server.address, fps=60.0, name="slow")
        slow.connect()  # ... and never reads again
        with Client(server.address, fps=60.0, name="fast") as fast:
            fast.connect()

            def slow_dropped():
                fast.poll_frame(timeout_ms=20)
                return any(s["name"] == "slow" and s["dropped"] > 0 for s in server.stats()["session_stats"])

            wait_for(slow_dropped, timeout_s=30, what="frames dropped for the client that never reads")
            st = fast.stats()
            assert st["dropped"] == 0 and st["client"]["lost"] == 0 and st["frames"] > 30
        slow.close()
    finally:
        server.stop()


def test_server_recording_is_readable(tmp_path):
    from worldsim.record import read_recording

    server = start(record_dir=tmp_path)
    try:
        with Client(server.address, mode="lockstep", seed=3) as c:
            c.connect()
            c.reset(seed=3)
            frames = [c.step([1, 0, 0, 0, 0, 0]) for _ in range(5)]
        wait_for(lambda: server.stats()["sessions"] == 0, what="the session to close")
    finally:
        server.stop()
    files = sorted(tmp_path.glob("*.wsrec"))
    assert len(files) == 1  # the hello's game never stepped (the client reset at once): no file
    rec = read_recording(files[-1])
    assert rec.header["seed"] == 3 and not rec.truncated
    assert [r.frame_number for r in rec.records] == list(range(6))
    assert np.array_equal(rec.records[-1].frame, frames[-1].image)
    assert rec.records[-1].keys.tolist() == [True, False, False, False, False, False]


def test_non_loopback_bind_needs_keys_or_insecure():
    with pytest.raises(UserError, match="--keys DIR"):
        Server(world_factory("game", size=SIZE), bind="tcp://0.0.0.0:0")
    Server(world_factory("game", size=SIZE), bind="tcp://0.0.0.0:0", insecure=True)  # allowed, not started


def test_curve_allow_list_accepts_a_listed_key_and_rejects_another(tmp_path):
    import shutil

    import zmq.auth

    from worldsim.cli import main

    assert main(["keys", str(tmp_path / "k")]) == 0
    eve = tmp_path / "eve"
    eve.mkdir()
    zmq.auth.create_certificates(eve, "client")  # a valid key pair that is not allow-listed
    shutil.copy(tmp_path / "k" / "server.key", eve / "server.key")
    server = start(keys_dir=tmp_path / "k")
    try:
        with (
            Client(server.address, keys_dir=tmp_path / "eve", timeout_s=1.5) as c,
            pytest.raises(TimeoutError),
        ):
            c.connect()
        with Client(server.address, keys_dir=tmp_path / "k") as c:
            c.connect()
            frames_until(c, 2)
        assert server.sessions_opened == 1
    finally:
        server.stop()


def test_server_recordings_are_private_name_no_session_id_and_verify(tmp_path, capsys):
    """A non-default level on the server: the recording carries level and device, `verify` re-runs it."""
    from worldsim.cli import main

    rec_dir = tmp_path / "rec"
    server = Server(
        world_factory("game", size=SIZE, level=3), max_sessions=2, record_dir=rec_dir, stats_interval_s=0
    ).start()
    try:
        with Client(server.address, mode="lockstep", seed=5) as c:
            session = c.connect()["session"]
            for i in range(40):
                c.step([i % 3 == 0, 0, 0, 0, i % 5 == 0, i % 7 == 0])
        wait_for(lambda: server.stats()["sessions"] == 0, what="the session to close")
    finally:
        server.stop()
    (path,) = rec_dir.glob("*.wsrec")
    assert oct(rec_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert session not in path.name and session.encode() not in path.read_bytes()
    assert session[:8] not in path.name  # not even the prefix logs used to show
    extra = RecordingReader(path).header["extra"]
    assert extra["level"] == "procedural-3-24" and extra["device"] == "cpu"
    capsys.readouterr()
    assert main(["verify", str(path)]) == 0
    assert "identical: 41 frames" in capsys.readouterr().out
