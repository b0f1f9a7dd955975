"""Flags several verbs share, each defined once: `--no-verify` (load checkpoints without their hashes)
and the bounds of `--size` (frame side in pixels)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from worldsim.errors import UserError


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
    from worldsim.checkpoint import set_verify_default  # torch: loaded when a verb runs, not for --help

    set_verify_default(False)
    try:
        yield
    finally:
        set_verify_default(True)


def check_frame_size(size: int, flag: str = "--size") -> None:
    """A frame side the game can render without exhausting memory (it allocates per pixel)."""
    from worldsim.game.config import MAX_FRAME_SIDE  # worldsim.game loads torch: not for --help

    if not 8 <= size <= MAX_FRAME_SIDE:
        raise UserError(
            f"{flag} {size}: frames must be 8 to {MAX_FRAME_SIDE} pixels a side; 64 or 128 are the usual"
        )
