"""Server-side recording: every game a session plays (from hello or reset) becomes one .wsrec file.

A file is opened only once its game has stepped, so a client that resets right after hello leaves
one recording, not a one-frame stub too. Recording failures end that recording, never the session.
Files are 0600 in a folder made 0700, and name the session by its label (a hash prefix), never by
its secret id. The header carries what `worldsim verify` needs to re-run the game: size and key
names, and in `extra` the level and the device.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.world import World

log = logging.getLogger(__name__)


class SessionRecorder:
    """Records one session into `directory` with the shared RecordingWriter format."""

    def __init__(
        self, directory: Path, world: World, *, label: str, mode: str, client: str, fps: float
    ) -> None:
        from worldsim.record import RecordingWriter  # imported now, not mid-frame

        self._writer_cls = RecordingWriter
        self.directory = directory
        self.world = world
        self.label, self.mode, self.client, self.fps = label, mode, client, fps
        self.games = 0
        self._writer: Any = None
        self._seed: int | None = None
        self._first: tuple[np.ndarray, np.ndarray, float] | None = None  # frame 0 until the game steps

    def new_game(self, seed: int, frame: np.ndarray, keys: np.ndarray) -> None:
        self.close()
        self._seed = seed
        self._first = (frame, keys.copy(), time.time())

    def frame(self, number: int, keys: np.ndarray, frame: np.ndarray, latency_ms: float | None) -> None:
        if self._first is not None:
            first, first_keys, t = self._first
            self._first = None
            self._open()
            self._write(0, first_keys, first, t, None)
        self._write(number, keys, frame, time.time(), latency_ms)

    def close(self) -> None:
        self._first = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self) -> None:
        w = self.world
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.label}-{self.games}.wsrec"
        self.games += 1
        described = w.describe()
        extra = {"session": self.label, "mode": self.mode, "client": self.client, "source": "server"}
        extra["device"] = described["device"]
        for name in ("level", "checkpoint"):  # the game's level; a neural world's checkpoint name
            if described.get(name) is not None:
                extra[name] = described[name]
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._writer = self._writer_cls(
                path,
                world=described["world"],
                height=w.height,
                width=w.width,
                key_names=list(w.key_names),
                fps=self.fps,
                seed=self._seed,
                checkpoint_hash=described.get("checkpoint_hash"),
                extra=extra,
            )
        except OSError as e:
            log.error("cannot record session %s to %s: %s", self.label, path, e)

    def _write(
        self, number: int, keys: np.ndarray, frame: np.ndarray, t: float, latency_ms: float | None
    ) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write(number, keys, frame, time=t, latency_ms=latency_ms)
        except OSError as e:
            log.error("recording of session %s stopped: %s", self.label, e)
            self._writer.close()
            self._writer = None
