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
