"""The player's window: frame sources (a World in a worker thread, or a server session), a newest-frame
queue, and the pygame loop that samples keys, shows the newest frame scaled up crisply, and draws a HUD.

The window talks to every frame source through the same small interface (`FrameSource`), so playing a
World in-process, through an embedded server, or against a remote server is the same loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from worldsim.errors import UserError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# What a frame source hands the UI
# ---------------------------------------------------------------------------------------------------


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

    def begin_lockstep(self, seed: int | None) -> ShownFrame:
        """Begin lockstep play (headless, bots): reset and return the first frame."""

    def step(self, keys: np.ndarray) -> ShownFrame:
        """Lockstep: one frame under `keys`, as fast as the world goes."""

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class FrameQueue:
    """The newest `maxlen` (1-2) frames between a producer and the UI; a put into a full queue drops
    the oldest, and `get_newest` takes the newest and drops the rest, so the UI never falls behind."""

    def __init__(self, maxlen: int = 2) -> None:
        if maxlen not in (1, 2):
            raise ValueError(f"maxlen must be 1 or 2 frames, got {maxlen}; a longer queue only adds latency")
        self._items: deque = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self.dropped = 0  # frames produced that the UI never took

    def put(self, item: object) -> None:
        with self._cond:
            if len(self._items) == self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get_newest(self, timeout: float = 0.0) -> object | None:
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait(timeout)
            if not self._items:
                return None
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
        self.info = SourceInfo(
            world=_label(world.name),
            height=int(world.height),
            width=int(world.width),
            key_names=tuple(world.key_names),
            fps=float(fps),
            steps=getattr(world, "steps", None),
            checkpoint=checkpoint or getattr(world, "checkpoint_name", None),
            checkpoint_hash=getattr(world, "checkpoint_hash", None),
        )
        self.queue = FrameQueue(2)
        self._lock = threading.Lock()
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
        with self._lock:
            self._reset_pending = True
            self._reset_seed = self._seed if seed is None else seed

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
                # A world slower than fps runs flat out; never burst to catch up on missed ticks.
                next_t = max(next_t + period, time.monotonic())
                with self._lock:
                    keys, input_time = self._keys, self._keys_time
                    do_reset, seed = self._reset_pending, self._reset_seed
                    self._reset_pending = False
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
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.world.close()


def _label(name: str) -> str:
    """World class names as the CLI spells them (`--world game|neural`), which recordings also use."""
    return {"GameWorld": "game", "NeuralWorld": "neural"}.get(name, name)


# ---------------------------------------------------------------------------------------------------
# A server session through controllers.client.Client (remote or embedded server)
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
        self.frames_polled = 0

    def _connect(self, mode: str, seed: int | None) -> None:
        from controllers.client import Client

        self.client = Client(self.addr, mode=mode, fps=self.fps, seed=seed, name=self.name)
        welcome = self.client.connect()
        self.info = SourceInfo(
            world=_label(str(welcome.get("world", "?"))),
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
            info = self.info
            info.steps = info.steps if info.steps is not None else getattr(world, "steps", None)
            info.checkpoint = info.checkpoint or getattr(world, "checkpoint_name", None)
            info.checkpoint_hash = info.checkpoint_hash or getattr(world, "checkpoint_hash", None)

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
        self.frames_polled += 1
        return self._shown(frame)

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


# ---------------------------------------------------------------------------------------------------
# The play loops: the pygame window (real time) and headless (lockstep)
# ---------------------------------------------------------------------------------------------------


@dataclass
class PlaySummary:
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


class _Recorder(Protocol):
    def write(self, frame_number, keys, frame, *, time=None, latency_ms=None, reset_seed=None) -> None: ...


def _record(recorder: _Recorder | None, frame: ShownFrame, t0: float) -> None:
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
    recorder: _Recorder | None = None,
) -> PlaySummary:
    """Lockstep play without a display: `frames` frames (the first one included), keys from `bot`
    (idle when None; a bot returning None ends play early), each frame recorded if `recorder` is set."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    frame = source.begin_lockstep(seed)
    t0 = frame.time
    bot = _bind_bot(bot, source.info.key_names)
    latencies = [frame.latency_ms] if frame.latency_ms is not None else []
    _record(recorder, frame, t0)
    idle = np.zeros(len(source.info.key_names), dtype=bool)
    shown = 1
    while shown < frames:
        keys = bot.act(frame.image) if bot is not None else idle
        if keys is None:
            break
        frame = source.step(keys)
        shown += 1
        if frame.latency_ms is not None:
            latencies.append(frame.latency_ms)
        _record(recorder, frame, t0)
    return PlaySummary(source.info.world, shown, frame.time - t0, latencies)


def _bind_bot(bot, key_names: tuple[str, ...]):
    """A bot is an object with `act(frame)`, or a factory `key_names -> bot` for sources that learn their
    key names only once connected."""
    if bot is None or hasattr(bot, "act"):
        return bot
    return bot(key_names)


