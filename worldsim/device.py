"""The one device default: CUDA when torch sees a GPU, else the CPU; and a device flag checked for people."""

from __future__ import annotations

import torch

from worldsim.errors import UserError


def default_device() -> torch.device:
    """cuda when torch sees a GPU, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """None -> `default_device()`. A name that is no device, or CUDA where torch sees no GPU, is a UserError."""
    if name is None:
        return default_device()
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu")
    return dev
