"""The GPU drivers in scripts/: they run only on a lent GPU machine, so what can be checked here is checked
here: every one parses, and `session_gpu.sh` refuses a bad request before it starts anything."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_gpu_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _session(tmp_path, *args, **env):
    run, out = tmp_path / "run", tmp_path / "out"
    full = {
        **os.environ,
        "OUT": str(out),
        "RUN": str(run),
        "PYTHONPATH": os.environ.get("PYTHONPATH") or ".",
        **env,
    }
    r = subprocess.run(["bash", str(ROOT / "scripts" / "session_gpu.sh"), *args], capture_output=True,
                       text=True, env=full, timeout=60)  # fmt: skip
    return r, run, out


def test_session_refuses_an_eval_of_a_run_it_does_not_start_before_starting_any(tmp_path):
    r, run, out = _session(tmp_path, "start", JOBS="sf", EVAL_AFTER="sf2")
    assert r.returncode == 2
    assert 'EVAL_AFTER: sf2 is not a student run of JOBS="sf"' in r.stdout
    assert not list(run.iterdir())  # no run was started: nothing in its folder
    assert "EVAL_AFTER" in (out / "start.log").read_text()


def test_session_without_a_verb_prints_its_usage(tmp_path):
    r, _, _ = _session(tmp_path)
    assert r.returncode == 2 and "session_gpu.sh start" in r.stdout and "bundle" in r.stdout
