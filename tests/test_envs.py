"""Gymnasium: worldsim/Maze-v0 passes check_env (every render mode, through its spec), is deterministic
for a seed, renders as rgb_array and in a pygame window (dummy video driver), and returns INFO_KEYS."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from displays import displayed_frame
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401 - registers the envs
from worldsim.env_render import INFO_KEYS
from worldsim.envs import MAZE_ID, NEURAL_ID, REMOTE_ID, WorldEnv, register_envs
from worldsim.game import GameWorld


def test_check_env_passes_for_maze():
    env = gym.make(MAZE_ID, size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)  # the spec lets it make every render mode
    assert not [str(w.message) for w in caught], "check_env passes without a warning"
    assert env.spec.max_episode_steps > 0
    assert env.observation_space.shape == (32, 32, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 6


def test_reset_seed_is_deterministic_through_make():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(20, 6))

    def rollout(seed):
        env = gym.make(MAZE_ID, size=24)
        obs, info = env.reset(seed=seed)
        frames = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            assert reward == 0.0 and not terminated and not truncated and "blocked" in info
            frames.append(obs)
        assert np.array_equal(env.render(), obs)
        return np.stack(frames)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_truncation_and_kwargs():
    env = gym.make(MAZE_ID, size=16, level=3, max_episode_steps=3)
    env.reset(seed=0)
    results = [env.step(env.action_space.sample()) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[0][0].shape == (16, 16, 3)


def test_register_is_idempotent_and_neural_is_registered():
    register_envs()
    register_envs()
    assert MAZE_ID in gym.registry and NEURAL_ID in gym.registry and REMOTE_ID in gym.registry


def test_world_env_rejects_batched_worlds():
    with pytest.raises(ValueError, match="batch_size 1"):
        WorldEnv(GameWorld(batch_size=2, size=16))


def test_rgb_array_render_returns_the_observation():
    env = gym.make(MAZE_ID, size=16, render_mode="rgb_array")
    obs, _ = env.reset(seed=2)
    assert np.array_equal(env.render(), obs)
    obs, *_ = env.step(np.array([1, 0, 0, 0, 1, 0]))
    shown = env.render()
    assert np.array_equal(shown, obs) and shown is not obs, "a copy: the caller may keep or change it"
    env.close()


def test_human_render_shows_every_frame_in_a_pygame_window():
    env = gym.make(MAZE_ID, size=16, render_mode="human")
    try:
        obs, _ = env.reset(seed=2)
        assert np.array_equal(displayed_frame(16, 16), obs), "reset shows its frame"
        for action in ([1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0]):
            obs, *_ = env.step(np.array(action))
            assert np.array_equal(displayed_frame(16, 16), obs), "each step shows its frame"
        assert env.render() is None, "human mode draws as it steps; render() returns nothing"
    finally:
        env.close()
    assert displayed_frame(16, 16) is None, "close() closes the window"


def test_info_keys_and_values():
    env = gym.make(MAZE_ID, size=16)
    _, info = env.reset(seed=4)
    assert info == {"frame": 0, "seed": 4, "world": "game", "blocked": None}
    _, _, _, _, info = env.step(np.array([1, 0, 0, 0, 0, 0]))
    assert set(info) == set(INFO_KEYS) and info["frame"] == 1 and info["seed"] == 4
    assert isinstance(info["blocked"], bool), "the real game knows whether the move hit a wall"


def test_unknown_render_mode_is_refused():
    with pytest.raises(ValueError, match="render_mode must be None, 'human' or 'rgb_array'"):
        WorldEnv(GameWorld(batch_size=1, size=16), render_mode="ansi")
