"""Gymnasium envs as Worlds (worldsim/gym_world.py) on real envs: CartPole (it ships with gymnasium),
small envs of our own that remember the actions they were given (tests/gym_envs.py), and Breakout
when ale-py is installed."""

import sys

import numpy as np
import pytest
import torch
from gym_envs import ACTIONS_ID, ATARI_MEANINGS, BUTTONS_ID, EPISODE

from worldsim.errors import UserError
from worldsim.gym_world import GymWorld
from worldsim.worlds import make_world, world_factory


def keys_for(world, *held):
    """One row of keys with the named keys held, `[1, K]` bool."""
    row = torch.zeros(1, world.num_keys, dtype=torch.bool)
    for name in held:
        row[0, world.key_names.index(name)] = True
    return row


def test_cartpole_world_steps_a_batch_resets_and_names_itself():
    world = make_world("gym:CartPole-v1", batch_size=3, size=24)
    assert isinstance(world, GymWorld) and world.key_names == ("action_0", "action_1")
    d = world.describe()
    assert d["world"] == "gym:CartPole-v1" and d["env_id"] == "CartPole-v1"
    assert (d["height"], d["width"], d["size"], d["batch_size"]) == (24, 24, 24, 3)
    assert d["frameskip"] == 1 and d["actions"] == "one-hot" and "repeat_action_probability" not in d
    assert d["env_fps"] == 50.0, "CartPole's render_fps: one env step's real time"
    first = world.reset([5, 6, 5])
    assert first.shape == (3, 24, 24, 3) and first.dtype == torch.uint8 and first.device.type == "cpu"
    assert torch.equal(first[0], first[2]), "the same seed starts the same episode"
    assert first.float().std() > 0, "frames are rendered, not blank"
    push = torch.tensor([[False, True]] * 3)
    frames = [world.step(push) for _ in range(4)]
    assert all(f.shape == (3, 24, 24, 3) for f in frames)
    assert not torch.equal(frames[-1][0], first[0]), "the cart moves under the keys"
    assert torch.equal(frames[-1][0], frames[-1][2]), "same seed, same keys, same frames"
    # one slot alone: its frame comes back alone, the others are untouched
    again = world.reset([5], slots=[1])
    assert again.shape == (1, 24, 24, 3) and torch.equal(again[0], first[0])
    world.close()
    world.close()  # twice is fine


def test_an_episode_that_ends_resets_itself_and_the_world_keeps_going():
    world = GymWorld("CartPole-v1", batch_size=2, size=16)
    world.reset([0, 1])
    idle = torch.zeros(2, 2, dtype=torch.bool)  # nothing held: action 0 (push left) every frame
    ended = torch.zeros(2, dtype=torch.int64)
    for _ in range(120):
        world.step(idle)
        ended += world.done
        for b in torch.nonzero(world.done).flatten().tolist():
            # the frame handed back is the next episode's first: CartPole restarts within +-0.05
            assert np.abs(world.envs[b].unwrapped.state).max() <= 0.05
    assert (ended >= 3).all(), f"pushing one way ends CartPole's episodes every few dozen frames: {ended}"
    assert world.reward.shape == (2,)
    world.close()


def test_a_discrete_env_gets_exactly_one_action_a_frame_chosen_from_the_held_keys():
    world = GymWorld(ACTIONS_ID, size=12)
    assert world.key_names == ATARI_MEANINGS
    env = world.envs[0].unwrapped
    world.reset(0)
    held_and_meant = [
        ((), "NOOP"),
        (("FIRE",), "FIRE"),
        (("UP", "RIGHT", "FIRE"), "UPRIGHTFIRE"),
        (("UPRIGHT", "FIRE"), "UPRIGHTFIRE"),  # parts pool across held actions
        (("DOWN", "LEFT"), "DOWNLEFT"),
        (("LEFT", "RIGHT"), "RIGHT"),  # no action is both: the largest part, the lowest index
        (("UP", "DOWN", "FIRE"), "UPFIRE"),
    ]
    for held, meant in held_and_meant:
        frame = world.step(keys_for(world, *held))
        assert ATARI_MEANINGS[env.received[-1]] == meant, (held, meant)
        # the RGB observation is the frame (value = action + 1; 0 once an episode restarts), 12x10 -> 12x12
        shown = 0 if world.done[0] else env.received[-1] + 1
        assert frame.shape == (1, 12, 12, 3) and (frame == shown).all()
    assert len(env.received) == len(held_and_meant), "exactly one action per frame"


