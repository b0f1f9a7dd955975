"""Playing Gymnasium envs: the keyboard's bindings for action names, the real pygame window (dummy video
driver) on a gym world, `worldsim play|serve|bench --world gym:ID` through the CLI and the server."""

import json

import numpy as np
import pygame
import pytest
import torch
from gym_envs import ACTIONS_ID, ATARI_MEANINGS
from worldsim.controllers.client import Client
from worldsim.controllers.gamepad import keys_from_gamepad
from worldsim.controllers.keyboard import Keyboard
from worldsim.controllers.sources import WorldSource
from worldsim.controllers.window import Window

from worldsim.actions import as_played
from worldsim.cli import main
from worldsim.gym_world import GymWorld
from worldsim.record import RecordingWriter, read_recording
from worldsim.record.verify import verify_recording
from worldsim.serve import Server, world_factory

BREAKOUT = ("NOOP", "FIRE", "RIGHT", "LEFT")


def event(kind, key):
    return pygame.event.Event(kind, key=key)


def playing(kb: Keyboard) -> list[str]:
    return [n for n, k in zip(kb.key_names, kb.keys()) if k]


def test_keyboard_holds_the_parts_of_atari_actions_and_sends_one_action():
    kb = Keyboard(ATARI_MEANINGS)
    assert kb.one_hot and set(kb.bound_keys) == set(ATARI_MEANINGS)
    assert playing(kb) == ["NOOP"], "nothing held: NOOP"
    for code in (pygame.K_UP, pygame.K_RIGHT, pygame.K_SPACE):
        assert kb.handle_event(event(pygame.KEYDOWN, code))
    assert playing(kb) == ["UPRIGHTFIRE"]
    kb.handle_event(event(pygame.KEYUP, pygame.K_UP))
    assert playing(kb) == ["RIGHTFIRE"]
    kb.release_all()
    kb.handle_event(event(pygame.KEYDOWN, pygame.K_s))  # WASD too
    kb.handle_event(event(pygame.KEYDOWN, pygame.K_a))
    assert playing(kb) == ["DOWNLEFT"]
    breakout = Keyboard(BREAKOUT)
    breakout.handle_event(event(pygame.KEYDOWN, pygame.K_LEFT))
    breakout.handle_event(event(pygame.KEYDOWN, pygame.K_UP))  # Breakout has no UP: still LEFT
    assert playing(breakout) == ["LEFT"]
    assert not breakout.handle_event(event(pygame.KEYDOWN, pygame.K_1))


def test_other_names_get_the_number_keys_in_order():
    actions = Keyboard(("action_0", "action_1", "action_2"))
    assert playing(actions) == ["action_0"], "one action a frame: action 0 when nothing is held"
    actions.handle_event(event(pygame.KEYDOWN, pygame.K_3))
    assert playing(actions) == ["action_2"]
    buttons = Keyboard(("key_0", "key_1", "key_2"))
    assert not buttons.one_hot and playing(buttons) == []
    buttons.handle_event(event(pygame.KEYDOWN, pygame.K_1))
    buttons.handle_event(event(pygame.KEYDOWN, pygame.K_3))
    assert playing(buttons) == ["key_0", "key_2"], "multi-hot keys stay multi-hot"


def test_a_gamepad_holds_the_parts_of_atari_actions():
    no_axes, a_button = [0.0] * 6, [True] + [False] * 10
    held = keys_from_gamepad(no_axes, a_button, (1, 1), ATARI_MEANINGS)  # d-pad up-right, A
    assert [n for n, k in zip(ATARI_MEANINGS, as_played(held, ATARI_MEANINGS)) if k] == ["UPRIGHTFIRE"]
    stick_left = keys_from_gamepad([-0.9, 0.0, 0, 0, 0, 0], [False] * 11, (0, 0), BREAKOUT)
    assert [n for n, k in zip(BREAKOUT, as_played(stick_left, BREAKOUT)) if k] == ["LEFT"]


def test_the_window_plays_a_gym_world_one_action_a_frame_and_shows_it():
    world = GymWorld(ACTIONS_ID, size=16)
    env = world.envs[0].unwrapped
    source = WorldSource(world, fps=60.0)
    script = {
        5: [
            (pygame.KEYDOWN, pygame.K_UP),
            (pygame.KEYDOWN, pygame.K_RIGHT),
            (pygame.KEYDOWN, pygame.K_SPACE),
        ],
        30: [(pygame.KEYUP, pygame.K_UP), (pygame.KEYUP, pygame.K_RIGHT), (pygame.KEYUP, pygame.K_SPACE)],
    }
    hud, seen = [], []

    def on_frame(frame):
        seen.append(frame)
        hud.append(window.hud_lines(frame))
        for kind, key in script.get(len(seen), ()):
            pygame.event.post(event(kind, key))

    window = Window(source, seed=0, scale=2, on_frame=on_frame, max_frames=60, gamepad=False)
    try:
        window.run()
    finally:
        source.close()
    got = [ATARI_MEANINGS[a] for a in env.received]
    assert set(got) == {"NOOP", "UPRIGHTFIRE"}, "one action a frame, from the held arrows and Space"
    assert got.count("UPRIGHTFIRE") >= 10 and got[-1] == "NOOP"
    assert any("keys UPRIGHTFIRE" in lines for lines in hud) and "keys NOOP" in hud[-1]
    assert all(f.keys.sum() <= 1 for f in seen), "no frame reflects more than one action"
    help_rows = dict(window.hud.help_lines(ATARI_MEANINGS))
    assert help_rows["Space"] == "FIRE" and help_rows["Up / W"] == "UP" and help_rows["none held"] == "NOOP"


