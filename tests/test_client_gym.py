"""The Gymnasium env over a remote lockstep session, against a real server on loopback: check_env passes
through `gymnasium.make("worldsim/Remote-v0", address=...)`, both render modes work, and its frames and
info keys equal the local env's on the same world and keys."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from displays import displayed_frame
from gymnasium.utils.env_checker import check_env
from worldsim.controllers.gym_remote import RemoteWorldEnv

import worldsim  # noqa: F401 - registers the envs
from worldsim.env_render import INFO_KEYS
from worldsim.envs import MAZE_ID, REMOTE_ID
from worldsim.serve import Server, world_factory


@pytest.fixture(scope="module")
def server():
    s = Server(world_factory("game", size=16), max_sessions=4, stats_interval_s=0).start()
    yield s
    s.stop()


def test_check_env_passes_on_loopback(server):
    env = RemoteWorldEnv(server.address, max_episode_steps=50)
    try:
        check_env(env, skip_render_check=True)  # no spec here: the render modes are checked below
    finally:
        env.close()


def test_registered_remote_env_passes_check_env_without_warnings(server):
    env = gym.make(REMOTE_ID, address=server.address)
    try:
        assert env.spec.id == REMOTE_ID and env.spec.max_episode_steps > 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=False)  # makes every render mode from the spec
        assert not [str(w.message) for w in caught], "check_env passes without a warning"
    finally:
        env.close()


def test_remote_env_without_an_address_says_how_to_give_one():
    with pytest.raises(ValueError, match="address=None: worldsim/Remote-v0 needs the server"):
        gym.make(REMOTE_ID)


def test_remote_and_local_envs_agree_on_frames_and_info_keys(server):
    local, remote = gym.make(MAZE_ID, size=16), gym.make(REMOTE_ID, address=server.address)
    try:
        (lobs, linfo), (robs, rinfo) = local.reset(seed=3), remote.reset(seed=3)
        assert set(linfo) == set(rinfo) == set(INFO_KEYS)
        assert np.array_equal(lobs, robs) and linfo == rinfo == {**linfo, "frame": 0, "seed": 3}
        for action in np.random.default_rng(1).integers(0, 2, size=(6, 6)):
            lobs, lrew, lterm, ltrunc, linfo = local.step(action)
            robs, rrew, rterm, rtrunc, rinfo = remote.step(action)
            assert np.array_equal(lobs, robs), "the same world on the same keys"
            assert set(linfo) == set(rinfo) == set(INFO_KEYS)
            assert {k: linfo[k] for k in ("frame", "seed", "world")} == {
                k: rinfo[k] for k in ("frame", "seed", "world")
            }
            assert lrew == rrew == 0.0 and not (lterm or rterm or ltrunc or rtrunc)
        assert rinfo["world"] == "game" and rinfo["frame"] == 6 and rinfo["blocked"] is None
    finally:
        local.close()
        remote.close()


@pytest.mark.parametrize("mode", ["rgb_array", "human"])
def test_remote_render_modes(server, mode):
    env = gym.make(REMOTE_ID, address=server.address, render_mode=mode)
    try:
        obs, _ = env.reset(seed=1)
        for _ in range(3):
            obs, *_ = env.step(np.array([1, 0, 0, 0, 1, 0]))
            if mode == "human":
                assert env.render() is None and np.array_equal(displayed_frame(16, 16), obs)
            else:
                assert np.array_equal(env.render(), obs)
    finally:
        env.close()


def test_seeded_episodes_repeat_and_actions_matter(server):
    env = RemoteWorldEnv(server.address)
    try:
        actions = [np.array([1, 0, 0, 0, 0, 0], np.int8), np.array([0, 0, 0, 0, 1, 0], np.int8)] * 4
        runs = []
        for _ in range(2):
            obs, info = env.reset(seed=5)
            assert info["seed"] == 5 and obs.shape == (16, 16, 3)
            runs.append([obs] + [env.step(a)[0] for a in actions])
        assert all(np.array_equal(a, b) for a, b in zip(*runs))
        assert not np.array_equal(runs[0][0], runs[0][-1])
        with pytest.raises(ValueError, match="6 entries"):
            env.step(np.zeros(3, np.int8))
    finally:
        env.close()


def test_reset_after_a_server_restart_opens_a_new_session():
    a = Server(world_factory("game", size=16), max_sessions=2, stats_interval_s=0).start()
    env = RemoteWorldEnv(a.address, timeout_s=10)
    try:
        first, _ = env.reset(seed=2)
        old = env.client.session
        a.stop()
        b = Server(world_factory("game", size=16), bind=a.address, max_sessions=2, stats_interval_s=0).start()
        try:
            again, _ = env.reset(seed=2)
            assert env.client.session != old and np.array_equal(first, again)
            env.step(env.action_space.sample())
        finally:
            env.close()
            b.stop()
    finally:
        a.stop()
