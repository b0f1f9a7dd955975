"""A non-editable install carries the shipped models: build the wheel, install it into a fresh venv (the
machine's torch and other dependencies seen through --system-site-packages, so nothing is downloaded), and
play neural frames from it with no source tree in sight."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, cwd, timeout=300):
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # a source tree must not shadow the install
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{' '.join(map(str, args))}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tracked tree")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # the tracked files only: what a clone or an sdist holds
    files = _run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp / "dist")], tmp)  # fmt: skip
    env = tmp / "venv"
    venv.create(env, system_site_packages=True, with_pip=False)
    py = env / "bin" / "python"
    wheel = next((tmp / "dist").glob("worldsim-*.whl"))
    # pip of this interpreter, aimed at the venv's site-packages: the venv needs no pip of its own
    site = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp
    ).stdout.strip()
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)], tmp)
    return py, tmp


def test_the_wheel_carries_the_models_and_plays_them(installed):
    py, tmp = installed
    where = _run([str(py), "-c", "import worldsim, worldsim.checkpoint as c; print(worldsim.__file__); "
                  "print(c.checkpoints_dir()); print(c.default_checkpoint('cpu'))"], tmp).stdout.split()  # fmt: skip
    assert str(ROOT) not in where[0], f"the installed package must be used, not the source tree: {where}"
    assert where[1].startswith(str(Path(where[0]).parent)) and where[2].endswith(".safetensors"), where
    out = _run([str(py), "-m", "worldsim", "play", "--headless", "--frames", "10", "--device", "cpu"], tmp)
    text = out.stdout + out.stderr
    assert f"playing the neural world: checkpoint {where[2]}" in text, text[-1500:]  # not the game fallback
    assert "neural: 10 frames" in out.stdout, text[-1500:]


def test_import_kernels_is_not_ours_in_the_install(installed):
    py, tmp = installed
    probe = "import importlib.util as u; print(u.find_spec('kernels') is None or 'worldsim' not in str(u.find_spec('kernels').origin))"
    assert _run([str(py), "-c", probe], tmp).stdout.strip() == "True"
