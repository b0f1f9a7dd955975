"""The world model: configs and presets, the block-causal DiT, its ring-buffer KV cache."""

from worldsim.model.config import PRESETS, ModelConfig, get_preset
from worldsim.model.dit import DiT
from worldsim.model.kvcache import KVCache

__all__ = ["PRESETS", "DiT", "KVCache", "ModelConfig", "get_preset"]