def test_play_a_gym_world_headless_through_the_cli(tmp_path, capsys):
    rec = tmp_path / "cp.wsrec"
    argv = ["play", "--world", "gym:CartPole-v1", "--size", "24", "--headless", "--frames", "40"]
    assert main([*argv, "--bot", "random-sticky", "--record", str(rec)]) == 0
    assert "gym:CartPole-v1: 40 frames" in capsys.readouterr().out
    r = read_recording(rec)
    assert r.header["world"] == "gym:CartPole-v1" and list(r.header["key_names"]) == ["action_0", "action_1"]
    assert (r.header["height"], r.header["width"]) == (24, 24) and len(r.records) == 40
    assert r.header["fps"] == 50.0, "no --fps: the env's own speed (CartPole's render_fps)"
    keys = np.stack([x.keys for x in r.records[1:]])
    assert (keys.sum(axis=1) == 1).all(), "one action a frame reaches the env and the recording"
    assert len({x.frame.tobytes() for x in r.records}) > 10, "the cart moves"
    assert verify_recording(rec).identical, "the env re-run from the seed and keys makes the same frames"
    tampered = tmp_path / "tampered.wsrec"
    fields = ("world", "height", "width", "key_names", "fps", "seed")
    with RecordingWriter(tampered, **{k: r.header[k] for k in fields}) as w:
        for x in r.records:
            keys = ~x.keys if x.frame_number == 20 else x.keys  # the other push at frame 20
            w.write(x.frame_number, keys, x.frame)
    # the push shows in the cart's position from the next frame (CartPole moves it by the old velocity)
    assert verify_recording(tampered).mismatch_frame_number in (20, 21)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--world", "gym:Nope-v9"], "--world gym:Nope-v9: "),
        (["--world", "gym:CartPole-v1", "--checkpoint", "tiny"], "--checkpoint is for --world neural"),
        (["--world", "gmae"], "--world must be one of game, neural, gym:ID"),
    ],
)
def test_bad_gym_worlds_are_one_line_errors(argv, message, capsys):
    assert main(["play", *argv, "--headless", "--frames", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_play_breakout_headless_through_the_cli(tmp_path, capsys):
    pytest.importorskip("ale_py")
    rec = tmp_path / "breakout.wsrec"
    argv = [
        "play",
        "--world",
        "gym:ALE/Breakout-v5",
        "--headless",
        "--frames",
        "120",
        "--bot",
        "random-sticky",
        "--record",
    ]
    assert main([*argv, str(rec)]) == 0
    assert "gym:ALE/Breakout-v5: 120 frames" in capsys.readouterr().out
    r = read_recording(rec)
    assert list(r.header["key_names"]) == list(BREAKOUT) and r.header["fps"] == 15.0
    assert len({x.frame.tobytes() for x in r.records}) > 10
    assert verify_recording(rec).identical


def test_a_server_serves_a_gym_world_in_lockstep():
    server = Server(world_factory("gym:CartPole-v1", size=16), max_sessions=2, stats_interval_s=0).start()
    try:
        with Client(server.address, mode="lockstep") as c:
            welcome = c.connect()
            assert welcome["world"] == "gym:CartPole-v1" and list(welcome["key_names"]) == [
                "action_0",
                "action_1",
            ]
            first = c.reset(seed=4)
            frames = [c.step([0, 1]) for _ in range(5)]
    finally:
        server.stop()
    ref = GymWorld("CartPole-v1", size=16)
    expect = [ref.reset([4])] + [ref.step(torch.tensor([[False, True]])) for _ in range(5)]
    for got, want in zip([first, *frames], expect):
        assert np.array_equal(got.image, want[0].numpy()), "the served frames are the env's"


def test_bench_game_times_a_gym_world(tmp_path, capsys):
    out = tmp_path / "gym.json"
    argv = [
        "bench",
        "game",
        "--world",
        "gym:CartPole-v1",
        "--size",
        "16",
        "--seconds",
        "0.2",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    assert "gym:CartPole-v1" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["world"] == "gym:CartPole-v1" and r["fps"] > 0 and r["size"] == 16 and r["device"] == "cpu"
    assert main(["bench", "game", "--world", "neural", "--seconds", "0.2"]) == 2
    assert "worldsim bench neural" in capsys.readouterr().err
