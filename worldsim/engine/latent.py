"""`LatentEngine`: the latent-only block step (no autoencoder) of any DiT config, eager or graphed.

For shapes our `NeuralWorld` does not serve (multi-frame blocks, foreign latent grids: the anchor
presets), so the benchmark times the same denoising + cache work as a graphed world.
"""

from __future__ import annotations

import torch

from worldsim.engine.graph import StepGraph
from worldsim.frame import next_frame, write_level
from worldsim.model.config import ModelConfig
from worldsim.model.dit import DiT
from worldsim.model.kvcache import KVCache
from worldsim.sampling import SAMPLERS, schedule_for


class LatentEngine:
    """`batch_size` sessions of `dit`; `step(keys [B,Fb,K])` -> the next block's latents `[B,Fb,C,h,w]`."""

    def __init__(
        self,
        dit: DiT,
        *,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        graph: bool = False,
        sampler: str = "euler",
        seed: int = 0,
    ):
        cfg: ModelConfig = dit.cfg
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        if graph and self.device.type != "cuda":
            raise ValueError(f"LatentEngine(graph=True) needs CUDA, got device {self.device}")
        self.dit = dit.to(self.device, dtype).eval().requires_grad_(False)
        self.cache = KVCache(cfg, batch_size, device=self.device, dtype=dtype)
        self.schedule = schedule_for(cfg, cfg.steps, self.device)
        self.sampler = SAMPLERS[sampler]
        Fb, C, (h, w) = cfg.block_frames, cfg.latent_channels, cfg.latent_hw
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._noise = torch.zeros(batch_size, Fb, C, h, w, device=self.device, dtype=dtype)
        self._wnoise = torch.zeros_like(self._noise) if cfg.write_noise else None
        self._keys = torch.zeros(batch_size, Fb, cfg.num_keys, device=self.device, dtype=torch.bool)
        self._active = torch.zeros(batch_size, device=self.device, dtype=torch.long)
        self.graph = StepGraph(self._step_all, enabled=graph)

    def _step_all(self) -> torch.Tensor:
        return next_frame(
            self.dit, self.cache, self.sampler, self.schedule, self._keys, self._noise,
            active=self._active, level=write_level(self.cfg, self._keys), write_noise=self._wnoise,
        )  # fmt: skip

    @torch.inference_mode()
    def step(self, keys: torch.Tensor) -> torch.Tensor:
        if keys.shape != self._keys.shape:
            raise ValueError(
                f"LatentEngine keys must be [B, Fb, K] = {tuple(self._keys.shape)}, got {tuple(keys.shape)}"
            )
        if self.graph.enabled and not self.graph.captured:
            self._active.zero_()  # warm-up passes must not move the frame counters
            self.graph.capture()
        torch.randn(self._noise.shape, generator=self.generator, out=self._noise)
        if self._wnoise is not None:
            torch.randn(self._wnoise.shape, generator=self.generator, out=self._wnoise)
        self._keys.copy_(keys)
        self._active.fill_(1)
        return self.graph()