def auto_scale(height: int, width: int, screen: tuple[int, int] | None) -> int:
    """The largest integer scale whose window fits in ~85% of the screen (8 when the screen is unknown)."""
    if not screen or screen[0] <= 0 or screen[1] <= 0:
        return max(1, min(8, 768 // max(height, width)))
    return max(1, min(int(screen[0] * 0.85) // width, int(screen[1] * 0.85) // height))


# How the HUD names held keys: the keyboard key that presses them.
_KEY_LABELS = {
    "forward": "W",
    "back": "S",
    "strafe_left": "A",
    "strafe_right": "D",
    "turn_left": "Q",
    "turn_right": "E",
}


class Window:
    """The pygame window: samples keyboard/gamepad (and bot) keys every UI frame, shows the newest frame
    scaled up with nearest-neighbour, draws a HUD. Esc or closing the window quits, R resets."""

    def __init__(
        self,
        source: FrameSource,
        *,
        seed: int | None = None,
        scale: int | None = None,
        ui_fps: float | None = None,
        bot=None,
        recorder: _Recorder | None = None,
        max_frames: int | None = None,
        gamepad: bool = True,
        title: str = "worldsim",
        on_frame: Callable[[ShownFrame], None] | None = None,
        screenshot: str | None = None,
    ) -> None:
        if scale is not None and scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        self.source = source
        self.seed = seed
        self.scale = scale
        self.ui_fps = ui_fps
        self.bot = bot
        self.recorder = recorder
        self.max_frames = max_frames
        self.use_gamepad = gamepad
        self.title = title
        self.on_frame = on_frame
        self.screenshot = screenshot  # saved when play ends (frame + HUD as last drawn)
        self.screen = None
        self._frame_times: deque[float] = deque(maxlen=32)
        self._latency_ms: float | None = None

    def run(self) -> PlaySummary:
        import pygame

        from controllers.gamepad import Gamepads
        from controllers.keyboard import Keyboard

        try:
            pygame.display.init()
        except pygame.error as e:
            raise UserError(
                f"cannot open a window ({e}): run with a display, or play without one: --headless --frames N"
            ) from None
        pygame.font.init()
        try:
            frame = self.source.start(self.seed)
            t0 = last = frame.time
            info = self.source.info
            if self.scale is None:
                desktop = pygame.display.Info()
                self.scale = auto_scale(info.height, info.width, (desktop.current_w, desktop.current_h))
            self.screen = pygame.display.set_mode((info.width * self.scale, info.height * self.scale))
            pygame.display.set_caption(f"{self.title}: {info.world}")
            self._font = pygame.font.Font(None, max(16, min(28, self.screen.get_height() // 20)))
            bot = _bind_bot(self.bot, info.key_names)
            keyboard = Keyboard(info.key_names)
            pads = Gamepads(info.key_names) if self.use_gamepad else None
            clock = pygame.time.Clock()
            ui_fps = self.ui_fps or max(60.0, info.fps)  # input sampled at least once per world frame
            latencies: list[float] = []
            shown, resets = 0, 0
            bot_keys = np.zeros(len(info.key_names), dtype=bool)
            running = True
            while running:
                for event in pygame.event.get():
                    quit_key = event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
                    if event.type in (pygame.QUIT, pygame.WINDOWCLOSE) or quit_key:
                        running = False
                    elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                        self.source.reset(self.seed)
                        resets += 1
                    else:
                        keyboard.handle_event(event)
                        if pads is not None:
                            pads.handle_event(event)
                if not running:
                    break
                if frame is not None:  # a new frame: show it, record it, let the bot see it
                    shown += 1
                    last = frame.time
                    self._note(frame)
                    if frame.latency_ms is not None:
                        latencies.append(frame.latency_ms)
                    _record(self.recorder, frame, t0)
                    if self.on_frame is not None:
                        self.on_frame(frame)
                    self.draw(frame)
                    if self.max_frames is not None and shown >= self.max_frames:
                        break
                    if bot is not None:
                        next_keys = bot.act(frame.image)
                        if next_keys is None:
                            break
                        bot_keys = next_keys
                keys = keyboard.keys() | bot_keys
                if pads is not None:
                    keys |= pads.keys()
                self.source.set_keys(keys)
                clock.tick(ui_fps)
                frame = self.source.poll()
            if self.screenshot and shown:
                self.save_screenshot(self.screenshot)
            dropped = int(self.source.stats().get("dropped", 0))
            return PlaySummary(info.world, shown, last - t0, latencies, dropped, resets)
        finally:
            pygame.display.quit()

    def _note(self, frame: ShownFrame) -> None:
        self._frame_times.append(frame.time)
        if frame.latency_ms is not None:
            self._latency_ms = frame.latency_ms

    def hud_lines(self, frame: ShownFrame) -> list[str]:
        info = self.source.info
        ts = self._frame_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        lines = [f"{info.world}  {fps:4.1f} fps", f"frame {frame.number}"]
        lines.append(f"latency {self._latency_ms:4.0f} ms" if self._latency_ms is not None else "latency -")
        if info.steps is not None:
            lines.append(f"steps {info.steps}")
        held = [_KEY_LABELS.get(n, n) for n, k in zip(info.key_names, frame.keys) if k]
        lines.append("keys " + (" ".join(held) if held else "-"))
        return lines

    def draw(self, frame: ShownFrame) -> None:
        import pygame

        h, w = frame.image.shape[:2]
        image = np.ascontiguousarray(frame.image)
        src = pygame.image.frombuffer(image.tobytes(), (w, h), "RGB")
        scaled = pygame.transform.scale(src, (w * self.scale, h * self.scale))  # nearest: crisp pixels
        self.screen.blit(scaled, (0, 0))
        pad = 4
        texts = [self._font.render(t, True, (255, 255, 255)) for t in self.hud_lines(frame)]
        box_w = max(t.get_width() for t in texts) + 2 * pad
        box_h = sum(t.get_height() for t in texts) + 2 * pad
        box = pygame.Surface((box_w, box_h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        self.screen.blit(box, (0, 0))
        y = pad
        for t in texts:
            self.screen.blit(t, (pad, y))
            y += t.get_height()
        pygame.display.flip()

    def save_screenshot(self, path: str) -> None:
        """Save what the window shows now (the frame and the HUD) as an image file."""
        import pygame

        if self.screen is None:
            raise RuntimeError("the window is not open; call save_screenshot from on_frame or after a draw")
        pygame.image.save(self.screen, path)
