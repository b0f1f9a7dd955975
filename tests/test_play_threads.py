"""`worldsim play` steps a CPU world with one torch thread unless --threads says otherwise: the
embedded server (--server) gets it, and in-process play (the default) sets it only while playing."""

import pytest
import torch
from worldsim.controllers.sources import ClientSource, WorldSource

from worldsim.cli import build_parser, main
from worldsim.cli.play import build_source, torch_threads


def parse(*argv):
    return build_parser().parse_args(["play", *argv])


@pytest.mark.parametrize(
    "argv, device, expected",
    [
        ((), "cpu", 1),
        ((), "cuda", None),
        ((), "cuda:1", None),
        (("--threads", "3"), "cpu", 3),
        (("--threads", "0"), "cpu", None),  # 0: torch's default
        (("--threads", "2"), "cuda", 2),
    ],
)
def test_threads_default_to_one_on_cpu(argv, device, expected):
    assert torch_threads(parse(*argv), device) == expected


def test_embedded_server_on_cpu_gets_one_thread():
    args = parse("--world", "game", "--size", "16", "--device", "cpu", "--server")
    source, server = build_source(args, "game", None)
    try:
        assert isinstance(source, ClientSource) and server is not None
        assert server.torch_threads == 1
    finally:
        server.stop()
    args = parse("--world", "game", "--size", "16", "--device", "cpu", "--threads", "0", "--server")
    source, server = build_source(args, "game", None)
    try:
        assert server.torch_threads is None
    finally:
        server.stop()


def test_in_process_play_restores_the_thread_count(capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        argv = ["play", "--world", "game", "--size", "16", "--headless", "--frames", "3"]  # in process
        assert main(argv) == 0
        assert "3 frames" in capsys.readouterr().out
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for flags in ((), ("--no-server",)):  # the default, and the old flag that asked for it
        source, server = build_source(parse("--world", "game", "--size", "16", *flags), "game", None)
        assert isinstance(source, WorldSource) and server is None
        source.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threads", "-1"], "--threads"),
        (["--connect", "tcp://127.0.0.1:1", "--threads", "1"], "--connect"),
    ],
)
def test_bad_thread_flags_are_one_line_errors(argv, message, capsys):
    assert main(["play", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
