"""The one world factory: a `World` from its name, for play, serve, bench, eval and the Gymnasium envs.

"game" is the real game (`GameWorld`; on the CPU unless a device is given: one game renders faster
there than a GPU launch costs). "gym:ID" is a Gymnasium env (`GymWorld`: gym:CartPole-v1,
gym:ALE/Breakout-v5 with ale-py). "neural" is the fastest neural world the engine knows for the device
(`fastest_world`): a `GraphWorld` (one CUDA graph per frame) on CUDA, a `NeuralWorld` stepped eagerly on a
CPU. What a world is, each says itself: `World.describe()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from worldsim.device import default_device
from worldsim.engine.attention import cached_attention
from worldsim.engine.dtype import engine_dtype
from worldsim.errors import UserError
from worldsim.game import GameWorld
from worldsim.graph_world import GraphWorld
from worldsim.gym_env import GYM_PREFIX
from worldsim.gym_world import GymWorld  # gymnasium itself loads only when a gym world is made
from worldsim.neural import NeuralWorld
from worldsim.world import World

WORLDS = ("game", "neural", "gym:ID")
WorldFactory = Callable[[int], World]  # batch size (= max sessions) -> World


def fastest_world(
    checkpoint: str | os.PathLike | None = None,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    **kwargs,
) -> World:
    """The fastest neural world this engine knows for `device`, as measured on the H100 (docs/bench/):
    on CUDA one CUDA graph per frame with the fused adaLN + LayerNorm kernel (faster at every preset and
    session count we timed) and, for sparse checkpoints, the Triton ring attention (the only path where
    the sparse mask skips work); fp weights (8-bit was slower in the graph at our sizes); the cache write
    folded into the next frame's first pass everywhere. On a CPU the eager `NeuralWorld`, in bf16 where
    that CPU's bf16 matmuls win (`cpu_prefers_bf16`). `kernels=` (CUDA) / `attention=` / `dtype=` in
    kwargs override the choice; the rest go to `NeuralWorld.from_checkpoint`."""
    from worldsim.kernels.common import (
        triton_importable,  # the kernels package imports triton (heavy, optional)
    )

    device = torch.device(device) if device is not None else default_device()
    if kwargs.get("dtype") is None:
        kwargs["dtype"] = engine_dtype(device)
    attention = kwargs.pop("attention", None)
    if device.type == "cuda":
        fast = triton_importable()
        kernels = kwargs.pop("kernels", fast)
        world = GraphWorld.from_checkpoint(
            checkpoint, device=device, batch_size=batch_size, kernels=kernels, **kwargs
        )
        neural = world.world
        if attention is None and fast and neural.cfg.sparse:
            attention = "triton"
    else:
        if kwargs.pop("kernels", False):
            raise UserError("kernels=True needs CUDA (the fused Triton kernel); leave it off on a CPU")
        world = neural = NeuralWorld.from_checkpoint(
            checkpoint, device=device, batch_size=batch_size, **kwargs
        )
    if attention is not None:
        neural.attend = cached_attention(attention)
    return world


def make_world(
    kind: str = "neural",
    *,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    size: int | tuple[int, int] = 64,
    level: str | int = "default",
    **neural_kwargs,
) -> World:
    """A world by name: "game" (`size`, `level`), "neural" (`checkpoint`, `neural_kwargs` as
    `fastest_world` takes them; the frame size comes from the checkpoint) or "gym:ID" (`size`;
    `neural_kwargs` may hold GymWorld's frameskip and repeat_action_probability)."""
    check_kind(kind)
    if kind.startswith(GYM_PREFIX):
        if checkpoint is not None or level != "default":
            raise UserError(f"--world {kind}: --checkpoint and --level are for the neural and game worlds")
        return GymWorld(
            kind[len(GYM_PREFIX) :], batch_size=batch_size, size=size, device=device or "cpu", **neural_kwargs
        )
    if kind == "game":
        return GameWorld(batch_size=batch_size, size=size, level=level, device=device or "cpu")
    return fastest_world(checkpoint, device=device, batch_size=batch_size, **neural_kwargs)


def check_kind(kind: str) -> None:
    """A one-line error unless `kind` names a world: game, neural or gym:ID."""
    if kind not in ("game", "neural") and not (kind.startswith(GYM_PREFIX) and len(kind) > len(GYM_PREFIX)):
        raise UserError(f"--world must be one of {', '.join(WORLDS)} (e.g. gym:CartPole-v1), got {kind!r}")


def world_factory(kind: str = "game", **kwargs) -> WorldFactory:
    """`batch_size -> World` for `make_world(kind, **kwargs)` (a server builds its worlds when it starts)."""
    check_kind(kind)

    def make(batch_size: int = 1) -> World:
        return make_world(kind, batch_size=batch_size, **kwargs)

    return make
