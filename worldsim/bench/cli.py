"""`worldsim bench cli`: how long `worldsim --help` takes, in fresh interpreters (start-up included), and
whether it loaded torch. A benchmark line, not a test: a shared machine's load moves the figure."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from worldsim.errors import UserError

TARGET_S = 0.3  # what a person waits for a help text without noticing


def time_help(runs: int) -> list[float]:
    """Wall seconds of `python -m worldsim --help`, `runs` times, each in a new process."""
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "worldsim", "--help"], check=True, capture_output=True)
        seconds.append(time.perf_counter() - t0)
    return seconds


def loads_torch() -> bool:
    """Whether building the parser imports torch (it must not: tests/test_cli_imports.py)."""
    code = "import sys, worldsim.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def run(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: must be >= 1; 5 is the usual")
    seconds = time_help(args.runs)
    median = statistics.median(seconds)
    load = os.getloadavg()[0]
    print(
        f"worldsim --help: median {median:.3f} s over {args.runs} runs (min {min(seconds):.3f}, max "
        f"{max(seconds):.3f}; target < {TARGET_S} s; load avg {load:.2f}); torch loaded: {loads_torch()}"
    )
    return 0
