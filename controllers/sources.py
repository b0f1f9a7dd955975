"""Frame sources for play: a batch-1 World stepped in a worker thread (in-process play), or a session of
a worldsim server through `worldsim.controllers.client.Client` (an embedded or a remote server). Both implement
`worldsim.controllers.frames.FrameSource`, so the window and headless play drive them the same way."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from worldsim.controllers.frames import FrameQueue, ShownFrame, SourceInfo, world_label

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# A World stepped in a worker thread (in-process play)
# ---------------------------------------------------------------------------------------------------


class WorldSource:
    """Drives a batch-1 `World` directly: real time in a worker thread at `fps`, or lockstep on the caller."""

    def __init__(self, world, fps: float = 30.0, *, checkpoint: str | None = None) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if world.batch_size != 1:
            raise ValueError(f"play drives one game; the world has batch_size={world.batch_size}, make it 1")
        self.world = world
        described = world.describe()  # the world names itself
        self.info = SourceInfo(
            world=world_label(described["world"]),
            height=int(world.height),
            width=int(world.width),
            key_names=tuple(world.key_names),
            fps=float(fps),
            steps=described.get("steps"),
            checkpoint=checkpoint or described.get("checkpoint"),
            checkpoint_hash=described.get("checkpoint_hash"),
        )
        self.queue = FrameQueue(2, keep=lambda item: item[0].reset_seed is not None)  # (frame, input time)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # pause, one step, reset, stop: the parked worker wakes
        self._paused = False
        self._parked = False  # the worker is waiting out a pause: it makes no frame until woken
        self._steps_asked = 0  # single steps asked for while paused and not made yet
        self._keys = np.zeros(len(self.info.key_names), dtype=bool)
        self._keys_time = time.monotonic()
        self._reset_seed: int | None = None
        self._reset_pending = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._number = 0
        self._seed: int | None = None
        self.frames_made = 0

    # -- real time ----------------------------------------------------------------------------------
    def start(self, seed: int | None, timeout_s: float = 120.0) -> ShownFrame:
        # Even the first reset runs on the worker: a neural world's reset runs the model.
        self.reset(seed)
        self._thread = threading.Thread(target=self._run, name="worldsim-world", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while (first := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the world made no first frame within {timeout_s:g} s")
            self.queue.wait(0.05)
        return first

    def set_keys(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=bool)
        with self._lock:
            self._keys = keys.copy()
            self._keys_time = time.monotonic()

    def poll(self) -> ShownFrame | None:
        if self._error is not None:
            raise RuntimeError(f"the world's worker thread failed: {self._error!r}") from self._error
        item = self.queue.get_newest()
        if item is None:
            return None
        frame, input_time = item
        frame.latency_ms = (time.monotonic() - input_time) * 1000.0
        return frame

    def reset(self, seed: int | None = None) -> None:
        with self._wake:
            self._reset_pending = True
            self._reset_seed = self._seed if seed is None else seed
            self._wake.notify_all()

    def set_paused(self, paused: bool, timeout_s: float = 30.0) -> None:
        """Pause (the world makes no frame until `step_once` or resume) or resume real-time play.

        Pausing waits until the worker has finished the frame it is making and parked, so that once it
        returns the world's frame count stands still: a frame still queued was made before the pause."""
        with self._wake:
            self._paused = bool(paused)
            self._steps_asked = 0
            self._wake.notify_all()
            if paused and self._thread is not None:
                self._wake.wait_for(lambda: self._parked or self._error is not None, timeout_s)

    def step_once(self) -> None:
        with self._wake:
            if self._paused:
                self._steps_asked += 1
                self._wake.notify_all()

    def _next_job(self) -> tuple[np.ndarray, float, bool, int | None] | None:
        """Under the lock: the keys, their time and a pending reset for the next frame, waiting out a
        pause (None once stopped)."""
        with self._wake:
            while self._paused and not self._reset_pending and not self._steps_asked:
                if self._stop.is_set():
                    return None
                self._parked = True
                self._wake.notify_all()
                self._wake.wait(0.5)
            self._parked = False
            if self._paused and not self._reset_pending:
                self._steps_asked -= 1
            do_reset, self._reset_pending = self._reset_pending, False
            return self._keys, self._keys_time, do_reset, self._reset_seed

    def _run(self) -> None:
        period = 1.0 / self.info.fps
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    if self._stop.is_set():
                        break
                job = self._next_job()
                if job is None:
                    break
                keys, input_time, do_reset, seed = job
                # A world slower than fps runs flat out; never burst to catch up on missed ticks (or
                # on the time spent paused).
                next_t = max(next_t + period, time.monotonic())
                if do_reset:
                    frame = self._reset_now(seed)
                else:
                    frame = self._step_now(keys)
                self.queue.put((frame, input_time))
        except BaseException as e:  # surfaced to the UI thread by poll()
            log.exception("world worker failed")
            self._error = e

    # -- lockstep -----------------------------------------------------------------------------------
    def begin_lockstep(self, seed: int | None) -> ShownFrame:
        t0 = time.monotonic()
        frame = self._reset_now(seed)
        frame.latency_ms = (time.monotonic() - t0) * 1000.0
        return frame

    def step(self, keys: np.ndarray) -> ShownFrame:
        t0 = time.monotonic()
        frame = self._step_now(np.asarray(keys, dtype=bool))
        frame.latency_ms = (time.monotonic() - t0) * 1000.0
        return frame

    def _reset_now(self, seed: int | None) -> ShownFrame:
        self._seed = 0 if seed is None else int(seed)
        frames = self.world.reset([self._seed])  # [1, H, W, 3]
        self._number = 0
        shown = self._to_shown(frames, np.zeros(len(self.info.key_names), dtype=bool))
        shown.reset_seed = self._seed
        return shown

    def _step_now(self, keys: np.ndarray) -> ShownFrame:
        import torch

        frames = self.world.step(torch.from_numpy(keys[None]).to(self.world.device))  # [1, H, W, 3]
        self._number += 1
        return self._to_shown(frames, keys)

    def _to_shown(self, frames, keys: np.ndarray) -> ShownFrame:
        self.frames_made += 1
        image = frames[0].cpu().numpy()  # deliberate host sync: the UI needs the pixels
        return ShownFrame(number=self._number, image=image, keys=keys.copy(), latency_ms=None)

    def stats(self) -> dict:
        return {"frames_made": self.frames_made, "dropped": self.queue.dropped}

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.world.close()


