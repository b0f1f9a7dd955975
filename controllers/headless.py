"""Headless (lockstep) play, and what both play loops share: the summary of a play, recording what the
player saw, and binding a bot to the world's key names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from worldsim.controllers.frames import FrameSource, ShownFrame

from worldsim.actions import as_played


@dataclass
class PlaySummary:
    """What a play loop reports when play ends (`line()` is what `worldsim play` prints)."""

    world: str
    frames: int  # frames the player saw
    seconds: float  # from the first frame to the last (start-up excluded)
    latencies_ms: list[float]
    dropped: int = 0  # frames made but never shown (the UI only shows the newest)
    resets: int = 0

    @property
    def fps(self) -> float:
        return (self.frames - 1) / self.seconds if self.seconds > 0 else 0.0

    def latency_percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def line(self) -> str:
        p50, p99 = self.latency_percentile(50), self.latency_percentile(99)
        lat = (
            f"input-to-frame latency p50 {p50:.1f} ms, p99 {p99:.1f} ms" if p50 is not None else "no latency"
        )
        return (
            f"{self.world}: {self.frames} frames in {self.seconds:.2f} s ({self.fps:.1f} fps), {lat}, "
            f"{self.dropped} dropped, {self.resets} resets"
        )


class Recorder(Protocol):
    """What the play loops write each shown frame to (a `worldsim.record.RecordingWriter`, say)."""

    def write(self, frame_number, keys, frame, *, time=None, latency_ms=None, reset_seed=None) -> None: ...


def record_frame(recorder: Recorder | None, frame: ShownFrame, t0: float) -> None:
    if recorder is not None:
        recorder.write(
            frame.number,
            frame.keys,
            frame.image,
            time=frame.time - t0,
            latency_ms=frame.latency_ms,
            reset_seed=frame.reset_seed,
        )


def run_headless(
    source: FrameSource,
    *,
    frames: int,
    seed: int | None = None,
    bot=None,
    recorder: Recorder | None = None,
) -> PlaySummary:
    """Lockstep play without a display: `frames` frames (the first one included), keys from `bot`
    (idle when None; a bot returning None ends play early; one action a frame for a Discrete env, as
    in the window), each frame recorded if `recorder` is set."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    frame = source.begin_lockstep(seed)
    t0 = frame.time
    bot = bind_bot(bot, source.info.key_names)
    latencies = [frame.latency_ms] if frame.latency_ms is not None else []
    record_frame(recorder, frame, t0)
    idle = np.zeros(len(source.info.key_names), dtype=bool)
    shown = 1
    while shown < frames:
        keys = bot.act(frame.image) if bot is not None else idle
        if keys is None:
            break
        frame = source.step(as_played(keys, source.info.key_names))
        shown += 1
        if frame.latency_ms is not None:
            latencies.append(frame.latency_ms)
        record_frame(recorder, frame, t0)
    return PlaySummary(source.info.world, shown, frame.time - t0, latencies)


def bind_bot(bot, key_names: tuple[str, ...]):
    """A bot is an object with `act(frame)`, or a factory `key_names -> bot` for sources that learn their
    key names only once connected."""
    if bot is None or hasattr(bot, "act"):
        return bot
    return bot(key_names)
