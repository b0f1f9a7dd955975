"""The per-frame engine: the whole block step (denoising, cache write, decode) as one CUDA graph."""

from worldsim.engine.graph import StepGraph
from worldsim.engine.step import block_step
from worldsim.engine.world import GraphWorld, fastest_world

__all__ = ["GraphWorld", "StepGraph", "block_step", "fastest_world"]