# ---------------------------------------------------------------------------------------------------
# A server session through worldsim.controllers.client.Client (remote or embedded server)
# ---------------------------------------------------------------------------------------------------


class ClientSource:
    """Plays a session of a worldsim server: real time (`start`) or lockstep (`begin_lockstep`)."""

    def __init__(
        self,
        addr: str,
        fps: float = 30.0,
        *,
        name: str = "worldsim-play",
        local_world: Callable[[], object | None] | None = None,
    ) -> None:
        self.addr = addr
        self.local_world = local_world  # an embedded server's World: fills in what the welcome lacks
        self.fps = float(fps)
        self.name = name
        self.client = None
        self.info = SourceInfo(world="?", height=0, width=0, key_names=(), fps=self.fps)
        self._sent: dict[int, tuple[float, np.ndarray]] = {}  # input seq -> (time sent, keys)
        self._pending_reset: ShownFrame | None = None
        self._paused = False
        self._steps_asked = 0
        self.frames_polled = 0

    def _connect(self, mode: str, seed: int | None) -> None:
        from worldsim.controllers.client import Client  # zmq (heavy, optional): only for a remote world

        self.client = Client(self.addr, mode=mode, fps=self.fps, seed=seed, name=self.name)
        welcome = self.client.connect()
        self.info = SourceInfo(
            world=world_label(str(welcome.get("world", "?"))),
            height=int(welcome["height"]),
            width=int(welcome["width"]),
            key_names=tuple(welcome["key_names"]),
            fps=float(welcome.get("fps", self.fps)),
            steps=welcome.get("steps"),
            checkpoint=welcome.get("checkpoint"),
            checkpoint_hash=welcome.get("checkpoint_hash"),
        )
        world = self.local_world() if self.local_world is not None else None
        if world is not None:
            info, described = self.info, world.describe()
            info.steps = info.steps if info.steps is not None else described.get("steps")
            info.checkpoint = info.checkpoint or described.get("checkpoint")
            info.checkpoint_hash = info.checkpoint_hash or described.get("checkpoint_hash")

    def _reset_frame(self, seed: int | None) -> ShownFrame:
        t0 = time.monotonic()
        frame = self.client.reset(seed)
        idle = np.zeros(len(self.info.key_names), dtype=bool)
        self._sent[frame.input_seq] = (t0, idle)  # frames until the next input reflect the reset
        shown = self._shown(frame, idle, t0)
        shown.reset_seed = seed
        return shown

    def _shown(self, frame, keys: np.ndarray | None = None, t_sent: float | None = None) -> ShownFrame:
        if keys is None:
            sent = self._sent.get(frame.input_seq)
            keys = sent[1] if sent else np.zeros(len(self.info.key_names), dtype=bool)
            t_sent = sent[0] if sent else None
        latency = (time.monotonic() - t_sent) * 1000.0 if t_sent is not None else frame.latency_ms
        return ShownFrame(number=int(frame.number), image=frame.image, keys=keys, latency_ms=latency)

    def start(self, seed: int | None) -> ShownFrame:
        self._connect("realtime", seed)
        return self._reset_frame(seed)

    def set_keys(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=bool).copy()
        seq = self.client.send_keys(keys)
        self._sent[seq] = (time.monotonic(), keys)
        if len(self._sent) > 512:  # inputs older than a few seconds are never reflected again
            for old in sorted(self._sent)[:256]:
                del self._sent[old]

    def poll(self) -> ShownFrame | None:
        if self._pending_reset is not None:
            frame, self._pending_reset = self._pending_reset, None
            return frame
        frame = self.client.poll_frame(timeout_ms=0)
        if frame is None:
            return None
        if self._paused:  # the server's session keeps running: its frames are skipped, not shown
            if not self._steps_asked:
                return None
            self._steps_asked -= 1
        self.frames_polled += 1
        return self._shown(frame)

    def set_paused(self, paused: bool) -> None:
        """Freeze (or unfreeze) the picture. A real-time server session has no pause in the protocol, so
        its world keeps stepping; `step_once` shows its next frame."""
        if paused and not self._paused:
            log.info("paused the picture: the server's world keeps running (its frames are skipped)")
        self._paused, self._steps_asked = bool(paused), 0

    def step_once(self) -> None:
        if self._paused:
            self._steps_asked += 1

    def reset(self, seed: int | None = None) -> None:
        self._pending_reset = self._reset_frame(seed)

    def begin_lockstep(self, seed: int | None) -> ShownFrame:
        self._connect("lockstep", seed)
        return self._reset_frame(seed)

    def step(self, keys: np.ndarray) -> ShownFrame:
        keys = np.asarray(keys, dtype=bool).copy()
        t0 = time.monotonic()
        return self._shown(self.client.step(keys), keys, t0)

    def stats(self) -> dict:
        """What this end measured (no round trip to the server): frames, lost, skipped, fps, latency."""
        if self.client is None:
            return {}
        st = dict(self.client.client_stats())
        st["dropped"] = int(st.get("lost", 0)) + int(st.get("skipped", 0))
        return st

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
