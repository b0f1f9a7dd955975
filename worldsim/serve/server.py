"""The ZeroMQ server: one ROUTER socket, one loop, one batched World.step per engine per tick (docs/design.md §9).

Each loop pass: wait until the next real-time tick is due (or a message arrives), drain every
pending message without blocking (newest key state wins per session), then step all sessions due
now - real-time ones on their fps grid and lockstep ones with a queued step - in one `World.step` per
engine (worldsim.serve.engines: one World per GPU, sessions on the least-loaded one). The message
handlers live in worldsim.serve.handlers.
Sends never block: a client whose queue is full loses that frame (counted as dropped); control
messages wait for room instead (worldsim.serve.outbox).
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq

from worldsim.errors import UserError
from worldsim.serve import protocol as P
from worldsim.serve.engines import EnginePool
from worldsim.serve.handlers import SERVER_VERSION, MessageHandlers
from worldsim.serve.outbox import Outbox
from worldsim.serve.security import CurveServer, check_bind
from worldsim.serve.session import Session, StepTimes
from worldsim.world import World
from worldsim.worlds import world_factory as named_world_factory

log = logging.getLogger(__name__)

__all__ = ["SERVER_VERSION", "Server"]


class Server(MessageHandlers):
    """Serve batched Worlds to clients; a session owns one game (slot) of one engine's batch.

    `world_factory` builds one engine's World from its batch size: a factory, a name ("game",
    "neural"), or a list of factories for several engines (one per GPU). `max_sessions` is per engine:
    the server takes `len(factories) * max_sessions` sessions and places each on the least-loaded engine.
    """

    def __init__(
        self,
        world_factory: Callable[[int], World] | str | Sequence[Callable[[int], World]] = "game",
        *,
        bind: str = "tcp://127.0.0.1:0",
        max_sessions: int = 16,
        fps: float = 30.0,
        record_dir: str | Path | None = None,
        keys_dir: str | Path | None = None,
        insecure: bool = False,
        session_timeout_s: float = 10.0,
        send_hwm: int = 8,
        stats_interval_s: float = 10.0,
        max_drain: int = 1000,
        torch_threads: int | None = None,
        max_per_client: int = 4,
    ) -> None:
        if max_sessions < 1:
            raise UserError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_per_client < 1:
            raise UserError(f"max_per_client must be >= 1, got {max_per_client}")
        if not 1.0 <= fps <= P.MAX_FPS:
            raise UserError(f"fps must be in [1, {P.MAX_FPS:g}], got {fps}")
        if session_timeout_s <= 0:
            raise UserError(f"session_timeout_s must be > 0, got {session_timeout_s}")
        if torch_threads is not None and torch_threads < 1:
            raise UserError(f"torch_threads must be >= 1 or None (torch's default), got {torch_threads}")
        if send_hwm < 1:
            raise UserError(f"send_hwm must be >= 1, got {send_hwm}")
        check_bind(bind, keys_dir, insecure)
        if isinstance(world_factory, str):
            factories = [named_world_factory(world_factory)]
        elif callable(world_factory):
            factories = [world_factory]
        else:
            factories = list(world_factory)
        self.pool = EnginePool(factories, max_sessions)
        self.bind = bind
        self.max_sessions = self.pool.capacity  # all engines together
        self.fps = float(fps)
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.keys_dir = keys_dir
        self.session_timeout_s = session_timeout_s
        self.send_hwm = send_hwm
        self.stats_interval_s = stats_interval_s
        self.max_drain = max_drain
        self.torch_threads = torch_threads
        self.max_per_client = max_per_client

        self._address: str | None = None
        self._outbox: Outbox | None = None  # made when the socket is bound
        self._sessions: dict[str, Session] = {}
        self._by_client_id: dict[tuple[bytes, str | None, str], str] = {}
        self._per_client: collections.Counter = collections.Counter()  # sessions per connection/key
        self._user: str | None = None
        self._closed: collections.deque[dict[str, Any]] = collections.deque(maxlen=256)  # their last stats
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._rng = random.Random()
        self._t0 = time.monotonic()
        # Server-wide counters (read from other threads: plain ints, written only by the loop).
        self.messages = 0
        self.bad_messages = 0
        self.errors_sent = 0
        self.sessions_opened = 0
        self.foreign_messages = 0  # messages naming a session that is not the sender's (refused)
        self._steps = StepTimes()  # batched World.step times and sessions per step

    # ------------------------------------------------------------------ lifecycle

    @property
    def world(self) -> World | None:
        """Engine 0's World (every engine serves the same kind), None until the server starts."""
        return self.pool.engines[0].world if self.pool.engines else None

    @property
    def address(self) -> str:
        """The bound endpoint, with the real port when bound to port 0."""
        if self._address is None:
            raise RuntimeError("the server is not bound yet; call start() or serve_forever() first")
        return self._address

    def start(self, timeout_s: float = 120.0) -> Server:
        """Run the server on a background thread; return once it is bound (raise if it failed)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self._run_captured, name="worldsim-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"server did not start within {timeout_s} s")
        if self._failure is not None:
            raise self._failure
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Say bye to every session, close the socket and the world. Safe to call twice."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def __enter__(self) -> Server:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_captured(self) -> None:
        try:
            self.serve_forever()
        except BaseException as e:  # noqa: BLE001 - handed to start() or logged; the thread must not die silently
            self._failure = e
            if self._ready.is_set():
                log.exception("server loop failed")
            self._ready.set()

    def serve_forever(self) -> None:
        """Bind and serve until stop() (or Ctrl-C when run on the main thread)."""
        threads_before = torch.get_num_threads()
        if self.torch_threads is not None:
            # Process-wide while serving. On a CPU shared with clients, one intra-op thread avoids
            # OpenMP spin-waits fighting them for cores (measured: game step p50 17 ms -> 3 ms, 2 cores).
            torch.set_num_threads(self.torch_threads)
        try:
            self._serve()
        finally:
            torch.set_num_threads(threads_before)

    def _serve(self) -> None:
        self.pool.start()
        self._ctx = zmq.Context()
        self._curve = None
        try:
            if self.keys_dir is not None:
                self._curve = CurveServer(self._ctx, self.keys_dir)
        except BaseException:
            self._ctx.term()
            self.pool.close()
            raise
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable/full peers raise instead of vanishing silently
        sock.setsockopt(zmq.SNDHWM, self.send_hwm)
        # Frames waiting in kernel buffers are latency too: keep them to a few frames' worth.
        sock.setsockopt(zmq.SNDBUF, 256 * 1024)
        sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.LINGER, 200)
        if self._curve is not None:
            self._curve.apply(sock)
        try:
            sock.bind(self.bind)
        except zmq.ZMQError as e:
            sock.close(0)
            self._teardown_context()
            self.pool.close()
            raise UserError(f"cannot bind {self.bind!r}: {e}; pick another --bind address or port") from None
        self._sock = sock
        # A peer that reads nothing for three session timeouts is not coming back for its messages.
        self._outbox = Outbox(sock, max_age_s=3 * self.session_timeout_s)
        self._address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._t0 = time.monotonic()
        w = self.world
        log.info(
            "serving %s %dx%d on %s (max %d sessions on %d engine(s), %g fps%s)",
            w.name, w.height, w.width, self._address, self.max_sessions, len(self.pool.engines), self.fps,
            ", CURVE" if self._curve else "",
        )  # fmt: skip
        self._ready.set()
        try:
            self._loop()
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for s in list(self._sessions.values()):
            self._close_session(s, "shutdown")
        self._outbox.flush()
        self._sock.close(linger=200)
        self._teardown_context()
        self.pool.close()
        log.info("server on %s stopped", self._address)

    def _teardown_context(self) -> None:
        if self._curve is not None:
            self._curve.stop()
        self._ctx.term()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        next_housekeeping = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            wait = min(self._next_due(now) - now, 0.1)
            if poller.poll(max(0, math.ceil(wait * 1000))):
                self._drain()
            self._outbox.flush()  # waiting control messages go before any new frame
            now = time.monotonic()
            self._tick(now)
            if now >= next_housekeeping:
                self._housekeeping(now)
                next_housekeeping = now + 0.25

    def _next_due(self, now: float) -> float:
        due = math.inf
        for s in self._sessions.values():
            if s.mode == "lockstep":
                if s.pending_steps:
                    return now
            else:
                due = min(due, self._t0 + s.next_tick / s.fps)
        return due

    def _drain(self) -> None:
        """Handle every message already queued, without blocking (bounded so a flood cannot starve ticks)."""
        for _ in range(self.max_drain):
            try:
                if self._curve is None:
                    parts = self._sock.recv_multipart(zmq.NOBLOCK)
                    self._user = None
                else:  # zmq frames, for the sender's authenticated key (ZAP's User-Id)
                    frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    self._user = frames[-1].get("User-Id")
                    parts = [f.bytes for f in frames]
            except zmq.Again:
                return
            self.messages += 1
            if len(parts) != 2:
                self._reject(parts[0], P.ProtocolError(P.BAD_MESSAGE, "a message must be exactly one frame"))
                continue
            self._handle(parts[0], parts[1], time.monotonic())

    def _handle(self, identity: bytes, data: bytes, now: float) -> None:
        msg: dict[str, Any] | None = None
        try:
            msg = P.decode(data)
            getattr(self, "_on_" + msg["type"])(identity, msg, now)
        except P.ProtocolError as e:
            self._reject(identity, e, msg)
        except Exception:  # noqa: BLE001 - a bug in handling one message must not stop the server
            log.exception("failed to handle a %s message", msg["type"] if msg else "?")
            self._reject(identity, P.ProtocolError(P.INTERNAL, "the server failed on this message"), msg)

    def _reject(self, identity: bytes, e: P.ProtocolError, msg: dict[str, Any] | None = None) -> None:
        """Count a bad message and answer with an error naming the field (dropped if the peer is full)."""
        self.bad_messages += 1
        extra: dict[str, Any] = {}
        if msg is not None:
            extra["ref_type"] = msg["type"]
            if "seq" in msg:
                extra["seq"] = msg["seq"]
            sid = msg.get("session")
            if isinstance(sid, str):
                extra["session"] = sid
                s = self._sessions.get(sid)
                if s is not None and s.owner == (identity, self._user):
                    s.stats.errors += 1
        log.debug("bad message from %s: %s", identity.hex(), e)
        if self._send(identity, P.error(e.code, str(e), field=e.field, **extra)):
            self.errors_sent += 1

    def _send(self, identity: bytes, payload: bytes) -> bool:
        """A control message: sent now, or as soon as the peer has room (before its next frame)."""
        return self._outbox.control(identity, payload)

    # ------------------------------------------------------------------ frames

    def _reset(self, s: Session, seed: int, *, seq: int, now: float) -> None:
        assert self.world is not None
        s.seed, s.frame_number, s.input_seq, s.input_time = seed, 0, seq, None
        s.keys = np.zeros(self.world.num_keys, dtype=bool)
        s.pending_steps.clear()
        engine, game = self.pool.locate(s.slot)
        try:
            frame = engine.reset(seed, game)
        except Exception:  # noqa: BLE001 - a world failure ends this session, never the server
            log.exception("world.reset failed for session %s", s.label)
            self._fail_session(s)
            return
        if s.recorder is not None:
            s.recorder.new_game(seed, frame, s.keys)
        self._send_frame(s, frame, 0.0, now, record=False)

    def _tick(self, now: float) -> None:
        batch: list[tuple[Session, np.ndarray, int, float | None]] = []  # session, keys, seq, input time
        for s in self._sessions.values():
            if s.mode == "realtime":
                if now >= self._t0 + s.next_tick / s.fps:
                    k = math.floor((now - self._t0) * s.fps) + 1
                    s.stats.late_ticks += max(0, k - s.next_tick - 1)
                    s.next_tick = k
                    batch.append((s, s.keys, s.input_seq, s.input_time))
            elif s.pending_steps:
                seq, keys, t = s.pending_steps.popleft()
                batch.append((s, keys, seq, t))
        if not batch:
            return
        keys = np.stack([b[1] for b in batch])  # [B, K] bool
        t = time.perf_counter()
        results = self.pool.step([b[0].slot for b in batch], keys)  # one World.step per engine, in parallel
        self._steps.add((time.perf_counter() - t) * 1000, len(batch))
        for pos, frames, step_ms in results:
            if isinstance(frames, BaseException):  # that engine failed: its sessions end, never the server
                for i in pos:
                    self._fail_session(batch[i][0])
                continue
            for i, img in zip(pos, frames):
                s, k, seq, t_in = batch[i]
                s.keys, s.input_seq, s.input_time = k, seq, t_in
                s.frame_number += 1
                self._send_frame(s, img, step_ms, time.monotonic())

    def _send_frame(
        self, s: Session, img: np.ndarray, step_ms: float, now: float, *, record: bool = True
    ) -> None:
        latency = None
        if s.input_time is not None:  # the first frame that reflects this input
            latency = (time.monotonic() - s.input_time) * 1000
            s.stats.latency(latency)
            s.input_time = None
        msg = {
            "type": "frame",
            "session": s.id,
            "number": s.frame_number,
            "input_seq": s.input_seq,
            "keys": s.keys.tolist(),
            "server_time": time.time(),
            "step_ms": round(step_ms, 3),
            "input_age_ms": None if latency is None else round(latency, 3),
            "encoding": s.encoding,
            "height": int(img.shape[0]),
            "width": int(img.shape[1]),
            "data": P.encode_image(img, s.encoding, s.quality),
        }
        s.stats.frame_sent(now, self._outbox.frame(s.identity, P.encode(msg)))
        if record and s.recorder is not None:
            s.recorder.frame(s.frame_number, s.keys, img, latency)

    # ------------------------------------------------------------------ sessions

    def _close_session(self, s: Session, reason: str) -> None:
        if self._sessions.pop(s.id, None) is None:
            return
        if s.client_id is not None:
            self._by_client_id.pop((*s.owner, s.client_id), None)
        self._per_client[s.quota_key] -= 1
        if self._per_client[s.quota_key] <= 0:
            del self._per_client[s.quota_key]
        self.pool.release(s.slot)
        if s.recorder is not None:
            s.recorder.close()
        self._send(s.identity, P.encode({"type": "bye", "session": s.id, "reason": reason}))
        self._closed.append({**s.describe(), "reason": reason})
        log.info("session %s closed (%s): %s", s.label, reason, s.stats.line())

    def _fail_session(self, s: Session) -> None:
        self._send(s.identity, P.error(P.INTERNAL, "the world failed; this session is closed", session=s.id))
        self._close_session(s, "error")

    def _housekeeping(self, now: float) -> None:
        for s in list(self._sessions.values()):
            if now - s.last_seen > self.session_timeout_s:
                self._close_session(s, f"expired: no message for {self.session_timeout_s:g} s")
        if self.stats_interval_s and now - getattr(self, "_last_log", 0.0) >= self.stats_interval_s:
            self._last_log = now
            for s in self._sessions.values():
                log.info("session %s: %s", s.label, s.stats.line())

    def _describe(self, s: Session) -> dict[str, Any]:
        return {**s.describe(), "engine": s.slot // self.pool.per_engine}

    def _server_counters(self) -> dict[str, Any]:
        return {
            "sessions": len(self._sessions),
            "max_sessions": self.max_sessions,
            "messages": self.messages,
            "bad_messages": self.bad_messages,
            "errors_sent": self.errors_sent,
            "sessions_opened": self.sessions_opened,
            "foreign_messages": self.foreign_messages,
            "control_delayed": self._outbox.control_delayed if self._outbox else 0,
            "control_dropped": self._outbox.control_dropped if self._outbox else 0,
            "engines": [e.describe() for e in self.pool.engines],
            "world_step_ms": self._steps.summary(),
        }

    def stats(self) -> dict[str, Any]:
        """Server counters, every live session's stats, and the final stats of the last 256 closed ones
        (safe to call from another thread)."""
        sessions = list(self._sessions.values())  # one C-level copy under the GIL
        return {
            **self._server_counters(),
            "session_stats": [self._describe(s) for s in sessions],
            "closed_sessions": list(self._closed),
        }
