"""The server's message handlers: one `_on_<type>` per client message (protocol: docs/protocol.md).

A mixin of `Server` (worldsim.serve.server): the handlers read and change the server's sessions and
engines; the loop, ticks, frames and sockets stay in the server.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.serve import protocol as P
from worldsim.serve.engines import EnginePool
from worldsim.serve.recording import SessionRecorder
from worldsim.serve.session import MAX_PENDING_STEPS, Session, quota_key

log = logging.getLogger("worldsim.serve.server")  # one logger for the server's lines

SERVER_VERSION = "worldsim-serve/1"


class MessageHandlers:
    """`_on_hello`, `_on_input`, `_on_step`, `_on_reset`, `_on_stats`, `_on_ping`, `_on_bye` of `Server`."""

    # What the handlers use of the Server (declared here for readers and type checkers).
    pool: EnginePool
    max_sessions: int
    fps: float
    record_dir: Path | None
    session_timeout_s: float
    sessions_opened: int
    max_per_client: int
    foreign_messages: int
    _sessions: dict[str, Session]
    _by_client_id: dict[tuple[bytes, str | None, str], str]  # (identity, user, client_id) -> session
    _per_client: collections.Counter
    _user: str | None  # the CURVE User-Id of the message being handled (None without CURVE)
    _t0: float
    _rng: random.Random

    def _session(self, identity: bytes, msg: dict[str, Any], now: float) -> Session:
        """The session the message names, if it is the sender's: a session belongs to the connection
        (and CURVE key) that opened it, never to whoever quotes its id (docs/protocol.md, Ownership)."""
        s = self._sessions.get(msg["session"])
        if s is None:
            raise P.ProtocolError(
                P.UNKNOWN_SESSION,
                "no live session with that id (it expired, was closed, or the server restarted); send hello",
                "session",
            )
        if s.owner != (identity, self._user):
            self.foreign_messages += 1
            s.stats.foreign += 1
            # The first one is news for the operator; a flood of them must not flood the log.
            log.log(
                logging.WARNING if s.stats.foreign == 1 else logging.DEBUG,
                "session %s: a %s message from another connection refused (%d so far)",
                s.label,
                msg["type"],
                s.stats.foreign,
            )
            raise P.ProtocolError(
                P.NOT_OWNER,
                "that session belongs to another connection; open your own with hello (a client keeps "
                "its session across reconnects by setting a fixed ZMQ_ROUTING_ID)",
                "session",
            )
        s.last_seen = now
        return s

    def _keys(self, keys: list[bool]) -> np.ndarray:
        assert self.world is not None
        if len(keys) != self.world.num_keys:
            raise P.ProtocolError(
                P.BAD_FIELD,
                f"field 'keys' has {len(keys)} entries; this world has {self.world.num_keys} keys: "
                + ", ".join(self.world.key_names),
                "keys",
            )
        return np.asarray(keys, dtype=bool)

    def _on_hello(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        cid = msg.get("client_id")
        known = (identity, self._user, cid)
        if cid is not None and known in self._by_client_id:  # a repeated hello: same session again
            s = self._sessions[self._by_client_id[known]]
            s.last_seen = now
            self._send(identity, self._welcome(s))
            return
        quota = quota_key(identity, self._user)
        if self._per_client[quota] >= self.max_per_client:
            raise P.ProtocolError(
                P.CLIENT_LIMIT,
                f"this {'key' if self._user else 'connection'} already holds {self.max_per_client} "
                "sessions (the server's --max-per-client); close one with bye",
            )
        slot = self.pool.place()  # the least-loaded engine's first free game
        if slot is None:
            raise P.ProtocolError(
                P.SERVER_FULL, f"all {self.max_sessions} sessions are taken; try again later"
            )
        assert self.world is not None
        mode = msg["mode"]
        seed = msg.get("seed")
        if seed is None:
            seed = self._rng.randrange(2**31)
        fps = min(msg.get("fps", self.fps), self.fps) if mode == "realtime" else self.fps
        s = Session(
            id=secrets.token_hex(16),
            identity=identity,
            mode=mode,
            slot=slot,
            fps=fps,
            seed=seed,
            encoding=msg.get("encoding", "raw"),
            quality=msg.get("quality", 90),
            name=msg.get("name", ""),
            client_id=cid,
            keys=np.zeros(self.world.num_keys, dtype=bool),
            last_seen=now,
            next_tick=math.floor((now - self._t0) * fps) + 1,
            user=self._user,
        )
        if self.record_dir is not None:
            s.recorder = SessionRecorder(
                self.record_dir,
                self.pool.locate(slot)[0].world,
                label=s.label,
                mode=mode,
                client=s.name,
                fps=fps,
            )
        self._sessions[s.id] = s
        self._per_client[quota] += 1
        if cid is not None:
            self._by_client_id[known] = s.id
        self.sessions_opened += 1
        log.info(
            "session %s (%s, %s, %g fps, seed %d, slot %d, engine %d) opened",
            s.label,
            s.name or "-",
            mode,
            fps,
            seed,
            slot,
            slot // self.pool.per_engine,
        )
        self._send(identity, self._welcome(s))
        self._reset(s, seed, seq=0, now=now)

    def _welcome(self, s: Session) -> bytes:
        assert self.world is not None
        w = self.world
        d = w.describe()  # the world names itself
        return P.encode(
            {
                "type": "welcome",
                "session": s.id,
                "world": d["world"],
                "height": w.height,
                "width": w.width,
                "key_names": list(w.key_names),
                "fps": s.fps,
                "mode": s.mode,
                "encoding": s.encoding,
                "seed": s.seed,
                "heartbeat_s": self.session_timeout_s / 4,
                "timeout_s": self.session_timeout_s,
                "max_message_bytes": P.MAX_MESSAGE_BYTES,
                "server": SERVER_VERSION,
                # what a neural world was built from (nil for the game): for HUDs and client recordings
                "checkpoint": d.get("checkpoint"),
                "checkpoint_hash": d.get("checkpoint_hash"),
                "steps": d.get("steps"),
            }
        )

    def _on_input(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        s = self._session(identity, msg, now)
        if s.mode != "realtime":
            raise P.ProtocolError(
                P.WRONG_MODE, "'input' is for realtime sessions; lockstep sessions send 'step'", "type"
            )
        keys = self._keys(msg["keys"])
        if msg["seq"] <= s.input_seq:  # arrived after a newer one: the newest key state wins
            s.stats.stale_inputs += 1
            return
        if s.input_time is not None:  # overtaken before any frame reflected it
            s.stats.stale_inputs += 1
        s.keys, s.input_seq, s.input_time = keys, msg["seq"], now
        s.stats.inputs += 1

    def _on_step(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        s = self._session(identity, msg, now)
        if s.mode != "lockstep":
            raise P.ProtocolError(
                P.WRONG_MODE, "'step' is for lockstep sessions; realtime sessions send 'input'", "type"
            )
        keys = self._keys(msg["keys"])
        last = s.pending_steps[-1][0] if s.pending_steps else s.input_seq
        if msg["seq"] <= last:
            raise P.ProtocolError(
                P.BAD_FIELD, f"field 'seq' must increase: got {msg['seq']} after {last}", "seq"
            )
        if len(s.pending_steps) >= MAX_PENDING_STEPS:
            raise P.ProtocolError(P.FLOOD, f"more than {MAX_PENDING_STEPS} steps queued; wait for each frame")
        s.pending_steps.append((msg["seq"], keys, now))
        s.stats.inputs += 1

    def _on_reset(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        s = self._session(identity, msg, now)
        if msg["seq"] <= s.input_seq:
            raise P.ProtocolError(
                P.BAD_FIELD, f"field 'seq' must increase: got {msg['seq']} after {s.input_seq}", "seq"
            )
        seed = msg.get("seed")
        self._reset(s, self._rng.randrange(2**31) if seed is None else seed, seq=msg["seq"], now=now)

    def _on_stats(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        s = self._session(identity, msg, now)
        self._send(
            identity, P.encode({"type": "stats", **self._describe(s), "server": self._server_counters()})
        )

    def _on_ping(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        reply: dict[str, Any] = {"type": "pong", "t": msg.get("t"), "server_time": time.time()}
        if msg.get("session") is not None:
            reply["session"] = self._session(identity, msg, now).id
        self._send(identity, P.encode(reply))

    def _on_bye(self, identity: bytes, msg: dict[str, Any], now: float) -> None:
        self._close_session(self._session(identity, msg, now), "bye")
