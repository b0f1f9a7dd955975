"""Flags several verbs share, each defined once: `--no-verify` (load checkpoints without their hashes)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator


def add_no_verify(p: argparse.ArgumentParser) -> None:
    """`--no-verify`: for the verbs that load checkpoints (play, eval, serve, bench)."""
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="load checkpoints without checking their content hash (a file edited on purpose; experts only)",
    )


@contextlib.contextmanager
def checkpoint_verification(args: argparse.Namespace) -> Iterator[None]:
    """Run a verb with checkpoint hash checks off if it was given `--no-verify` (restored afterwards)."""
    if not getattr(args, "no_verify", False):
        yield
        return
    from worldsim.checkpoint import set_verify_default  # imports torch: only when the flag is given

    set_verify_default(False)
    try:
        yield
    finally:
        set_verify_default(True)
