"""worldsim: a real-time neural game engine (DESIGN.md in the shared docs is the map)."""

from worldsim.world import KEY_NAMES, World

__version__ = "0.1.0"
__all__ = ["KEY_NAMES", "World", "__version__"]


def _register_envs() -> None:
    try:
        from worldsim.envs import register_envs
    except ImportError:  # gymnasium missing or envs not built yet: the library still works
        return
    register_envs()


_register_envs()
