"""worldsim: a real-time neural game engine (docs/design.md is the map)."""

import os

# OpenMP's default busy-wait makes batched torch work 10-80x slower on a small, shared CPU (measured on
# 2 cores with a server and clients beside it). It only takes effect if set before torch loads. A command
# that computes alone takes the spin back (worldsim/cli: `wait_policy`); a policy the user set stays.
OMP_POLICY_OURS = "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# The repository keeps kernels/ and controllers/ beside this package; an install puts them inside it, as
# worldsim.kernels and worldsim.controllers (pyproject.toml: package-dir), so no generic top-level name
# is taken. Run from a source tree, this finder gives those two names the same folders.
_BESIDE = {f"worldsim.{n}": Path(__file__).resolve().parent.parent / n for n in ("kernels", "controllers")}


class _BesideFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        folder = _BESIDE.get(name)
        if folder is None or not (folder / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


if not (Path(__file__).resolve().parent / "kernels").is_dir():  # a source tree, not an install
    sys.meta_path.append(_BesideFinder())

__version__ = "0.1.0"
__all__ = ["KEY_NAMES", "World", "__version__"]


def __getattr__(name: str):
    # KEY_NAMES and World come with torch (worldsim.world): loaded on first use, so that `worldsim --help`
    # and a headless server start without it
    if name in ("KEY_NAMES", "World"):
        from worldsim import world

        return getattr(world, name)
    raise AttributeError(f"module 'worldsim' has no attribute {name!r}")


class _ThenRegister(importlib.abc.Loader):
    """gymnasium's own loader, then worldsim's ids registered into the module it made."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        from worldsim.registration import register

        register(module)  # by name: the worlds and torch load when an env is made

    def __getattr__(self, name: str):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)


class _RegisterWithGymnasium(importlib.abc.MetaPathFinder):
    """Registers the ids when gymnasium is imported, before or after worldsim: importing gymnasium here
    would cost `worldsim --help` and a headless server half their start-up (it loads numpy and more)."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        sys.meta_path.remove(self)  # once: the finders after this one find the real package
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


if "gymnasium" in sys.modules:
    from worldsim.registration import register as _register

    _register(sys.modules["gymnasium"])
else:
    sys.meta_path.insert(0, _RegisterWithGymnasium())
