"""The Gymnasium env over a remote lockstep session passes check_env against a real server."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from worldsim.controllers.gym_remote import RemoteWorldEnv

from worldsim.serve import Server, world_factory


@pytest.fixture(scope="module")
def server():
    s = Server(world_factory("game", size=16), max_sessions=4, stats_interval_s=0).start()
    yield s
    s.stop()


def test_check_env_passes_on_loopback(server):
    env = RemoteWorldEnv(server.address, max_episode_steps=50)
    try:
        check_env(env, skip_render_check=False)
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
