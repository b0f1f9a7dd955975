"""Data parallelism from outside the model: process groups from torchrun's env vars, DDP wrapping, rank-0 I/O.

Run any trainer under `torchrun --nproc_per_node N -m worldsim train <stage> ...`: each process trains on
its own data (seeded by rank), gradients are averaged by DDP, and only rank 0 writes files and logs.
Without torchrun's env vars (WORLD_SIZE unset or 1) everything is a single process, as before.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from worldsim.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. world_size 1 means no process group (a plain run)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise UserError(f"WORLD_SIZE must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise UserError(f"RANK must be in [0, WORLD_SIZE={self.world_size}), got {self.rank}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, plots, metrics and shows the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """The RANK / LOCAL_RANK / WORLD_SIZE that torchrun sets (all default to a single process)."""
    env = os.environ if env is None else env
    try:
        return DistInfo(
            rank=int(env.get("RANK", 0)),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env.get("WORLD_SIZE", 1)),
        )
    except ValueError as e:
        raise UserError(
            f"RANK, LOCAL_RANK and WORLD_SIZE must be integers ({e}); launch with torchrun"
        ) from e


def setup_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) and pick this rank's device.

    On CUDA each rank takes cuda:LOCAL_RANK (a `--device cuda:N` is overridden under torchrun: one GPU per
    process is what DDP wants). Returns the job info and the device to train on. Idempotent.
    """
    info = info_from_env()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {info.local_rank} but torch sees {torch.cuda.device_count()} GPU(s); "
                "use --nproc_per_node <= the GPU count"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # The rank-0 validation at startup and checkpoint writes may hold the others up for a while.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        log.info("rank %d/%d joined a %s process group on %s", info.rank, info.world_size, backend, device)
    if not info.is_main:  # one voice: the other ranks say only what goes wrong
        logging.getLogger("worldsim").setLevel(logging.WARNING)
    return info, device


def parallelize(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """The module to train: `model` itself in a plain run, DDP(model) under torchrun.

    DDP broadcasts rank 0's parameters at construction, so every rank starts from the same weights, and
    averages gradients in backward. Optimizers, EMA and checkpoints keep using the plain `model`.
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=device.index if ids else None)


def rank_seed(seed: int, info: DistInfo) -> int:
    """A data seed of its own per rank (rank 0 keeps `seed`, so a 1-process run draws what it always did)."""
    return seed + info.rank * 1_000_003


def agree(value: int | bool, info: DistInfo, device: torch.device, *, enabled: bool = True) -> int | bool:
    """Rank 0's `value` on every rank (for decisions made on a local clock: stop now, schedule length)."""
    if not (info.enabled and enabled):
        return value
    x = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(x, src=0)
    out = int(x.item())  # host sync: every rank acts on it
    return bool(out) if isinstance(value, bool) else out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a (scalar) tensor over all ranks, for logs that speak for the whole job."""
    if not info.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
