"""The one device default (CUDA when torch sees a GPU, else the CPU) and the one check of a device name
from the command line: it parses, is a kind worldsim runs on (cpu, cuda), and exists on this machine.
Every verb's `--device` goes through it (worldsim/cli/__init__.py)."""

from __future__ import annotations

import torch

from worldsim.errors import UserError


def default_device() -> torch.device:
    """cuda when torch sees a GPU, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


KINDS = ("cpu", "cuda")


def resolve_device(name: str | torch.device | None, *, flag: str = "--device") -> torch.device:
    """None -> cuda when torch sees a GPU, else cpu; a named device must exist here (a UserError naming
    `flag`, the value and the fix otherwise)."""
    if name is None:
        return default_device()
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{flag} {name}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type not in KINDS:
        raise UserError(f"{flag} {name}: worldsim runs on cpu or cuda; use --device cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise UserError(
                f"{flag} {name}: this torch ({torch.__version__}) is a CPU-only build; use --device cpu, "
                f"or install a CUDA build of torch"
            )
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(f"{flag} {name}: torch sees no GPU on this machine; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise UserError(f"{flag} {name}: torch sees {n} GPU(s): use cuda:0..cuda:{n - 1}")
    return dev
