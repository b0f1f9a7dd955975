import subprocess
import sys
from importlib.metadata import version


def test_version_flag_prints_the_installed_version():
    out = subprocess.run(
        [sys.executable, "-m", "worldsim", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"worldsim {version('worldsim')}"
