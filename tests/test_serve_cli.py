"""`worldsim serve` and `worldsim keys` from the command line."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from worldsim.controllers.client import Client

from worldsim.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_a_public_bind_without_keys(capsys):
    assert main(["serve", "--bind", "tcp://0.0.0.0:5999"]) == 2
    err = capsys.readouterr().err
    assert "--keys DIR" in err and "--insecure" in err and "Traceback" not in err


def test_keys_refuses_to_overwrite_a_client(tmp_path, capsys):
    assert main(["keys", str(tmp_path)]) == 0
    assert (tmp_path / "authorized" / "client.key").exists() and (tmp_path / "server.key_secret").exists()
    assert main(["keys", str(tmp_path)]) == 2
    assert "--client NAME" in capsys.readouterr().err
    assert main(["keys", str(tmp_path), "--client", "bob"]) == 0
    assert len(list((tmp_path / "authorized").glob("*.key"))) == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_ctrl_c_or_term(tmp_path, sig):
    addr = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "worldsim", "serve", "--bind", addr, "--size", "16", "--max-sessions", "2",
           "--record-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Client(addr, mode="lockstep", timeout_s=60) as c:  # waits for the server to come up
            c.connect()
            assert c.step([1, 0, 0, 0, 0, 0]).image.shape == (16, 16, 3)
            proc.send_signal(sig)  # while the client is still connected: it gets a bye
            out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "serving game 16x16 on " + addr in out and "closed (shutdown)" in out and "stopped" in out
    assert len(list(tmp_path.glob("*.wsrec"))) == 1, (out, list(tmp_path.iterdir()))


def test_realtime_client_survives_a_server_crash_and_restart():
    addr = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "worldsim", "serve", "--bind", addr, "--size", "16"]

    def frames(c: Client, n: int, timeout_s: float = 60) -> int:
        got, deadline = 0, time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            c.send_keys([0, 0, 0, 0, 1, 0])
            got += c.poll_frame(timeout_ms=50) is not None
        return got

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        with Client(addr, timeout_s=60) as c:
            c.connect()
            old = c.session
            assert frames(c, 5) == 5
            first.kill()  # no bye: the client only learns from the next server's unknown_session
            first.wait(30)
            second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while c.session == old and time.monotonic() < deadline:
                frames(c, 1, timeout_s=0.2)
            assert c.session != old, "no new session after the restart"
            assert frames(c, 5) == 5
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)


def test_keys_are_private_to_their_owner(tmp_path):
    d = tmp_path / "k"
    (d / "authorized").mkdir(parents=True)  # existing folders others could read are tightened
    for p in (d, d / "authorized"):
        p.chmod(0o755)
    assert main(["keys", str(d)]) == 0
    assert main(["keys", str(d), "--client", "bob"]) == 0

    def mode(p):
        return p.stat().st_mode & 0o777

    assert mode(d) == 0o700 and mode(d / "authorized") == 0o700
    secrets = sorted(p.name for p in d.glob("*.key_secret"))
    assert secrets == ["bob.key_secret", "client.key_secret", "server.key_secret"]
    assert all(mode(d / s) == 0o600 for s in secrets)


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["serve", "--bind", "garbage"], "is not a ZeroMQ address: use tcp://HOST:PORT"),
        (["serve", "--bind", "tcp://127.0.0.1"], "the port must be 0-65535 or *"),
        (["serve", "--device", "bogus"], "--device bogus: not a device name"),
        (["serve", "--level", "nope"], "--level 'nope': use 'default' or an int"),
        (["serve", "--size", "100000"], "--size 100000: frames must be 8 to 1024"),
        (
            ["play", "--connect", "garbage", "--headless", "--frames", "3"],
            "--connect 'garbage' is not a ZeroMQ",
        ),
        (["play", "--connect", "tcp://localhost", "--headless", "--frames", "3"], "port must be 1-65535"),
        (
            ["play", "--world", "game", "--headless", "--frames", "3", "--record", "no/such/dir/x.wsrec"],
            "folder no/such/dir does not exist",
        ),
    ],
)
def test_serving_mistakes_are_one_line_errors_with_the_fix(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert "reachable from other machines" not in err  # a malformed bind is not a public one


def test_serve_on_cuda_without_a_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        assert main(["serve", "--device", f"cuda:{torch.cuda.device_count()}"]) == 2
        assert "GPU(s): use cuda:0.." in capsys.readouterr().err
        return
    assert main(["serve", "--world", "game", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert ("torch sees no GPU" in err or "CPU-only build" in err) and "--device cpu" in err
    assert err.count("\n") == 1
