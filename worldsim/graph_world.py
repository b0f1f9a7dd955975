"""`GraphWorld`: a `NeuralWorld` whose per-frame step, the frame function (worldsim/frame.py: all
denoising passes, the cache write, the decoder and the uint8 conversion), replays as ONE CUDA graph for
all its session slots.

Sessions join and leave without recapture: `reset(..., slots=...)` primes the slots' cache rows
eagerly (outside the graph, same tensors), and `step(keys, slots=...)` fills the static inputs of the
chosen slots and marks only them active (the other rows compute but do not advance: see frame.py).
Noise comes from the world's generator in the same order as the eager path, so replay equals eager.
A folded world (`NeuralWorld(fold=True)`, the default) keeps its pending frames in static tensors the
graph reads and updates: `steps` passes per frame, and resets only refill them (no recapture).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from worldsim.engine.graph import StepGraph
from worldsim.frame import next_frame, write_level
from worldsim.neural import NeuralWorld
from worldsim.world import World, keys_tensor


class GraphWorld(World):
    """Wrap `world` (a `NeuralWorld`, reachable as `.world` for everything that is not the World API).

    `graph=None` or True: one CUDA graph (CUDA only). `graph=False` calls the captured function eagerly
    (all rows, the active mask): the reference the tests hold the graph to on a CPU; the world factory
    never returns that (on a CPU it returns the `NeuralWorld` itself).

    `kernels=True` swaps the DiT's blocks to the fused adaLN + LayerNorm Triton kernel (in place, see
    fuse.py); off by default until the benchmark shows where it wins.
    """

    def __init__(self, world: NeuralWorld, *, graph: bool | None = None, kernels: bool = False):
        if graph is not False and world.device.type != "cuda":
            raise ValueError(
                f"GraphWorld needs a CUDA world for its graph, got device {world.device} "
                "(step the NeuralWorld itself, or graph=False for the eager reference)"
            )
        self.world = world
        self.kernels = kernels
        if kernels:
            from worldsim.engine.fuse import fuse_adaln  # the fused kernel imports triton (heavy, optional)

            fuse_adaln(world.dit)
        self.key_names, self.height, self.width = world.key_names, world.height, world.width
        self.batch_size, self.device = world.batch_size, world.device
        cfg = world.cfg
        B, C, (h, w) = world.batch_size, cfg.latent_channels, cfg.latent_hw
        dev, dt = world.device, world.dtype
        # static inputs, filled in place before every replay
        self._noise = torch.zeros(B, 1, C, h, w, device=dev, dtype=dt)  # [B,1,C,h,w]
        self._write_noise = torch.zeros_like(self._noise) if cfg.write_noise else None
        self._keys = torch.zeros(B, 1, world.num_keys, device=dev, dtype=torch.bool)  # [B,1,K]
        self._active = torch.zeros(B, device=dev, dtype=torch.long)  # [B]
        self._all = torch.ones(B, device=dev, dtype=torch.long)
        self._null = torch.ones(B, 1, device=dev, dtype=torch.bool)  # [B,1] the guidance branch's keys
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}
        self.graph = StepGraph(self._step_all, enabled=graph is not False)

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: torch.device | str | None = None,
        graph: bool | None = None,
        kernels: bool = False,
        weights: str = "fp",
        **kwargs,
    ) -> GraphWorld:
        """`NeuralWorld.from_checkpoint(...)` wrapped in the engine (kwargs go to NeuralWorld);
        `weights="int8"` runs the DiT's blocks on 8-bit weights (quant.py; int8 files load either way)."""
        world = NeuralWorld.from_checkpoint(name_or_path, device=device, weights=weights, **kwargs)
        return cls(world, graph=graph, kernels=kernels)

    # the captured function ------------------------------------------------------------------------
    def _step_all(self) -> torch.Tensor:
        w = self.world
        return next_frame(
            w.dit, w.cache, w.sampler, w.schedule, self._keys, self._noise, active=self._active,
            pending=w.pending, guidance=w.guidance, drop=self._null, level=write_level(w.cfg, self._keys),
            write_noise=self._write_noise, passes=w.passes, attend=w.attend, decode=w.decode,
        )  # [B,H,W,3] uint8  # fmt: skip

    def _mask(self, rows: torch.Tensor | None, key: tuple[int, ...] | None) -> torch.Tensor:
        if rows is None:
            return self._all
        m = self._masks.get(key)  # type: ignore[arg-type]
        if m is None:  # built on the device once per distinct slot list
            m = torch.zeros(self.batch_size, device=self.device, dtype=torch.long).index_fill_(0, rows, 1)
            if len(self._masks) < 256:
                self._masks[key] = m  # type: ignore[index]
        return m

    @torch.inference_mode()
    def prepare(self) -> None:
        """Capture the graph now (else the first step does it: ~1 s once). Safe in any cache state."""
        if self.graph.enabled and not self.graph.captured:
            self._active.zero_()  # warm-up passes must not move any frame counter
            self.graph.capture()

    # World API --------------------------------------------------------------------------------------
    def reset(self, seeds=None, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        return self.world.reset(seeds, slots=slots)

    def reset_from_frames(self, frames, keys=None, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        return self.world.reset_from_frames(frames, keys, slots=slots)

    @torch.inference_mode()
    def step(self, keys: torch.Tensor, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        w = self.world
        rows, R = w.slot_rows(slots)
        k = keys_tensor(keys, R, self.num_keys, self.device)  # [R,K]
        cfg = w.cfg
        C, (h, w_) = cfg.latent_channels, cfg.latent_hw
        gen = w.generator  # drawn in the eager path's order: step noise, then write noise
        self.prepare()
        if rows is None:  # straight into the static inputs
            torch.randn(self._noise.shape, generator=gen, out=self._noise)
            if self._write_noise is not None:
                torch.randn(self._write_noise.shape, generator=gen, out=self._write_noise)
            self._keys[:, 0].copy_(k)
        else:
            shape = (R, 1, C, h, w_)
            self._noise.index_copy_(
                0, rows, torch.randn(shape, device=self.device, dtype=w.dtype, generator=gen)
            )
            if self._write_noise is not None:
                wnoise = torch.randn(shape, device=self.device, dtype=w.dtype, generator=gen)
                self._write_noise.index_copy_(0, rows, wnoise)
            self._keys.zero_()
            self._keys[:, 0].index_copy_(0, rows, k)
        self._active.copy_(self._mask(rows, tuple(int(s) for s in slots) if slots is not None else None))
        frames = self.graph()  # [B,H,W,3]
        # a copy: the graph's output buffer is overwritten by the next replay
        return frames.clone() if rows is None else frames.index_select(0, rows)

    def describe(self) -> dict:
        engine = "cuda-graph" if self.graph.enabled else "eager"
        return {**self.world.describe(), "engine": engine + ("+kernels" if self.kernels else "")}

    @property
    def name(self) -> str:  # the world it runs; describe()["engine"] says how
        return self.world.name

    @property
    def cache(self):
        """The KV cache the graph reads and writes (the long-run probe checks it for NaN)."""
        return self.world.cache

    def close(self) -> None:
        self.graph.reset()
        self.world.close()
