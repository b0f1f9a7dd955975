"""A training run's folder: a failed start leaves none, metrics.jsonl grows as training goes, and Ctrl-C
(SIGINT to a real `python3 -m worldsim train teacher` process) saves a state that --resume continues."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import train_args
from waiting import wait_for

from worldsim.errors import UserError
from worldsim.train import autoencoder as ae_train
from worldsim.train import resume, self_forcing, teacher

REPO = Path(__file__).resolve().parent.parent


def _rows(out: Path) -> list[dict]:
    p = out / resume.METRICS_FILE
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


@pytest.mark.parametrize(
    "module, flags",
    [
        (teacher, {"autoencoder": "missing/autoencoder.pt"}),
        (teacher, {"init": "missing/teacher.pt"}),
        (ae_train, {"init": "missing/autoencoder.pt"}),
        (self_forcing, {"teacher": "missing/teacher.pt"}),
    ],
)
def test_failed_start_leaves_no_folder(module, flags, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="missing"):
        module.train(train_args(module, out, steps=2, batch=1, **flags))
    assert not out.exists()


def test_failed_start_keeps_a_folder_that_was_there(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        teacher.train(train_args(teacher, tmp_path, steps=2, autoencoder="missing/autoencoder.pt"))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_teacher_metrics_rows(ae_path, tmp_path):
    teacher.train(train_args(teacher, tmp_path, autoencoder=ae_path, steps=20, batch=2, log_every=10,
                             store_trajectories=4, store_length=32))  # fmt: skip
    rows = _rows(tmp_path)
    steps = [r for r in rows if not r.get("final")]
    assert [r["step"] for r in steps] == [1, 10, 20]
    for r in steps:
        assert {"step", "loss", "lr", "clips_per_second", "time_s"} <= set(r), r
        assert r["loss"] > 0 and r["lr"] > 0 and r["clips_per_second"] > 0
        assert ("ema_val_loss" in r) == (r["step"] % 10 == 0), r  # the EMA validation at --log-every
    assert rows[-1]["final"] and rows[-1]["step"] == 20 and rows[-1]["ema_val_loss"] > 0
    assert [r["time_s"] for r in rows] == sorted(r["time_s"] for r in rows)


def test_autoencoder_metrics_rows(tmp_path):
    ae_train.train(train_args(ae_train, tmp_path, steps=4, batch=2, log_every=2, heldout=4))
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 4]
    assert all({"loss", "lr"} <= set(r) for r in rows)
    assert [("heldout_psnr_db" in r) for r in rows] == [False, True, True]


def test_ctrl_c_saves_a_state_that_resume_continues(ae_path, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "worldsim", "train", "teacher", "--preset", "test", "--device", "cpu",
           "--autoencoder", str(ae_path), "--out", str(out), "--steps", "100000", "--batch", "2",
           "--log-every", "10", "--store-trajectories", "4", "--store-length", "32", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: len(_rows(out)) >= 2 or proc.poll() is not None, 120, "metrics.jsonl rows")
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, log  # the state is saved; the exit status still says it did not finish
    assert "Traceback" not in log and "interrupted at step" in log, log
    state = torch.load(out / "teacher.pt", weights_only=True)
    stopped = state["step"]
    assert stopped >= 10 and state["schedule_total"] == 100000
    card = json.loads((out / "teacher.json").read_text())
    assert card["interrupted"] and card["steps"] == stopped and card["budget"]["steps"] == stopped
    assert resume.load_compact(resume.compact_path(out, "teacher"))["step"] == stopped

    m = teacher.train(train_args(teacher, out, steps=100000, resume=True, stop_after=3))
    assert m["steps"] == stopped + 3 and not m["interrupted"] and m["budget"]["runs"] == 2
    again = torch.load(out / "teacher.pt", weights_only=True)
    assert all(int(st["step"]) == stopped + 3 for st in again["opt"]["state"].values())  # moments went on
