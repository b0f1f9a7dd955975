"""Play through a server on loopback: the window as a real-time client of a Server (the same loop as
in-process play), `--connect` from the CLI, and headless lockstep through the embedded server."""

import numpy as np
import pygame
import pytest
import torch
from displays import play_pause_step_resume
from worldsim.controllers.sources import ClientSource
from worldsim.controllers.window import Window

from worldsim.cli import main
from worldsim.game import GameWorld
from worldsim.record import read_recording
from worldsim.serve import Server
from worldsim.world import KEY_NAMES

FORWARD = KEY_NAMES.index("forward")


class SpyGame(GameWorld):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.received: list[torch.Tensor] = []

    def step(self, keys, *, slots=None):
        self.received.append(torch.as_tensor(keys).clone().cpu())
        return super().step(keys, slots=slots)


@pytest.fixture
def server():
    worlds = []

    def factory(batch):
        worlds.append(SpyGame(batch_size=batch, size=32))
        return worlds[-1]

    srv = Server(factory, fps=60.0, max_sessions=2)
    srv.start()
    srv.worlds = worlds
    yield srv
    srv.stop()


def test_window_as_a_realtime_client_sends_keys_and_resets(server):
    source = ClientSource(server.address, fps=60.0)
    seen = []

    def on_frame(frame):
        seen.append(frame)
        if len(seen) == 5:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))
        if len(seen) == 35:
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_w))
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_r))

    try:
        summary = Window(source, seed=2, scale=1, on_frame=on_frame, max_frames=50, gamepad=False).run()
    finally:
        source.close()
    assert summary.frames == 50 and summary.world == "game"
    assert source.info.key_names == KEY_NAMES and (source.info.height, source.info.width) == (32, 32)
    received = torch.cat(server.worlds[0].received)
    assert received[:, FORWARD].sum() >= 5, "W pressed in the window reached the server's world"
    forward_frames = [f for f in seen if f.keys[FORWARD]]
    assert forward_frames and all(f.latency_ms is not None for f in forward_frames)
    assert len({f.image.tobytes() for f in seen}) > 5
    assert summary.resets == 1 and any(f.reset_seed == 2 and f.number == 0 for f in seen[1:])


def test_connect_headless_records(server, tmp_path):
    rec = tmp_path / "c.wsrec"
    argv = ["play", "--connect", server.address, "--headless", "--frames", "25", "--bot", "random-sticky"]
    assert main([*argv, "--seed", "1", "--record", str(rec)]) == 0
    r = read_recording(rec)
    assert r.header["world"] == "game" and len(r.records) == 25
    assert [x.frame_number for x in r.records] == list(range(25))


@pytest.mark.parametrize("server", [False, True])
def test_embedded_server_and_in_process_play_agree(tmp_path, server):
    rec = tmp_path / f"{server}.wsrec"
    argv = ["play", "--world", "game", "--size", "32", "--seed", "6", "--headless", "--frames", "20"]
    argv += ["--bot", "random-sticky", "--record", str(rec)] + (["--server"] if server else [])
    assert main(argv) == 0
    ref = GameWorld(batch_size=1, size=32)
    records = read_recording(rec).records
    expected = ref.reset([6])[0].numpy()
    for i, r in enumerate(records):
        if i:
            expected = ref.step(torch.from_numpy(r.keys[None].copy()))[0].numpy()
        assert np.array_equal(r.frame, expected), f"frame {i} differs from the game's"


def test_pause_freezes_a_server_session_and_period_shows_one_frame(server):
    # A real-time session has no pause in the protocol: the server's world runs on, the window shows
    # no new frame until `.`, which shows exactly one (the newest), and P again resumes.
    summary, seen, marks = play_pause_step_resume(ClientSource(server.address, fps=60.0), seed=2, scale=1)
    (shown_paused, _), (shown_idle, _), (shown_step, _) = (marks[p] for p in ("play", "paused", "step"))
    assert shown_idle == shown_paused, "no frame shown in 40 ticks of pause"
    assert shown_step == shown_idle + 1, "one . shows exactly one frame"
    assert marks["stepped"].number > seen[shown_idle - 1].number
    assert summary.frames == len(seen) == shown_step + 10, "P again resumes"
