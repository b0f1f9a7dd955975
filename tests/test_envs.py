"""Gymnasium: worldsim/Maze-v0 passes check_env and is deterministic for a seed."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401 - registers the envs
from worldsim.envs import MAZE_ID, NEURAL_ID, WorldEnv, register_envs
from worldsim.game import GameWorld


def test_check_env_passes_for_maze():
    env = gym.make(MAZE_ID, size=32)
    check_env(env.unwrapped, skip_render_check=False)
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
    assert MAZE_ID in gym.registry and NEURAL_ID in gym.registry


def test_world_env_rejects_batched_worlds():
    with pytest.raises(ValueError, match="batch_size 1"):
        WorldEnv(GameWorld(batch_size=2, size=16))
