"""Several engines behind one endpoint, on CPU: placement, frames from the session's own engine, batching."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from waiting import wait_for
from worldsim.controllers.client import Client, ServerError

from worldsim.cli.serve import engine_devices
from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.serve import Server

SIZE = 16
LEVELS = ("default", 3)  # engine 0 and engine 1 play different levels: a frame tells which engine made it


class NotingGame(GameWorld):
    """The real game, noting each batched step: (games stepped, thread it ran on)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.steps: list[tuple[int, str]] = []

    def step(self, keys, *, slots=None):
        self.steps.append((keys.shape[0], threading.current_thread().name))
        return super().step(keys, slots=slots)


def factories(worlds: list[NotingGame]):
    def make(level):
        def build(batch: int) -> GameWorld:
            worlds.append(NotingGame(batch_size=batch, size=SIZE, level=level))
            return worlds[-1]

        return build

    return [make(level) for level in LEVELS]


def reference(level, seed: int, key_rows) -> list[np.ndarray]:
    w = GameWorld(batch_size=1, size=SIZE, level=level)
    out = [w.reset([seed])[0].numpy()]
    for k in key_rows:
        out.append(w.step(torch.tensor([k], dtype=torch.bool))[0].numpy())
    return out


def engine_of(server: Server, client: Client) -> int:
    return next(s["engine"] for s in server.stats()["session_stats"] if s["session"] == client.session)


def test_sessions_spread_frames_come_from_their_engine_and_a_leaver_frees_its_place():
    worlds: list[NotingGame] = []
    server = Server(factories(worlds), max_sessions=2, stats_interval_s=0).start()
    keys = [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]] * 2
    refs = [reference(level, 5, keys) for level in LEVELS]
    assert not np.array_equal(refs[0][0], refs[1][0])  # the two engines' frames differ for one seed
    clients = [Client(server.address, mode="lockstep", timeout_s=5.0) for _ in range(4)]
    try:
        assert server.max_sessions == 4 and len(server.stats()["engines"]) == 2
        for c in clients:
            c.connect()
        placed = [engine_of(server, c) for c in clients]
        assert placed == [0, 1, 0, 1]  # each new session on the least-loaded engine
        for c, e in zip(clients, placed):
            frames = [c.reset(seed=5)] + [c.step(k) for k in keys]
            for f, r in zip(frames, refs[e]):
                assert np.array_equal(f.image, r), f"a frame not from engine {e}"
        assert [e["sessions"] for e in server.stats()["engines"]] == [2, 2]
        with Client(server.address, timeout_s=1.0) as extra, pytest.raises(ServerError, match="server_full"):
            extra.connect()

        clients[1].close()  # the one on engine 1 leaves: the next session gets its place
        wait_for(lambda: server.stats()["sessions"] == 3, what="bye to free the session")
        assert [e["sessions"] for e in server.stats()["engines"]] == [2, 1]
        clients[1] = Client(server.address, mode="lockstep", timeout_s=5.0)
        clients[1].connect()
        assert engine_of(server, clients[1]) == 1
        assert np.array_equal(clients[1].reset(seed=5).image, refs[1][0])
    finally:
        for c in clients:
            c.close()
        server.stop()


def test_each_engine_steps_its_sessions_in_one_batched_call_on_its_own_thread():
    worlds: list[NotingGame] = []
    server = Server(factories(worlds), max_sessions=2, fps=30.0, stats_interval_s=0).start()
    clients = [Client(server.address, fps=30, timeout_s=5.0) for _ in range(4)]
    try:
        for c in clients:
            c.connect()
        got = [0] * 4
        deadline = time.monotonic() + 10
        while min(got) < 12 and time.monotonic() < deadline:
            for i, c in enumerate(clients):
                while c.poll_frame(timeout_ms=0) is not None:
                    got[i] += 1
            time.sleep(0.005)
        assert min(got) >= 12, got
    finally:
        for c in clients:
            c.close()
        server.stop()
    for w in worlds:
        sizes = [n for n, _ in w.steps]
        # Both of an engine's sessions share its ticks: one call steps both (a few single ones while joining).
        assert max(sizes) == 2 and sizes.count(2) >= 8, sizes
        assert sum(sizes) >= 2 * 10
    threads = {name for w in worlds for n, name in w.steps if n == 2}
    assert all(name.startswith("worldsim-engine") for name in threads)  # engines stepped side by side


def test_engines_must_serve_the_same_world():
    def make(size):
        return lambda batch: GameWorld(batch_size=batch, size=size)

    with pytest.raises(UserError, match="one endpoint serves one kind of world"):
        Server([make(16), make(32)], max_sessions=1).start()


def test_engine_devices_from_the_command_line():
    assert engine_devices(None, 2, "cpu") == ["cpu", "cpu"]
    assert engine_devices(None, 1, None) == [None]
    with pytest.raises(UserError, match="--engines must be >= 1"):
        engine_devices(None, 0, "cpu")
    with pytest.raises(UserError, match="drop --device"):
        engine_devices("2", 1, "cpu")
    with pytest.raises(UserError, match="'all' or a count"):
        engine_devices("two", 1, None)
    n = torch.cuda.device_count()
    if n >= 2:
        assert engine_devices("all", 1, None) == [f"cuda:{i}" for i in range(n)]
        assert engine_devices("2", 1, None) == ["cuda:0", "cuda:1"]
    else:
        with pytest.raises(UserError, match="torch sees (no GPU|1 GPU)"):
            engine_devices(str(n + 1), 1, None)


class BrokenGame(GameWorld):
    def step(self, keys, *, slots=None):
        raise RuntimeError("this engine's GPU fell over")


def test_a_failing_engine_ends_its_sessions_only():
    def make(cls):
        return lambda batch: cls(batch_size=batch, size=SIZE)

    server = Server([make(GameWorld), make(BrokenGame)], max_sessions=1, stats_interval_s=0).start()
    good = Client(server.address, mode="lockstep", timeout_s=5.0)
    bad = Client(server.address, mode="lockstep", timeout_s=2.0)
    try:
        good.connect()
        bad.connect()
        assert [engine_of(server, c) for c in (good, bad)] == [0, 1]
        with pytest.raises(ServerError, match="internal"):
            bad.step([1, 0, 0, 0, 0, 0])
        assert [f.number for f in (good.step([1, 0, 0, 0, 0, 0]), good.step([0, 0, 0, 0, 1, 0]))] == [1, 2]
        wait_for(lambda: server.stats()["sessions"] == 1, what="the failed session to close")
    finally:
        good.close()
        bad.close()
        server.stop()
