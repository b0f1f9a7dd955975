"""A session belongs to the connection (and CURVE key) that opened it: real sockets on loopback."""

import time

import msgpack
import pytest
import zmq
from worldsim.controllers.client import Client, ServerError

from worldsim.cli import main
from worldsim.serve import Server, world_factory

SIZE = 16


class Raw:
    """A bare DEALER that speaks msgpack and may know someone else's ids."""

    def __init__(self, addr, keys=None, key_name="client", routing_id=None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if keys is not None:
            public, secret = zmq.auth.load_certificate(keys / f"{key_name}.key_secret")
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = zmq.auth.load_certificate(keys / "server.key")[0]
        self.sock.connect(addr)

    def send(self, **msg):
        self.sock.send(msgpack.packb({"v": 1, **msg}))

    def received(self, window_s):
        """Every message that arrives within `window_s` seconds."""
        out, deadline = [], time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(max(1, int(left * 1000))):
                out.append(msgpack.unpackb(self.sock.recv()))
        return out

    def recv(self, want_type, timeout_s=5.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                msg = msgpack.unpackb(self.sock.recv())
                if msg["type"] == want_type:
                    return msg
        raise AssertionError(f"no {want_type} within {timeout_s} s")

    def close(self):
        self.sock.close(0)


def start(**kw) -> Server:
    kw.setdefault("max_sessions", 8)
    kw.setdefault("stats_interval_s", 0)
    return Server(world_factory("game", size=SIZE), **kw).start()


def test_a_leaked_session_id_or_client_id_gives_a_stranger_nothing():
    server = start(fps=30.0)
    owner = Client(server.address, fps=30.0, name="owner")
    stranger = Raw(server.address)
    try:
        sid = owner.connect()["session"]
        keys = [True, False, False, False, False, False]
        attempts = [
            dict(type="ping", session=sid),
            dict(type="stats", session=sid),
            dict(type="input", session=sid, seq=10**6, keys=keys),
            dict(type="reset", session=sid, seq=10**6 + 1, seed=1),
            dict(type="bye", session=sid),
        ]
        for m in attempts:
            stranger.send(**m)
        # Read-only or not, none of them moves the owner's frame stream to the stranger.
        got = stranger.received(1.0)
        assert [m["type"] for m in got] == ["error"] * len(attempts), [m["type"] for m in got]
        assert {m["code"] for m in got} == {"not_owner"}
        assert [m["ref_type"] for m in got] == [m["type"] for m in attempts]
        for _ in range(5):  # the owner still streams, with its own keys, and its session is alive
            assert owner.poll_frame(timeout_ms=1000) is not None
        st = owner.stats()
        assert st["session"] == sid and st["foreign"] == len(attempts) and st["errors"] == 0
        assert st["inputs"] == 0 and st["server"]["foreign_messages"] == len(attempts)
        # A hello with the owner's client_id opens the stranger's own session, not the owner's.
        stranger.send(type="hello", mode="lockstep", client_id=owner.client_id)
        assert stranger.recv("welcome")["session"] != sid
        assert server.stats()["sessions"] == 2 and owner.poll_frame(timeout_ms=1000) is not None
    finally:
        stranger.close()
        owner.close()
        server.stop()


def test_one_connection_holds_at_most_max_per_client_sessions():
    server = start(max_per_client=3)
    greedy = Raw(server.address)
    try:
        for _ in range(4):
            greedy.send(type="hello", mode="lockstep")
        got = [m for m in greedy.received(1.5) if m["type"] in ("welcome", "error")]
        assert [m["type"] for m in got] == ["welcome"] * 3 + ["error"]
        assert got[-1]["code"] == "client_limit" and "--max-per-client" in got[-1]["message"]
        with Client(server.address, mode="lockstep") as other:  # slots remain for everyone else
            other.connect()
            assert other.step([0, 0, 0, 0, 1, 0]).number == 1
        greedy.send(type="bye", session=got[0]["session"])  # a freed place can be taken again
        greedy.send(type="hello", mode="lockstep")
        assert greedy.recv("welcome")["session"] not in {m.get("session") for m in got}
    finally:
        greedy.close()
        server.stop()


@pytest.fixture
def keys(tmp_path):
    """A key folder with two allow-listed clients: `client` (alice) and `bob`."""
    d = tmp_path / "k"
    assert main(["keys", str(d)]) == 0
    assert main(["keys", str(d), "--client", "bob"]) == 0
    return d


def test_under_curve_a_session_is_bound_to_its_key_and_the_cap_counts_keys(keys):
    server = start(keys_dir=keys, max_per_client=1)
    alice = Client(server.address, mode="lockstep", keys_dir=keys)
    bob = Raw(server.address, keys, "bob")
    alice_again = Raw(server.address, keys, "client")  # the same key on a second connection
    try:
        sid = alice.connect()["session"]
        bob.send(type="step", session=sid, seq=1, keys=[True] + [False] * 5)
        err = bob.recv("error")
        assert err["code"] == "not_owner"
        alice_again.send(type="hello", mode="lockstep")
        assert alice_again.recv("error")["code"] == "client_limit"  # alice's key holds its one session
        bob.send(type="hello", mode="lockstep")  # another key has its own quota
        assert bob.recv("welcome")["session"] != sid
        assert alice.step([1, 0, 0, 0, 0, 0]).number == 1
        assert alice.stats()["foreign"] == 1
    finally:
        bob.close()
        alice_again.close()
        alice.close()
        server.stop()


def test_under_curve_the_routing_id_alone_is_not_enough(keys):
    """Bob knows alice's routing id and session id and connects as her once she is gone: his key differs."""
    server = start(keys_dir=keys, session_timeout_s=30)
    alice = Raw(server.address, keys, "client", routing_id=b"alice-0123456789")
    alice.send(type="hello", mode="lockstep")
    sid = alice.recv("welcome")["session"]
    alice.close()
    try:
        reply = None
        for seq in range(1, 50):  # a fresh connection until the server has let go of alice's
            bob = Raw(server.address, keys, "bob", routing_id=b"alice-0123456789")
            bob.send(type="step", session=sid, seq=seq, keys=[True] + [False] * 5)
            got = bob.received(0.2)
            bob.close()
            if got:
                reply = got[0]
                break
        assert reply is not None and reply["type"] == "error" and reply["code"] == "not_owner", reply
        assert server.stats()["foreign_messages"] == 1
    finally:
        server.stop()


def test_the_client_treats_not_owner_as_a_lost_session():
    server = start()
    try:
        with Client(server.address, mode="lockstep") as c:
            c.connect()
            with Client(server.address, mode="lockstep") as other:
                c.session = other.connect()["session"]
                with pytest.raises(ServerError, match="not_owner"):
                    c.step([0, 0, 0, 0, 0, 1])
    finally:
        server.stop()
