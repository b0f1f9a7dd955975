"""`NeuralWorld`: the model as a `World` (docs/design.md §2): keys in, generated
frames out, batched, forever.

It holds the state (models, KV cache, pending frames, noise generator) and calls the frame function
(worldsim/frame.py) eagerly, on the cache rows of the games it steps: per frame `steps` passes with the
previous frame's cache write folded into the first (the default), or `steps` passes plus a write pass
(`fold=False`, the reference). Nothing on that path reads a tensor on the host. Games start from start
latents stored in the checkpoint (chosen by seed) or from real frames (`reset_from_frames`, for evaluation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from worldsim.checkpoint import checkpoints_dir, default_checkpoint, load_checkpoint, load_module
from worldsim.device import default_device
from worldsim.engine.attention import cached_attention
from worldsim.engine.fp8 import fp8_world
from worldsim.engine.quant import WEIGHTS, load_dit
from worldsim.errors import UserError
from worldsim.frame import PassHook, Pending, next_frame, prime, write_level
from worldsim.model.autoencoder import Autoencoder, frames_to_model, model_to_frames
from worldsim.model.config import ModelConfig
from worldsim.model.dit import CachedAttend, DiT
from worldsim.model.kvcache import KVCache
from worldsim.sampling import SAMPLERS, schedule_for
from worldsim.world import World, keys_tensor, normalize_seeds

log = logging.getLogger(__name__)


class NeuralWorld(World):
    """A batch of `batch_size` neural games from a DiT + autoencoder (see the module docstring).

    `start_latents` `[M, C, h, w]` or `[M, T, C, h, w]` (T context frames per start; optional
    `start_keys [M, T, K]`, else all-false = "just reset"): `reset(seed)` starts from entry `seed % M`.
    `guidance` > 1 applies key guidance, v = v_null + g (v_keys - v_null) (two passes per step; both
    share the cache because every pass rewrites the current frame's slot before reading it).
    `fold=False` runs the separate write pass per frame (the reference the folded path must equal).
    `attend`: the cached attention backend (None = SDPA; engine/attention.py has the others); `passes`:
    the per-pass hook (fp8 scales, engine/fp8.py). Both go to the frame function as they are.
    """

    def __init__(
        self,
        dit: DiT,
        autoencoder: Autoencoder,
        config: ModelConfig,
        *,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        steps: int | None = None,
        start_latents: torch.Tensor | None = None,
        start_keys: torch.Tensor | None = None,
        sampler: str = "euler",
        guidance: float = 1.0,
        dtype: torch.dtype | None = None,
        checkpoint_name: str | None = None,
        checkpoint_hash: str | None = None,
        fold: bool = True,
        attend: CachedAttend | None = None,
        passes: PassHook | None = None,
    ):
        if config.block_frames != 1:
            raise ValueError(
                f"NeuralWorld steps one frame per call; this model generates blocks of "
                f"{config.block_frames} frames (block_frames must be 1)"
            )
        if batch_size < 1:
            raise ValueError(f"NeuralWorld batch_size must be >= 1, got {batch_size}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; pick one of {sorted(SAMPLERS)}")
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.cfg = config
        self.key_names = tuple(config.key_names)
        self.height, self.width = config.image_hw
        self.batch_size = batch_size
        self.steps = steps or config.steps
        self.checkpoint_name = checkpoint_name
        self.checkpoint_hash = checkpoint_hash
        self.dit = dit.to(self.device, self.dtype).eval().requires_grad_(False)
        self.autoencoder = autoencoder.to(self.device, self.dtype).eval().requires_grad_(False)
        self.sampler = SAMPLERS[sampler]
        self.guidance = float(guidance)
        self._rows_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self._drop = torch.ones(batch_size, 1, dtype=torch.bool, device=self.device)
        self.schedule = schedule_for(config, self.steps, self.device)
        self.cache = KVCache(config, batch_size, device=self.device, dtype=self.dtype)
        self.generator = torch.Generator(self.device).manual_seed(0)
        self.start_latents = self._check_start(start_latents, start_keys)
        self.fold = bool(fold)
        self.attend, self.passes = attend, passes
        # the pending frame of each game (folded): written into the cache by the next step's first pass
        self.pending = Pending.empty(self.dit, batch_size, self.device, self.dtype) if self.fold else None

    def _check_start(self, z: torch.Tensor | None, keys: torch.Tensor | None):
        if z is None:
            return None
        C, (h, w) = self.cfg.latent_channels, self.cfg.latent_hw
        if z.ndim == 4:
            z = z[:, None]  # [M,C,h,w] -> [M,1,C,h,w]
        if z.ndim != 5 or z.shape[2:] != (C, h, w):
            raise ValueError(f"start latents must be [M, (T,) {C}, {h}, {w}], got {tuple(z.shape)}")
        if keys is None:
            keys = torch.zeros(*z.shape[:2], self.num_keys, dtype=torch.bool)
        if keys.shape != (*z.shape[:2], self.num_keys):
            raise ValueError(
                f"start keys must be [M, T, K] = {(*z.shape[:2], self.num_keys)}, got {tuple(keys.shape)}"
            )
        return z.to(self.device, self.dtype), keys.to(self.device).bool()

    # construction from a checkpoint -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 1,
        steps: int | None = None,
        weights: str = "fp",
        context_noise: float | None = None,
        idle_context_noise: float | None = None,
        **kwargs,
    ) -> NeuralWorld:
        """Load a shipped checkpoint (a bare name, a path, or None = the best one for `device`).

        `weights`: "fp" (the file's float weights), "int8" (per-channel int8 DiT weights) or "fp8"
        (e4m3 W8A8, activation scales per pass calibrated at load); an int8 file loads either way.
        `context_noise`: the noise level finished frames enter the cache at, instead of the checkpoint's
        (a model trained on noised context may hold longer with some; scripts/context_noise.py measures).
        `idle_context_noise`: the level for frames made while no key is held, instead of the checkpoint's.
        """
        if weights not in WEIGHTS:
            raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")

        device = torch.device(device) if device is not None else default_device()
        if name_or_path is None:
            name_or_path = default_checkpoint(device)
            if name_or_path is None:
                raise UserError(
                    f"no shipped checkpoint for {device.type} in {checkpoints_dir()}; train one "
                    f"(worldsim train ...) or pass --checkpoint PATH"
                )
        ckpt = load_checkpoint(name_or_path)
        cfg = ckpt.config
        if context_noise is not None:
            if not 0.0 <= context_noise < 1.0:
                raise UserError(f"context_noise must be in [0, 1), got {context_noise}")
            cfg = cfg.replace(context_noise=float(context_noise))
        if idle_context_noise is not None:
            if not 0.0 <= idle_context_noise < 1.0:
                raise UserError(f"idle_context_noise must be in [0, 1), got {idle_context_noise}")
            cfg = cfg.replace(idle_context_noise=float(idle_context_noise))
        dit = load_dit(ckpt, weights="fp" if weights == "fp8" else weights)  # fp8: calibrated below
        ae = load_module(Autoencoder(cfg.autoencoder), ckpt, "autoencoder")
        start = ckpt.tensors.get("start", {})
        kwargs.setdefault("attend", cached_attention(cfg.attention))
        world = cls(
            dit, ae, cfg, batch_size=batch_size, device=device, steps=steps,
            start_latents=start.get("latents"), start_keys=start.get("keys"),
            checkpoint_name=ckpt.path.stem, checkpoint_hash=ckpt.sha256, **kwargs,
        )  # fmt: skip
        if weights == "fp8":  # W8A8 needs activation scales: calibrated on this world's own passes
            fp8_world(world)
        log.info(
            "loaded %s (sha256 %s..., %.2fM DiT parameters, %s weights, %d steps) on %s in %s",
            ckpt.path.stem, ckpt.sha256[:12], sum(p.numel() for p in dit.parameters()) / 1e6, weights,
            world.steps, device, str(world.dtype).removeprefix("torch."),
        )  # fmt: skip
        return world

    # World API ----------------------------------------------------------------------------------------
    def slot_rows(self, slots: Sequence[int] | None) -> tuple[torch.Tensor | None, int]:
        """The cache rows of `slots` (long `[R]` on the device; None = all) and R, checked once per list."""
        if slots is None:
            return None, self.batch_size
        key = tuple(int(s) for s in slots)
        rows = self._rows_cache.get(key)
        if rows is None:  # validated and copied to the device once per distinct slot list
            if not key or len(set(key)) != len(key) or min(key) < 0 or max(key) >= self.batch_size:
                raise ValueError(
                    f"slots must be distinct game indices in [0, {self.batch_size}), got {list(key)}"
                )
            rows = torch.tensor(key, device=self.device)
            if len(self._rows_cache) < 256:
                self._rows_cache[key] = rows
        return rows, len(key)

    @torch.inference_mode()
    def reset(
        self, seeds: Sequence[int] | int | None = None, *, slots: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Start games from the checkpoint's start latents (entry `seed % M`); return their first frames."""
        if self.start_latents is None:
            raise UserError(
                "this checkpoint has no start latents; start the neural world with reset_from_frames(frames)"
            )
        rows, R = self.slot_rows(slots)
        seeds = normalize_seeds(seeds, R)
        if slots is None:  # a full reset makes the whole run reproducible from the seeds
            self.generator.manual_seed(seeds[0])
        z_all, k_all = self.start_latents
        idx = torch.tensor([s % z_all.shape[0] for s in seeds], device=self.device)
        z, keys = z_all[idx], k_all[idx]  # [R,T,C,h,w], [R,T,K]
        self._prime(z, keys, None, rows)
        return self.decode(z[:, -1])

    @torch.inference_mode()
    def reset_from_frames(
        self,
        frames: torch.Tensor,
        keys: torch.Tensor | None = None,
        *,
        slots: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Start games from real frames `[R, T, H, W, 3]` (or `[R, H, W, 3]`) uint8, encoded as context.

        `keys [R, T, K]`: the key state that produced each frame (all-false for a frame from reset);
        None = unknown, the model's null key state. Returns the last given frame of each game.
        """
        rows, R = self.slot_rows(slots)
        frames = torch.as_tensor(frames, device=self.device)
        if frames.ndim == 4:
            frames = frames[:, None]
        if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[0] != R:
            raise ValueError(
                f"frames must be uint8 [{R}, T, H, W, 3] (or [{R}, H, W, 3]), got {tuple(frames.shape)}"
            )
        if frames.shape[2:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames are {frames.shape[2]}x{frames.shape[3]} but this model makes "
                f"{self.height}x{self.width} frames; resize them first"
            )
        T = frames.shape[1]
        x = frames_to_model(frames.flatten(0, 1)).to(self.dtype)  # [R*T,3,H,W]
        z = self.autoencoder.encode(x).unflatten(0, (R, T))  # [R,T,C,h,w]
        drop = None
        if keys is None:
            keys = torch.zeros(R, T, self.num_keys, dtype=torch.bool, device=self.device)
            drop = torch.ones(R, T, dtype=torch.bool, device=self.device)
        keys = torch.as_tensor(keys, device=self.device)
        if keys.shape != (R, T, self.num_keys):
            raise ValueError(f"keys must be [R, T, K] = {(R, T, self.num_keys)}, got {tuple(keys.shape)}")
        self._prime(z, keys.bool(), drop, rows)
        return frames[:, -1]

    @torch.inference_mode()
    def step(self, keys: torch.Tensor, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        rows, R = self.slot_rows(slots)
        k = keys_tensor(keys, R, self.num_keys, self.device)[:, None]  # [R,1,K]
        noise = self._noise(R)  # drawn in this order: the frame's noise, then its cache write's
        write_noise = self._noise(R) if self.cfg.write_noise else None
        return next_frame(
            self.dit, self.cache, self.sampler, self.schedule, k, noise, rows=rows, pending=self.pending,
            guidance=self.guidance, drop=self._drop[:R], level=write_level(self.cfg, k),
            write_noise=write_noise, passes=self.passes, attend=self.attend, decode=self.decode,
        )  # fmt: skip

    # internals ------------------------------------------------------------------------------------
    def _noise(self, R: int, T: int = 1) -> torch.Tensor:
        C, (h, w) = self.cfg.latent_channels, self.cfg.latent_hw
        return torch.randn(R, T, C, h, w, device=self.device, dtype=self.dtype, generator=self.generator)

    def _prime(self, z: torch.Tensor, keys: torch.Tensor, drop: torch.Tensor | None, rows) -> None:
        """Empty the games' cache rows and write context latents `z [R,T,C,h,w]` into them, in order
        (folded: the last one stays pending, for the first step's first pass)."""
        noise = self._noise(*z.shape[:2]) if self.cfg.context_noise > 0 else None
        prime(
            self.dit, self.cache, z, keys, drop=drop, rows=rows, pending=self.pending,
            level=self.cfg.context_noise, noise=noise, passes=self.passes, attend=self.attend,
        )  # fmt: skip

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents `[R,1,C,h,w]` (or `[R,C,h,w]`) -> frames `[R,H,W,3]` uint8."""
        return model_to_frames(self.autoencoder.decode(z.flatten(0, 1) if z.ndim == 5 else z))

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            checkpoint=self.checkpoint_name,
            checkpoint_hash=self.checkpoint_hash,
            steps=self.steps,
            engine="eager",
        )
        return d

    def close(self) -> None:
        self.cache = None  # type: ignore[assignment]
