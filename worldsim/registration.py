"""Gymnasium ids for the worlds, registered by name (entry points as strings), so `import worldsim` loads
neither torch nor the worlds until an env is made."""

from __future__ import annotations

from types import ModuleType

MAZE_ID = "worldsim/Maze-v0"
NEURAL_ID = "worldsim/Neural-v0"
REMOTE_ID = "worldsim/Remote-v0"
MAX_EPISODE_STEPS = 1000


def register(gym: ModuleType) -> None:
    """Register the ids with the `gymnasium` module `gym` (safe to call again)."""
    for env_id, entry in (
        (MAZE_ID, "worldsim.envs:make_maze"),
        (NEURAL_ID, "worldsim.envs:make_neural"),
        (REMOTE_ID, "worldsim.controllers.gym_remote:make_remote"),  # address="tcp://host:port"
    ):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=MAX_EPISODE_STEPS)
