"""Model configs: one dataclass (`ModelConfig`, nesting the autoencoder's) and a registry of presets.

The config travels inside every checkpoint (as JSON in the safetensors metadata): key names, window,
sinks, sampling steps and schedule live here, never hard-coded in the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from worldsim.model.autoencoder import AE_PRESETS, AutoencoderConfig
from worldsim.model.bounds import Spec, check_fields
from worldsim.world import KEY_NAMES

# Bump when a checkpoint written by this code could not be read by older code.
CONFIG_VERSION = 1

ATTENTION_BACKENDS = ("sdpa", "flex", "flash")
SCHEDULES = ("uniform", "shifted")

# Bounds on every field (worldsim/model/bounds.py), and on the two products that size memory: the DiT's
# parameters and the tokens one game keeps in its KV cache. A config from a file is checked against
# them before any module or cache is allocated.
_FIELDS: Spec = {
    "name": (str, 1, 100), "patch_size": (int, 1, 64), "width": (int, 8, 8192), "depth": (int, 1, 256),
    "heads": (int, 1, 256), "mlp_ratio": (float, 0.25, 16.0), "rope_theta_space": (float, 1.0, 1e7),
    "block_frames": (int, 1, 64), "window": (int, 1, 4096), "sinks": (int, 0, 64),
    "attention": (str, 1, 16), "local_window": (int, 0, 4096), "global_every": (int, 0, 256),
    "steps": (int, 1, 1000), "schedule": (str, 1, 16), "schedule_shift": (float, 1e-3, 1e3),
    "context_noise": (float, 0.0, 1.0), "prev_frame": (bool, 0, 1), "version": (int, 0, 10**6),
}  # fmt: skip
MAX_PARAMS = 4e9  # DiT parameters; the anchor presets are ~1.5e9
MAX_CACHED_TOKENS = 1 << 20  # (sinks + window) * tokens per frame; self-forcing's anchor: 32,760
MAX_KEYS = 256


@dataclass
class ModelConfig:
    name: str = "tiny"
    autoencoder: AutoencoderConfig = field(default_factory=lambda: AE_PRESETS["tiny"])
    key_names: tuple[str, ...] = KEY_NAMES
    # DiT -------------------------------------------------------------------------------------
    patch_size: int = 1  # latent pixels per token side: tokens/frame = (h/p) * (w/p)
    width: int = 256  # D
    depth: int = 8
    heads: int = 4  # H
    mlp_ratio: float = 4.0
    rope_theta_space: float = 100.0  # RoPE base for the (x, y) dims (time dims: period = window)
    # Block-causal attention and the KV cache (docs/design.md §6) --------------------------------------
    block_frames: int = 1  # frames generated together (full attention inside a block)
    window: int = 16  # frames a query sees, itself included (the ring buffer's slots)
    sinks: int = 0  # learned sink frames (N tokens each) every query sees, position-free in time
    attention: str = "sdpa"  # default backend: sdpa | flex | flash
    # Sparse attention (docs/design.md §8): local layers see the last `local_window` frames (+ sinks), every
    # `global_every`-th layer the whole window. 0 = dense. Trained in: training and inference share the mask.
    local_window: int = 0
    global_every: int = 0
    # Sampling (flow matching; see worldsim/sampling.py) ----------------------------------------
    steps: int = 2  # deployed few-step budget
    schedule: str = "shifted"  # uniform | shifted
    schedule_shift: float = 1.0  # > 1 spends more steps at high noise
    context_noise: float = 0.0  # noise level t at which finished frames are written to the cache
    # the level for frames made while no key is held (None: context_noise): a still view holds on
    # noised context, a moving one needs its detail (docs/design.md §5)
    idle_context_noise: float | None = None
    # Frame stacking (docs/design.md §4): each frame's tokens also take the previous frame's latents and
    # noise level (as they entered the sequence: in the cache, at the context level), through a
    # zero-initialised projection, so holding or shifting the last frame is one linear map away instead
    # of a precise attention pattern. False: attention alone carries the past (files without the field).
    prev_frame: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.autoencoder, dict):
            self.autoencoder = _autoencoder(self.autoencoder)
        if not isinstance(self.autoencoder, AutoencoderConfig):
            raise ValueError(f"ModelConfig.autoencoder must be an object, got {self.autoencoder!r}")
        if not isinstance(self.key_names, (list, tuple)) or not all(
            isinstance(k, str) and 0 < len(k) <= 64 for k in self.key_names
        ):
            raise ValueError(
                f"ModelConfig.key_names must be a list of names (1-64 characters), got {self.key_names!r}"
            )
        self.key_names = tuple(self.key_names)
        if not 0 < len(self.key_names) <= MAX_KEYS or len(set(self.key_names)) != len(self.key_names):
            raise ValueError(f"ModelConfig.key_names must be 1-{MAX_KEYS} unique names, got {self.key_names}")
        check_fields(self, _FIELDS, "ModelConfig")
        if self.version > CONFIG_VERSION:
            raise ValueError(
                f"ModelConfig.version {self.version} is newer than this worldsim understands "
                f"({CONFIG_VERSION}); upgrade worldsim to read this checkpoint"
            )
        h, w = self.autoencoder.latent_hw
        if self.patch_size < 1 or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"ModelConfig.patch_size={self.patch_size} must divide the latent grid {h}x{w}; "
                f"pick a divisor of {h} and {w}"
            )
        if self.width % self.heads:
            raise ValueError(f"ModelConfig.width={self.width} must be a multiple of heads={self.heads}")
        if self.head_dim % 8:
            raise ValueError(
                f"head_dim = width/heads = {self.head_dim} must be a multiple of 8 (RoPE splits it into "
                f"x, y and time pairs); change width or heads"
            )
        if self.depth < 1:
            raise ValueError(f"ModelConfig.depth must be >= 1, got {self.depth}")
        self._check_memory()
        if self.block_frames < 1 or self.window < self.block_frames or self.window % self.block_frames:
            raise ValueError(
                f"ModelConfig.window={self.window} must be a positive multiple of "
                f"block_frames={self.block_frames} (blocks fill whole ring slots)"
            )
        if self.sinks < 0:
            raise ValueError(f"ModelConfig.sinks must be >= 0, got {self.sinks}")
        self._check_sparse()
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"ModelConfig.attention={self.attention!r}; pick one of {ATTENTION_BACKENDS}")
        if self.steps < 1:
            raise ValueError(f"ModelConfig.steps must be >= 1, got {self.steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ModelConfig.schedule={self.schedule!r}; pick one of {SCHEDULES}")
        if self.schedule_shift <= 0:
            raise ValueError(f"ModelConfig.schedule_shift must be > 0, got {self.schedule_shift}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"ModelConfig.context_noise must be in [0, 1), got {self.context_noise}")
        idle = self.idle_context_noise
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, int | float) or not 0.0 <= idle < 1.0
        ):
            raise ValueError(f"ModelConfig.idle_context_noise must be null or in [0, 1), got {idle!r}")

    @property
    def write_noise(self) -> bool:
        """Whether any cache write is noised (a write noise must be drawn)."""
        return max(self.context_noise, self.idle_context_noise or 0.0) > 0

    def _check_memory(self) -> None:
        params = self.depth * self.width**2 * (10 + 2 * self.mlp_ratio)  # qkv+out, adaLN (6 D^2), MLP
        if params > MAX_PARAMS:
            raise ValueError(
                f"ModelConfig width={self.width} x depth={self.depth} is ~{params:.1e} DiT parameters, "
                f"over the {MAX_PARAMS:.0e} limit; use a smaller width or depth"
            )
        cached = (self.sinks + self.window) * self.tokens_per_frame
        if cached > MAX_CACHED_TOKENS:
            raise ValueError(
                f"ModelConfig (sinks + window) x tokens per frame = ({self.sinks} + {self.window}) x "
                f"{self.tokens_per_frame} = {cached} cached tokens per game, over the {MAX_CACHED_TOKENS} "
                f"limit; use a smaller window, larger patch_size or smaller frames"
            )

    def _check_sparse(self) -> None:
        lw, ge = self.local_window, self.global_every
        if lw < 0 or ge < 0:
            raise ValueError(
                f"ModelConfig.local_window={lw} and global_every={ge} must be >= 0 (0 = dense attention)"
            )
        if lw == 0:
            if ge:
                raise ValueError(
                    f"ModelConfig.global_every={ge} needs local_window > 0 (with local_window=0 every layer "
                    f"is already global); set local_window or global_every=0"
                )
            return
        if lw >= self.window:
            raise ValueError(
                f"ModelConfig.local_window={lw} must be < window={self.window} (local_window=0 means dense); "
                f"pick a smaller local_window or 0"
            )
        if lw % self.block_frames:
            raise ValueError(
                f"ModelConfig.local_window={lw} must be a multiple of block_frames={self.block_frames} "
                f"(the mask is block-causal)"
            )
        if ge > self.depth:
            raise ValueError(
                f"ModelConfig.global_every={ge} > depth={self.depth} leaves no global layer; pick "
                f"1..{self.depth} or 0 (all layers local)"
            )

    # sparse attention -------------------------------------------------------------------------
    @property
    def sparse(self) -> bool:
        """Do some layers attend to fewer frames than the window?"""
        return 0 < self.local_window < self.window and self.global_every != 1

    def layer_window(self, layer: int) -> int:
        """Frames (itself included) that layer `layer` sees besides the sinks: the window or local_window."""
        if not 0 <= layer < self.depth:
            raise ValueError(f"layer {layer} out of range for depth {self.depth}")
        if not self.local_window or (self.global_every and (layer + 1) % self.global_every == 0):
            return self.window
        return self.local_window

    # derived sizes ----------------------------------------------------------------------------
    @property
    def num_keys(self) -> int:  # K
        return len(self.key_names)

    @property
    def latent_channels(self) -> int:  # C
        return self.autoencoder.latent_channels

    @property
    def latent_hw(self) -> tuple[int, int]:  # (h, w)
        return self.autoencoder.latent_hw

    @property
    def grid(self) -> tuple[int, int]:  # token grid (h/p, w/p)
        h, w = self.latent_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def tokens_per_frame(self) -> int:  # N
        gh, gw = self.grid
        return gh * gw

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.autoencoder.hw

    # serialization (JSON-safe; the checkpoint metadata) ----------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key_names"] = list(self.key_names)
        if d["idle_context_noise"] is None:  # unset: files older code reads too
            del d["idle_context_noise"]
        if not d["prev_frame"]:  # likewise
            del d["prev_frame"]
        if isinstance(d["autoencoder"]["image_size"], tuple):
            d["autoencoder"]["image_size"] = list(d["autoencoder"]["image_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a ModelConfig must be a JSON object, got {type(d).__name__}")
        if not isinstance(d.get("version", CONFIG_VERSION), int):
            raise ValueError(f"ModelConfig.version must be int, got {d['version']!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown and int(d.get("version", CONFIG_VERSION)) <= CONFIG_VERSION:
            raise ValueError(f"unknown ModelConfig fields {unknown}; is this a worldsim model config?")
        d = {k: v for k, v in d.items() if k in known}
        if int(d.get("version", CONFIG_VERSION)) > CONFIG_VERSION:
            cls(version=int(d["version"]))  # raises the actionable "newer version" error
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _autoencoder(d: dict[str, Any]) -> AutoencoderConfig:
    known = {f.name for f in dataclasses.fields(AutoencoderConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown AutoencoderConfig fields {unknown}; is this a worldsim model config?")
    return AutoencoderConfig(**d)


PRESETS: dict[str, ModelConfig] = {
    # A few thousand parameters: CPU tests only.
    "test": ModelConfig(
        name="test", autoencoder=AE_PRESETS["test"], width=32, depth=2, heads=2, window=4, sinks=1,
        steps=2,
    ),
    # 64x64 frames, 8x8 latent grid = 64 tokens/frame, ~6M params: >= 20 FPS on 2 CPU cores.
    "tiny": ModelConfig(
        name="tiny", autoencoder=AE_PRESETS["tiny"], width=256, depth=8, heads=4, window=16, sinks=0,
        steps=2, schedule_shift=1.0,
    ),
    # Narrower and shallower than tiny (192 x 6, ~3M DiT params, ~4.5 MiB in 8 bits): a model of your own
    # game (an Atari game at 64x64) that ships small and runs 2 denoising steps on a CPU at ~30 FPS.
    "small": ModelConfig(
        name="small", autoencoder=AE_PRESETS["tiny"], width=192, depth=6, heads=3, window=16, sinks=0,
        steps=2, schedule_shift=1.0,
    ),
    # 128x128 frames, 8x8 latent grid (16x AE) = 64 tokens/frame: H100 >= 240 FPS. 384 x 9 (18M DiT +
    # 5.8M AE) rather than the ~512 x 10 first planned: that is what ships in 8 bits inside 30 MiB (29.7 MiB).
    "base": ModelConfig(
        name="base", autoencoder=AE_PRESETS["base"], width=384, depth=9, heads=6, window=32, sinks=1,
        steps=4, schedule_shift=2.0,
    ),
}  # fmt: skip


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a preset (callers may mutate it)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; pick one of {sorted(PRESETS)}")
    return ModelConfig.from_dict(PRESETS[name].to_dict())