def test_the_env_resets_at_the_end_of_each_episode():
    world = GymWorld(ACTIONS_ID, size=8)
    env = world.envs[0].unwrapped
    world.reset(0)
    done = []
    for _ in range(3 * EPISODE):
        frame = world.step(keys_for(world, "FIRE"))
        done.append(bool(world.done[0]))
        if done[-1]:
            assert (frame == 0).all(), "the frame after an episode's end is the next one's first"
    assert done == ([False] * (EPISODE - 1) + [True]) * 3 and env.resets == 1 + 3
    assert world.reward[0] == 1.0


def test_frameskip_repeats_the_action_and_multibinary_keys_pass_through():
    world = GymWorld(ACTIONS_ID, size=8, frameskip=2)
    env = world.envs[0].unwrapped
    world.reset(0)
    world.step(keys_for(world, "DOWN", "FIRE"))
    assert env.received == [ATARI_MEANINGS.index("DOWNFIRE")] * 2 and world.describe()["frameskip"] == 2
    buttons = GymWorld(BUTTONS_ID, batch_size=2, size=6)
    assert buttons.key_names == ("key_0", "key_1", "key_2")
    assert buttons.describe()["actions"] == "multi-hot"
    buttons.reset([0, 1])
    frames = buttons.step(torch.tensor([[True, False, True], [False, True, True]]))
    assert buttons.envs[0].unwrapped.received[-1].tolist() == [1, 0, 1]
    assert buttons.envs[1].unwrapped.received[-1].tolist() == [0, 1, 1]
    assert frames[0, 0, 0].tolist() == [80, 0, 80], "the rendered frame"


def test_bad_ids_and_spaces_are_one_line_errors(monkeypatch):
    with pytest.raises(UserError, match=r"--world gym:Nope-v9: .*doesn't exist"):
        make_world("gym:Nope-v9")
    with pytest.raises(UserError, match="--world gym:Pendulum-v1: action space Box.* is not supported"):
        make_world("gym:Pendulum-v1")
    with pytest.raises(UserError, match="--world must be one of game, neural, gym:ID"):
        world_factory("gym:")
    with pytest.raises(UserError, match="--checkpoint and --level are for the neural and game worlds"):
        make_world("gym:CartPole-v1", checkpoint="tiny")
    with pytest.raises(UserError, match="repeat_action_probability is an Atari"):
        GymWorld("CartPole-v1", repeat_action_probability=0.25)
    with pytest.raises(UserError, match="--world gym:CartPole-v1: frameskip must be an int >= 1, got 0"):
        GymWorld("CartPole-v1", frameskip=0)
    monkeypatch.setitem(sys.modules, "ale_py", None)  # ale-py not installed: `import ale_py` fails
    with pytest.raises(
        UserError, match=r'--world gym:ALE/Breakout-v5: Atari envs need ale-py; pip install -e "\.\[atari\]"'
    ):
        make_world("gym:ALE/Breakout-v5")


def test_breakout_moves_its_paddle_with_the_keys():
    pytest.importorskip("ale_py")
    world = make_world("gym:ALE/Breakout-v5", batch_size=2, size=64)
    assert world.key_names == ("NOOP", "FIRE", "RIGHT", "LEFT")
    d = world.describe()
    assert d["world"] == "gym:ALE/Breakout-v5" and d["frameskip"] == 4
    assert d["repeat_action_probability"] == 0.0 and (d["height"], d["width"]) == (64, 64)
    assert d["env_fps"] == 15.0, "the arcade's 60 Hz over frame skip 4"
    first = world.reset([3, 3])
    assert first.shape == (2, 64, 64, 3) and torch.equal(first[0], first[1])
    fire = torch.cat([keys_for(world, "FIRE")] * 2)
    world.step(fire)
    right_vs_idle = torch.cat([keys_for(world, "RIGHT"), keys_for(world)])
    for _ in range(10):
        frames = world.step(right_vs_idle)
    paddle = frames[:, 56:62]  # the paddle's rows at 64x64
    assert not torch.equal(paddle[0], paddle[1]), "RIGHT moved the paddle, NOOP did not"
    world.close()
