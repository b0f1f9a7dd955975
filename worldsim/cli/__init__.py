"""`worldsim <verb>`: each verb lives in its own module under worldsim/cli/ with `register(sub)`.

Verb modules keep heavy imports (torch, pygame, zmq) inside their handlers so that `--help` is fast:
building the parser loads none of them (tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import worldsim
from worldsim.cli.options import checkpoint_verification
from worldsim.errors import UserError

# Modules that register verbs, in the order `--help` lists them.
VERB_MODULES = (
    "worldsim.cli.play",
    "worldsim.cli.record",
    "worldsim.cli.collect",
    "worldsim.cli.train",
    "worldsim.cli.eval",
    "worldsim.cli.serve",
    "worldsim.cli.bench",
)


def version() -> str:
    """The installed distribution's version (a source tree that was never installed says so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("worldsim")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldsim",
        description="worldsim: a real-time neural game engine. Play, record, train, evaluate, serve.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"worldsim {version()}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def computes_alone(args: argparse.Namespace) -> bool:
    """A command whose process steps one world with no server, client or window beside it: eval, the
    neural and game benches, headless play without a server."""
    if args.verb == "eval" or (args.verb == "bench" and getattr(args, "target", None) in ("neural", "game")):
        return True
    return (
        args.verb == "play"
        and bool(getattr(args, "headless", False))
        and not (getattr(args, "server", False) or getattr(args, "connect", None))
    )


def wait_policy(args: argparse.Namespace, environ=None, modules=None) -> str | None:
    """OpenMP's active wait for a command that computes alone, set before torch loads; returns the policy
    set (None: left as it was). worldsim's passive default (worldsim/__init__.py) is for a CPU shared with
    a server, clients or a window; alone on 2 cores it made `tiny-student` steps 2.4x slower (10.3 against
    25.0 frames/s at 2 threads). A policy the user set, or torch already loaded, leaves it."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "torch" in modules or not worldsim.OMP_POLICY_OURS or not computes_alone(args):
        return None
    environ["OMP_WAIT_POLICY"] = "ACTIVE"
    return "ACTIVE"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None):
        wait_policy(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "device", None) is not None:  # every verb's --device, checked once up front
            from worldsim.device import resolve_device  # torch: only a verb that runs loads it

            resolve_device(args.device)
        with checkpoint_verification(args):
            return int(args.func(args) or 0)
    except UserError as e:
        print(f"worldsim {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
