"""Dense vs sparse attention rows of the neural benchmark (docs/design.md §8): the same shapes and the same random
weights, only the attention mask differs; `worldsim bench --world neural --compare` ends with them and
`python -m worldsim.bench.sparse` runs them alone."""

from __future__ import annotations

import logging

import torch

from worldsim.bench.timing import DTYPES, fps_text, measure_world, reset_memory
from worldsim.engine.attention import cached_attention
from worldsim.errors import UserError
from worldsim.graph_world import GraphWorld
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.neural import NeuralWorld

log = logging.getLogger(__name__)


SPARSE_WINDOWS = (32, 128)  # the windows the issue asks dense vs sparse at
SPARSE_LOCAL, SPARSE_GLOBAL_EVERY = 8, 3  # local layers see 8 frames; base (depth 9): layers 2, 5, 8 global


def sparse_variant(cfg, local_window: int, global_every: int):
    """`cfg` with local-window layers of `local_window` frames and every `global_every`-th layer global;
    the parameters are the same, so a dense checkpoint's weights load into it (to fine-tune the mask)."""
    try:
        return cfg.replace(local_window=local_window, global_every=global_every)
    except ValueError as e:
        raise UserError(f"sparse variant of {cfg.name}: {e}") from e


def random_world(
    cfg,
    *,
    device: torch.device,
    sessions: int,
    dtype: torch.dtype,
    graph: bool,
    kernels: bool,
    label: str,
    attention: str | None = None,
):
    """A neural world of config `cfg` with random weights (seed 0: dense and sparse share them);
    `attention="triton"`: cached reads through the ring kernel, which skips the frames the mask hides."""

    torch.manual_seed(0)
    with torch.device(device):
        dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    start = torch.randn(4, 1, cfg.latent_channels, *cfg.latent_hw)
    world = NeuralWorld(
        dit,
        ae,
        cfg,
        batch_size=sessions,
        device=device,
        dtype=dtype,
        start_latents=start,
        checkpoint_name=label,
        attend=cached_attention(attention or cfg.attention),
    )
    return GraphWorld(world, graph=graph, kernels=kernels) if graph or kernels else world


def sparse_rows(
    *, device: torch.device, seconds: float, quick: bool, modes: tuple[str, ...], dtype: str, on_row=None
) -> list[dict]:
    """Dense vs sparse rows at windows 32 and 128 (`quick`: the test preset at windows 8 and 16, local 2),
    per mode (eager / graph / graph+k: fused adaLN / graph+ring: the Triton ring attention, which is where
    sparsity pays: SDPA computes the masked scores anyway) and sessions 1/16/64 (quick: 1/2)."""

    base = get_preset("test" if quick else "base")
    windows, local, every = ((8, 16), 2, 2) if quick else (SPARSE_WINDOWS, SPARSE_LOCAL, SPARSE_GLOBAL_EVERY)
    rows: list[dict] = []
    for W in windows:
        dense = base.replace(window=W)
        for cfg in (dense, sparse_variant(dense, local, every)):
            for S in (1, 2) if quick else (1, 16, 64):
                for mode in modes:
                    reset_memory(device)
                    label = f"{cfg.name} w{W} " + (f"L{local}/G{every}" if cfg.sparse else "dense")
                    try:
                        world = random_world(
                            cfg, device=device, sessions=S, dtype=DTYPES[dtype], graph=mode != "eager",
                            kernels=mode == "graph+k", label=label,
                            attention="triton" if mode == "graph+ring" else None,
                        )  # fmt: skip
                        r = measure_world(world, seconds)
                        world.close()
                        del world
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one row, not the table
                        log.error("%s S=%d %s failed: %s", label, S, mode, e)
                        r = {"sessions": S, "error": f"{type(e).__name__}: {e}"[:300]}
                    row = {
                        "model": label,
                        "dtype": dtype,
                        "mode": mode,
                        "window": W,
                        "sparse": cfg.sparse,
                        **r,
                    }
                    rows.append(row)
                    log.info("%s %s S=%d %s: %s frames/s", label, dtype, S, mode, fps_text(r.get("fps")))
                    if on_row is not None:
                        on_row(row)
    return rows
