"""Engines behind one endpoint: one batched World per GPU (or several on one CPU), least-loaded placement.

A session's slot is global: engine `slot // per_engine`, game `slot % per_engine` of that engine's World.
Each tick steps every engine's due sessions in one batched `World.step`; with several engines the calls
run on one thread per engine, so GPUs work at the same time (kernels and host syncs release the GIL).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from worldsim.errors import UserError
from worldsim.world import World
from worldsim.worlds import WorldFactory

log = logging.getLogger(__name__)


def _on_device(device: torch.device):
    """Make `device` current for this thread (CUDA graphs and default allocations land on the right GPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def on_device(factory: WorldFactory, device: str | torch.device | None) -> WorldFactory:
    """`factory` run with `device` current, so a World built for cuda:1 allocates and captures there."""
    if device is None or torch.device(device).type != "cuda":
        return factory

    def build(batch: int) -> World:
        with torch.cuda.device(torch.device(device)):
            return factory(batch)

    return build


@dataclass
class Engine:
    """One World and the free games (local slots) in its batch."""

    index: int
    world: World
    capacity: int
    free: list[int] = field(default_factory=list)
    step_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))
    closed: bool = False

    def __post_init__(self) -> None:
        self.free = list(range(self.capacity))

    @property
    def sessions(self) -> int:
        return self.capacity - len(self.free)

    def step(self, keys: np.ndarray, slots: list[int]) -> tuple[np.ndarray, float]:
        """Step these games with keys `[B,K]` bool; frames `[B,H,W,3]` uint8 on the host and the ms it took."""
        t = time.perf_counter()
        with _on_device(self.world.device):
            k = torch.from_numpy(keys).to(self.world.device)
            frames = self.world.step(k, slots=slots).cpu().numpy()  # host sync: frames go out
        ms = (time.perf_counter() - t) * 1000
        self.step_ms.append(ms)
        return frames, ms

    def reset(self, seed: int, slot: int) -> np.ndarray:
        with _on_device(self.world.device):
            return self.world.reset([seed], slots=[slot])[0].cpu().numpy()  # host sync: the frame goes out

    def describe(self) -> dict:
        ms = list(self.step_ms)
        return {
            "engine": self.index,
            "device": str(self.world.device),
            "sessions": self.sessions,
            "capacity": self.capacity,
            "step_ms_p50": round(float(np.percentile(ms, 50)), 3) if ms else None,
        }


class EnginePool:
    """Build one World per factory, place sessions on the least-loaded engine, step engines in parallel."""

    def __init__(self, factories: Sequence[WorldFactory], per_engine: int) -> None:
        if not factories:
            raise UserError("a server needs at least one engine (world factory)")
        if per_engine < 1:
            raise UserError(f"sessions per engine must be >= 1, got {per_engine}")
        self.factories = list(factories)
        self.per_engine = per_engine
        self.engines: list[Engine] = []
        self._threads: ThreadPoolExecutor | None = None

    @property
    def capacity(self) -> int:
        return self.per_engine * len(self.factories)

    def start(self) -> None:
        """Build the worlds (heavy: checkpoints load, graphs capture). All must agree on what a frame is."""
        try:
            for i, make in enumerate(self.factories):
                world = make(self.per_engine)
                self.engines.append(Engine(i, world, self.per_engine))
                if world.batch_size < self.per_engine:
                    raise UserError(
                        f"engine {i}'s world steps {world.batch_size} games but each engine serves "
                        f"{self.per_engine} sessions; build it with batch_size={self.per_engine}"
                    )
                first = self.engines[0].world
                shape = (world.name, world.height, world.width, tuple(world.key_names))
                if shape != (first.name, first.height, first.width, tuple(first.key_names)):
                    raise UserError(
                        f"engine {i} serves {shape[:3]} but engine 0 serves "
                        f"{(first.name, first.height, first.width)} (or other keys): one endpoint serves "
                        "one kind of world; build every engine from the same world and checkpoint"
                    )
        except BaseException:
            self.close()
            raise
        if len(self.engines) > 1:
            self._threads = ThreadPoolExecutor(len(self.engines), thread_name_prefix="worldsim-engine")
        log.info(
            "%d engine(s) on %s, %d sessions each",
            len(self.engines),
            ", ".join(str(e.world.device) for e in self.engines),
            self.per_engine,
        )

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        for e in self.engines:  # kept after close: their worlds still describe what was served
            if e.closed:
                continue
            e.closed = True
            try:
                e.world.close()
            except Exception:  # noqa: BLE001 - close the others anyway
                log.exception("closing engine %d's world failed", e.index)

    # ------------------------------------------------------------------ placement

    def place(self) -> int | None:
        """A free global slot on the engine with the fewest sessions (ties: the lowest index); None if full."""
        free = [e for e in self.engines if e.free]
        if not free:
            return None
        e = min(free, key=lambda e: (e.sessions, e.index))
        return e.index * self.per_engine + e.free.pop(0)

    def release(self, slot: int) -> None:
        e, local = self.locate(slot)
        if local in e.free:
            raise RuntimeError(f"slot {slot} released twice")
        e.free.append(local)
        e.free.sort()

    def locate(self, slot: int) -> tuple[Engine, int]:
        """The engine and its local game index of a global slot."""
        return self.engines[slot // self.per_engine], slot % self.per_engine

    # ------------------------------------------------------------------ stepping

    def step(
        self, slots: list[int], keys: np.ndarray
    ) -> list[tuple[list[int], np.ndarray | BaseException, float]]:
        """Step the sessions in global `slots` with keys `[B,K]`: one batched World.step per engine.

        Returns, per engine touched, (positions into `slots`, frames `[b,H,W,3]` uint8 or the exception
        that engine raised, step ms). One engine failing never stops the others.
        """
        groups: dict[int, list[int]] = {}
        for i, slot in enumerate(slots):
            groups.setdefault(slot // self.per_engine, []).append(i)

        def run(index: int) -> tuple[list[int], np.ndarray | BaseException, float]:
            pos = groups[index]
            try:
                frames, ms = self.engines[index].step(keys[pos], [slots[i] % self.per_engine for i in pos])
                return pos, frames, ms
            except Exception as e:  # noqa: BLE001 - handed back: these sessions fail, not the server
                log.exception("engine %d: world.step failed for %d session(s)", index, len(pos))
                return pos, e, 0.0

        if self._threads is None or len(groups) == 1:
            return [run(i) for i in groups]
        return list(self._threads.map(run, list(groups)))
