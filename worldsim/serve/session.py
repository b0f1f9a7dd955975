"""One connected player or agent: its slot in the batched World, its key state, its counters."""

from __future__ import annotations

import collections
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A lockstep client waits for each frame; more than this many queued steps is a flood.
MAX_PENDING_STEPS = 8


def summary_ms(values, extra: dict | None = None) -> dict[str, Any]:
    """`n`, `p50`, `p99` of timings in ms (None when there are none), rounded to the microsecond."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": int(v.size)}
    for name, q in (("p50", 50), ("p99", 99)):
        out[name] = round(float(np.percentile(v, q)), 3) if v.size else None
    return {**out, **(extra or {})}


class StepTimes:
    """The server's batched `World.step` calls: how long each took and how many sessions it stepped."""

    def __init__(self, window: int = 1024) -> None:
        self._ms: collections.deque[float] = collections.deque(maxlen=window)
        self._batch: collections.deque[int] = collections.deque(maxlen=window)

    def add(self, ms: float, sessions: int) -> None:
        self._ms.append(ms)
        self._batch.append(sessions)

    def summary(self) -> dict[str, Any]:
        batch = list(self._batch)  # copies first: another thread may be reading the stats
        return summary_ms(list(self._ms), {"mean_batch": round(float(np.mean(batch)), 2) if batch else None})


class SessionStats:
    """Frames, drops and input-to-frame latency of one session (latency measured on the server)."""

    def __init__(self, window: int = 2048) -> None:
        self.started = time.monotonic()
        self.frames = 0  # frames made for this session
        self.sent = 0  # frames the socket accepted
        self.dropped = 0  # frames the send queue refused (slow client)
        self.late_ticks = 0  # ticks skipped because the loop fell behind
        self.inputs = 0  # input/step messages accepted
        self.stale_inputs = 0  # inputs overtaken by a newer one before a tick
        self.errors = 0  # bad messages about this session from its owner
        self.foreign = 0  # messages naming this session from another connection or key (refused)
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=window)
        self._frame_times: collections.deque[float] = collections.deque(maxlen=256)

    def frame_sent(self, now: float, ok: bool) -> None:
        self.frames += 1
        self._frame_times.append(now)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1

    def latency(self, ms: float) -> None:
        self._latency_ms.append(ms)

    def fps(self, now: float | None = None) -> float:
        """Frames per second over the last ~2 seconds (the rate a player feels now)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._frame_times if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        lat = np.asarray(self._latency_ms, dtype=np.float64)
        return {
            "uptime_s": round(now - self.started, 3),
            "frames": self.frames,
            "sent": self.sent,
            "dropped": self.dropped,
            "late_ticks": self.late_ticks,
            "inputs": self.inputs,
            "stale_inputs": self.stale_inputs,
            "errors": self.errors,
            "foreign": self.foreign,
            "fps": round(self.fps(now), 2),
            "latency_ms": summary_ms(lat, {"mean": round(float(lat.mean()), 3) if lat.size else None}),
        }

    def line(self) -> str:
        """The session's stats as one log line."""
        st = self.snapshot()
        lat = st["latency_ms"]
        lat_s = f"p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms" if lat["n"] else "no inputs"
        return f"{st['frames']} frames, {st['fps']:.1f} fps, {st['dropped']} dropped, latency {lat_s}"


def quota_key(identity: bytes, user: str | None) -> bytes | str:
    """What the per-client session cap counts: the key under CURVE, else the connection."""
    return identity if user is None else user


@dataclass
class Session:
    """Server-side state of one session. `slot` is its game index in the batched World."""

    id: str
    identity: bytes  # the ROUTER routing id of the connection that opened it: only it may use the session
    mode: str  # "realtime" | "lockstep"
    slot: int
    fps: float
    seed: int
    encoding: str
    quality: int
    name: str
    client_id: str | None
    keys: np.ndarray  # [K] bool, the held key state (realtime) or last step's keys
    last_seen: float
    next_tick: int = 0  # index on the server's tick grid of this fps (realtime)
    frame_number: int = 0
    input_seq: int = 0  # seq of the newest input/step/reset applied
    input_time: float | None = None  # when that input arrived, until a frame reflects it
    pending_steps: collections.deque = field(default_factory=collections.deque)  # (seq, keys, t)
    stats: SessionStats = field(default_factory=SessionStats)
    recorder: Any = None  # a worldsim.serve.recording.SessionRecorder when the server records
    user: str | None = None  # under CURVE, the client's public key (z85, zmq's User-Id): bound too
    # A name for logs, file names and recordings: a hash prefix, so none of them leaks the secret id.
    label: str = ""

    def __post_init__(self) -> None:
        self.label = hashlib.sha256(self.id.encode()).hexdigest()[:12]

    @property
    def owner(self) -> tuple[bytes, str | None]:
        return self.identity, self.user

    @property
    def quota_key(self) -> bytes | str:
        return quota_key(self.identity, self.user)

    def describe(self) -> dict[str, Any]:
        return {
            "session": self.id,
            "label": self.label,
            "name": self.name,
            "mode": self.mode,
            "slot": self.slot,
            "fps": self.fps,
            "frame": self.frame_number,
            **self.stats.snapshot(),
        }
