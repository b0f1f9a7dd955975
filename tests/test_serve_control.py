"""Control messages are never dropped behind frames: a client that stops reading still gets its
`stats` reply and its `bye` once it reads again (real sockets on loopback)."""

import msgpack
import zmq
from waiting import wait_for

from worldsim.serve import Server, world_factory


def test_a_slow_clients_stats_reply_and_expiry_bye_wait_for_room_while_frames_drop():
    server = Server(
        world_factory("game", size=64),
        max_sessions=2,
        fps=60.0,
        send_hwm=2,
        session_timeout_s=1.5,
        stats_interval_s=0,
    ).start()
    slow = zmq.Context.instance().socket(zmq.DEALER)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.RCVHWM, 1)
    slow.setsockopt(zmq.RCVBUF, 4096)  # a few frames fill it: 64x64 raw frames are 12 KiB each
    slow.connect(server.address)
    try:
        slow.send(msgpack.packb({"v": 1, "type": "hello", "mode": "realtime", "fps": 60.0, "name": "slow"}))

        def dropped():
            return sum(s["dropped"] for s in server.stats()["session_stats"] if s["name"] == "slow")

        wait_for(lambda: dropped() > 0, timeout_s=30, what="the slow client's queue to fill")
        # Its queue is full: frames are being dropped. Ask for stats, then fall silent until expiry.
        sid = server.stats()["session_stats"][0]["session"]
        dropped_before = dropped()
        slow.send(msgpack.packb({"v": 1, "type": "stats", "session": sid}))
        wait_for(lambda: server.stats()["sessions"] == 0, timeout_s=30, what="the session to expire")
        assert server.stats()["closed_sessions"][-1]["dropped"] > dropped_before  # frames dropped meanwhile
        got = []
        while slow.poll(1000):  # now it reads: everything that waited arrives, in order
            got.append(msgpack.unpackb(slow.recv()))
        kinds = [m["type"] for m in got if m["type"] != "frame"]
        assert kinds == ["welcome", "stats", "bye"], kinds
        assert got[-1]["type"] == "bye" and got[-1]["reason"].startswith("expired")
        counters = server.stats()
        assert counters["control_delayed"] >= 2 and counters["control_dropped"] == 0
    finally:
        slow.close()
        server.stop()
