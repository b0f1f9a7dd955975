"""A Python client for `worldsim serve` (docs/protocol.md): real-time play and lockstep agents.

Self-contained on purpose (zmq, msgpack, numpy; Pillow for JPEG): it imports nothing from worldsim,
so it starts fast and shows that the protocol doc is all a client needs. One Client per thread.

    with Client("tcp://127.0.0.1:5555") as c:       # real time: send keys whenever, show the newest frame
        c.connect()
        c.send_keys([1, 0, 0, 0, 0, 0])
        frame = c.poll_frame(timeout_ms=50)

    with Client(addr, mode="lockstep", seed=3) as c: # agents: one frame per step, deterministic
        c.connect(); first = c.reset(seed=3); frame = c.step([0, 0, 0, 0, 1, 0])
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_INBOUND_BYTES = 64 * 1024 * 1024  # a frame of up to ~4k x 4k RGB


@dataclass
class Frame:
    """One frame as the client received it. `latency_ms`: input-to-frame time (client clock) on the
    first frame that reflects a new input, else None."""

    number: int  # 0 right after a reset, +1 per world step
    input_seq: int  # seq of the newest input/step/reset this frame reflects (0: none)
    image: np.ndarray  # [H, W, 3] uint8
    server_time: float  # server wall clock (time.time()) when the frame was made
    latency_ms: float | None


class ServerError(RuntimeError):
    """The server answered with an error message; `code` and `field` are from that message."""

    def __init__(self, msg: dict[str, Any]) -> None:
        super().__init__(f"server error [{msg.get('code')}] {msg.get('message')}")
        self.code = msg.get("code")
        self.field = msg.get("field")
        self.msg = msg


class Client:
    """A session on a worldsim server. Realtime: `send_keys` + `poll_frame`. Lockstep: `step`, `reset`."""

    def __init__(
        self,
        addr: str,
        *,
        mode: str = "realtime",
        fps: float = 30.0,
        seed: int | None = None,
        encoding: str = "raw",
        keys_dir: str | Path | None = None,
        timeout_s: float = 5.0,
        name: str = "python",
        quality: int = 90,
        key_name: str = "client",
        reconnect: bool = True,
    ) -> None:
        if mode not in ("realtime", "lockstep"):
            raise ValueError(f"mode must be 'realtime' or 'lockstep', got {mode!r}")
        if encoding not in ("raw", "jpeg"):
            raise ValueError(f"encoding must be 'raw' or 'jpeg', got {encoding!r}")
        self.addr, self.mode, self.fps, self.seed = addr, mode, float(fps), seed
        self.encoding, self.quality, self.name, self.timeout_s = encoding, quality, name[:64], timeout_s
        self.reconnect = reconnect
        self.client_id = secrets.token_hex(16)  # lets the server recognise a repeated hello
        self.welcome: dict[str, Any] | None = None
        self.session: str | None = None
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=32)
        self._seq = 0
        self._sent_at: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._latency_seq = 0
        self._held: list[bool] | None = None
        self._newest: Frame | None = None
        self._await_seq: int | None = None
        self._awaited: Frame | dict | None = None
        self._replies: dict[str, dict[str, Any]] = {}
        self._last_number: int | None = None
        self._lost_at = 0.0  # when the session was lost (0: it is not)
        self._last_hello = 0.0
        self._last_send = 0.0
        # counters
        self.received = self.lost = self.skipped = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=4096)
        self._arrivals: collections.deque[float] = collections.deque(maxlen=256)

        self._ctx = zmq.Context.instance()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue messages for a server that is not there
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # A session belongs to the connection that opened it: a fixed random routing id keeps it ours
        # across TCP reconnects (hex: a routing id must not start with a zero byte).
        sock.setsockopt(zmq.ROUTING_ID, secrets.token_hex(16).encode())
        if mode == "realtime":
            sock.setsockopt(zmq.RCVHWM, 4)  # old frames are worthless: let the server drop them
            sock.setsockopt(zmq.RCVBUF, 256 * 1024)
        if keys_dir is not None:
            d = Path(keys_dir)
            public, secret = zmq.auth.load_certificate(d / f"{key_name}.key_secret")
            server_public, _ = zmq.auth.load_certificate(d / "server.key")
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
        sock.connect(addr)
        self._sock = sock

    # ------------------------------------------------------------------ public API

    @property
    def key_names(self) -> list[str]:
        return list(self._need_welcome()["key_names"])

    def connect(self) -> dict[str, Any]:
        """Open a session; return the welcome (session, world, height, width, key_names, fps, mode, ...)."""
        deadline = time.monotonic() + self.timeout_s
        self.welcome = self.session = None
        while self.welcome is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no welcome from {self.addr} within {self.timeout_s:g} s: is `worldsim serve` running "
                    "there, and (with CURVE keys) is this client's public key in its authorized/ folder?"
                )
            if time.monotonic() - self._last_hello > 0.5:
                self._hello()
            err = self._pump(50, lambda: self.welcome is not None or self._hello_error is not None)
            if err is not None:
                raise ServerError(err)
        return self.welcome

    def send_keys(self, keys: Sequence[int | bool] | np.ndarray) -> int:
        """Set the held key state (realtime); returns the input's seq. Frames reflect the newest state."""
        self._require("realtime", "send_keys")
        held = self._check_keys(keys)
        self._held = held
        self._maintain()
        seq = self._next_seq()
        if not self._lost_at:  # while reconnecting, the held keys go out with the new welcome
            self._send({"type": "input", "session": self.session, "seq": seq, "keys": held})
        return seq

    def poll_frame(self, timeout_ms: int = 0) -> Frame | None:
        """The newest frame received (older ones are dropped), waiting up to `timeout_ms`; None if none."""
        self._maintain()
        self._pump(timeout_ms, lambda: self._newest is not None)
        frame, self._newest = self._newest, None
        return frame

    def step(self, keys: Sequence[int | bool] | np.ndarray) -> Frame:
        """Lockstep: advance one tick under `keys` and return that frame."""
        self._require("lockstep", "step")
        held = self._check_keys(keys)
        seq = self._next_seq()
        return self._request({"type": "step", "session": self.session, "seq": seq, "keys": held}, seq)

    def reset(self, seed: int | None = None) -> Frame:
        """Start a new game in this session (a new seed, or a server-chosen one) and return frame 0."""
        self._need_welcome()
        seq = self._next_seq()
        msg: dict[str, Any] = {"type": "reset", "session": self.session, "seq": seq}
        if seed is not None:
            msg["seed"] = int(seed)
        frame = self._request(msg, seq)
        self._last_number = 0
        return frame

    def stats(self) -> dict[str, Any]:
        """The server's stats for this session plus the client's own under "client"."""
        self._need_welcome()
        self._replies.pop("stats", None)
        self._send({"type": "stats", "session": self.session})
        self._pump(int(self.timeout_s * 1000), lambda: "stats" in self._replies)
        server = self._replies.pop("stats", None)
        if server is None:
            raise TimeoutError(f"no stats reply from {self.addr} within {self.timeout_s:g} s")
        return {**server, "client": self.client_stats()}

    def client_stats(self) -> dict[str, Any]:
        """What this end measured: frames received, lost (never arrived), skipped, fps, latency."""
        lat = np.asarray(self._latencies, dtype=np.float64)
        now = time.monotonic()
        recent = [t for t in self._arrivals if now - t <= 2.0]
        fps = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) > 1 and recent[-1] > recent[0]
            else 0.0
        )
        return {
            "frames": self.received,
            "lost": self.lost,
            "skipped": self.skipped,
            "fps": round(fps, 2),
            "latency_ms": {
                "n": int(lat.size),
                "p50": float(np.percentile(lat, 50)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
                "mean": float(lat.mean()) if lat.size else None,
            },
        }

    def ping(self) -> float:
        """Round trip to the server in ms."""
        self._replies.pop("pong", None)
        t = time.monotonic()
        self._send({"type": "ping", "session": self.session, "t": t})
        self._pump(int(self.timeout_s * 1000), lambda: "pong" in self._replies)
        if self._replies.pop("pong", None) is None:
            raise TimeoutError(f"no pong from {self.addr} within {self.timeout_s:g} s")
        return (time.monotonic() - t) * 1000

    def close(self) -> None:
        """Say bye (best effort) and close the socket. Safe to call twice."""
        if self._sock.closed:
            return
        if self.session is not None:
            self._send({"type": "bye", "session": self.session})
        self._sock.close(linger=200)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    _hello_error: dict[str, Any] | None = None

    def _hello(self) -> None:
        msg: dict[str, Any] = {
            "type": "hello",
            "mode": self.mode,
            "fps": self.fps,
            "encoding": self.encoding,
            "quality": self.quality,
            "name": self.name,
            "client_id": self.client_id,
        }
        if self.seed is not None:
            msg["seed"] = int(self.seed)
        self._hello_error = None
        self._last_hello = time.monotonic()
        self._send(msg)

    def _send(self, msg: dict[str, Any], wait_s: float = 0.0) -> bool:
        """Send now; with no connection (IMMEDIATE) wait up to `wait_s` for one, else drop it."""
        data = msgpack.packb({"v": PROTOCOL_VERSION, **msg})
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._sock.send(data, zmq.NOBLOCK)
                break
            except zmq.Again:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._sock.poll(max(1, int(left * 1000)), zmq.POLLOUT)
        self._last_send = time.monotonic()
        return True

    def _next_seq(self) -> int:
        self._seq += 1
        self._sent_at[self._seq] = time.monotonic()
        while len(self._sent_at) > 1024:
            self._sent_at.popitem(last=False)
        return self._seq

    def _need_welcome(self) -> dict[str, Any]:
        if self.welcome is None:
            raise RuntimeError("not connected: call connect() first")
        return self.welcome

    def _require(self, mode: str, what: str) -> None:
        self._need_welcome()
        if self.mode != mode:
            raise RuntimeError(f"{what}() is for {mode} clients; this client is {self.mode}")

    def _check_keys(self, keys: Sequence[int | bool] | np.ndarray) -> list[bool]:
        k = [bool(x) for x in np.asarray(keys).reshape(-1).tolist()]
        names = self._need_welcome()["key_names"]
        if len(k) != len(names):
            raise ValueError(f"keys has {len(k)} entries; this world has {len(names)}: {', '.join(names)}")
        return k

    def _maintain(self) -> None:
        """Heartbeat when idle; after a server restart or expiry, say hello again (realtime)."""
        now = time.monotonic()
        if self._lost_at:
            if now - self._last_hello > 0.5:
                self._hello()
            return
        if self.welcome is not None and now - self._last_send > self.welcome.get("heartbeat_s", 2.0):
            self._send({"type": "ping", "session": self.session})

    def _request(self, msg: dict[str, Any], seq: int) -> Frame:
        self._await_seq, self._awaited = seq, None
        deadline = time.monotonic() + self.timeout_s
        self._send(msg, wait_s=self.timeout_s)
        self._pump(max(0, int((deadline - time.monotonic()) * 1000)), lambda: self._awaited is not None)
        got, self._await_seq, self._awaited = self._awaited, None, None
        if got is None:
            raise TimeoutError(
                f"no answer to {msg['type']} seq {seq} from {self.addr} within {self.timeout_s:g} s"
            )
        if isinstance(got, dict):
            raise ServerError(got)
        return got

    def _pump(self, timeout_ms: int, done: Callable[[], bool]) -> Any:
        """Handle incoming messages until `done()` (then drain what is queued) or the timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            while True:  # drain without blocking
                try:
                    data = self._sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._dispatch(data)
            if self._hello_error is not None and self.welcome is None:
                return self._hello_error
            left = deadline - time.monotonic()
            if done() or left <= 0:
                return None
            self._sock.poll(max(1, int(left * 1000)), zmq.POLLIN)

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as e:
            log.warning("undecodable message from the server: %s", e)
            return
        if not isinstance(msg, dict) or msg.get("v") != PROTOCOL_VERSION:
            log.warning("message of another protocol version from the server: %r", str(msg)[:80])
            return
        kind = msg.get("type")
        if kind == "frame":
            self._on_frame(msg)
        elif kind == "welcome":
            self._on_welcome(msg)
        elif kind == "error":
            self._on_error(msg)
        elif kind == "bye":
            if msg.get("session") == self.session and self.session is not None:
                log.info("server ended session %s: %s", self.session[:8], msg.get("reason"))
                self._session_lost()
        elif kind in ("pong", "stats"):
            self._replies[kind] = msg

    def _on_welcome(self, msg: dict[str, Any]) -> None:
        if self.welcome is not None and not self._lost_at:
            return  # a duplicate answer to a repeated hello
        reconnected = self._lost_at > 0
        self.welcome, self.session, self._lost_at = msg, msg["session"], 0.0
        self._last_number = None
        if reconnected:
            log.info("reconnected to %s as session %s", self.addr, self.session[:8])
            if self._held is not None and self.mode == "realtime":
                self._send(
                    {"type": "input", "session": self.session, "seq": self._next_seq(), "keys": self._held}
                )

    def _on_error(self, msg: dict[str, Any]) -> None:
        self.errors.append(msg)
        if msg.get("ref_type") == "hello" or (msg.get("code") == "server_full" and self.welcome is None):
            self._hello_error = msg
            return
        lost = msg.get("code") in ("unknown_session", "not_owner")
        if lost and msg.get("session") == self.session and self.session:
            self._session_lost()
        if (
            self._await_seq is not None
            and msg.get("seq") == self._await_seq
            or self._await_seq is not None
            and (lost or msg.get("code") == "internal")
        ):
            self._awaited = msg
        else:
            log.warning("server error [%s] %s", msg.get("code"), msg.get("message"))

    def _session_lost(self) -> None:
        if self.mode == "realtime" and self.reconnect:
            self._lost_at = time.monotonic()
        else:
            self.session = None if self.mode == "realtime" else self.session

    def _on_frame(self, msg: dict[str, Any]) -> None:
        if msg.get("session") != self.session:
            return  # from a session this client no longer has
        now = time.monotonic()
        h, w, data = msg["height"], msg["width"], msg["data"]
        if msg["encoding"] == "jpeg":
            import io

            from PIL import Image

            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        else:
            if len(data) != h * w * 3:
                log.warning("frame of %d bytes for %dx%d RGB; dropped", len(data), h, w)
                return
            image = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        seq, number = msg["input_seq"], msg["number"]
        latency = None
        if seq > self._latency_seq and seq in self._sent_at:
            latency = (now - self._sent_at[seq]) * 1000
            self._latencies.append(latency)
            self._latency_seq = seq
        if self._last_number is not None and number > self._last_number + 1:
            self.lost += number - self._last_number - 1
        self._last_number = number
        self.received += 1
        self._arrivals.append(now)
        frame = Frame(number, seq, image, msg["server_time"], latency)
        if self._await_seq is not None and seq == self._await_seq and self._awaited is None:
            self._awaited, self._newest = frame, None  # handed to the waiter
            return
        if self._newest is not None:
            self.skipped += 1
        self._newest = frame
