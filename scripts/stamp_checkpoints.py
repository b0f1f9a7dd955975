"""Add the content hash to checkpoints written before worldsim stored one (no tensor changes).

python scripts/stamp_checkpoints.py [NAME|PATH ...]   # default: every shipped checkpoint
"""

from __future__ import annotations

import logging
import sys

from worldsim.checkpoint import file_sha256, resolve_checkpoint, shipped_checkpoints, stamp_content_hash
from worldsim.errors import UserError


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    for name in argv or shipped_checkpoints():
        try:
            stamped = stamp_content_hash(name)
        except UserError as e:
            print(f"stamp: error: {e}", file=sys.stderr)
            return 2
        path = resolve_checkpoint(name)
        print(f"{path}: {'stamped' if stamped else 'already has a content hash'}; sha256 {file_sha256(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
