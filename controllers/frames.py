"""What a frame source hands the UI (`ShownFrame`, `SourceInfo`), the `FrameSource` interface every
source implements, and the newest-frame queue between a producer thread and the UI."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class ShownFrame:
    number: int  # the world's frame number (0 = the frame after a reset)
    image: np.ndarray  # [H, W, 3] uint8
    keys: np.ndarray  # [K] bool: the key state this frame reflects
    latency_ms: float | None  # input sampled -> frame in the UI's hands
    time: float = field(default_factory=time.monotonic)
    reset_seed: int | None = None  # set when the frame came from reset(seed), not step(keys)


@dataclass
class SourceInfo:
    world: str
    height: int
    width: int
    key_names: tuple[str, ...]
    fps: float
    steps: int | None = None  # denoising steps per frame (neural worlds)
    checkpoint: str | None = None
    checkpoint_hash: str | None = None


def world_label(name: str) -> str:
    """World class names as the CLI spells them (`--world game|neural`), which recordings also use."""
    return {"GameWorld": "game", "NeuralWorld": "neural"}.get(name, name)


class FrameSource(Protocol):
    """What the window and headless play need from anything that makes frames."""

    info: SourceInfo

    def start(self, seed: int | None) -> ShownFrame:
        """Begin real-time play (frames at `info.fps` from now on) and return the first frame."""

    def set_keys(self, keys: np.ndarray) -> None:
        """The newest key state `[K]` bool; real-time frames use whatever was set last."""

    def poll(self) -> ShownFrame | None:
        """The newest real-time frame not yet taken, or None."""

    def reset(self, seed: int | None = None) -> None:
        """Start a new game; the next frames polled come from it."""

    def set_paused(self, paused: bool) -> None:
        """Pause or resume real-time play; while paused `poll` hands out only the frames `step_once` asks for."""

    def step_once(self) -> None:
        """While paused: one more frame under the keys set last."""

    def begin_lockstep(self, seed: int | None) -> ShownFrame:
        """Begin lockstep play (headless, bots): reset and return the first frame."""

    def step(self, keys: np.ndarray) -> ShownFrame:
        """Lockstep: one frame under `keys`, as fast as the world goes."""

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class FrameQueue:
    """The newest `maxlen` (1-2) frames between a producer and the UI; a put into a full queue drops
    the oldest, and `get_newest` takes the newest and drops the rest, so the UI never falls behind.
    Items for which `keep(item)` is true (a reset's frame: the recording and the HUD need it) are never
    dropped: a put drops the oldest other item, and `get_newest` hands out the oldest kept item first
    (dropping what is older) and leaves the newer ones for the next call."""

    def __init__(self, maxlen: int = 2, keep: Callable[[object], bool] | None = None) -> None:
        if maxlen not in (1, 2):
            raise ValueError(f"maxlen must be 1 or 2 frames, got {maxlen}; a longer queue only adds latency")
        self._items: deque = deque()
        self._maxlen = maxlen
        self._keep = keep or (lambda item: False)
        self._cond = threading.Condition()
        self.dropped = 0  # frames produced that the UI never took

    def put(self, item: object) -> None:
        with self._cond:
            if len(self._items) >= self._maxlen:
                others = [i for i, it in enumerate(self._items) if not self._keep(it)]
                del self._items[others[0] if others else 0]
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get_newest(self, timeout: float = 0.0) -> object | None:
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(timeout)
            if not self._items:
                return None
            kept = [i for i, it in enumerate(self._items) if self._keep(it)]
            if kept:
                for _ in range(kept[0]):
                    self._items.popleft()
                    self.dropped += 1
                return self._items.popleft()
            item = self._items.pop()
            self.dropped += len(self._items)
            self._items.clear()
            return item

    def wait(self, timeout: float) -> None:
        """Block until something is queued (or `timeout` seconds pass) without taking it."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
