"""worldsim: a real-time neural game engine (docs/design.md is the map)."""

import os

# OpenMP's default busy-wait makes batched torch work 10-80x slower on a small, shared CPU (measured on
# 2 cores with a server and clients beside it). It only takes effect if set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from worldsim.world import KEY_NAMES, World  # noqa: E402

__version__ = "0.1.0"
__all__ = ["KEY_NAMES", "World", "__version__"]


def _register_envs() -> None:
    from worldsim.envs import register_envs  # gymnasium (heavy) and every world come with it

    register_envs()


_register_envs()
