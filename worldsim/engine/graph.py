"""`StepGraph`: capture a zero-argument step function once as a CUDA graph, then replay it.

The function reads and writes only tensors that live as long as the graph (static inputs the caller
fills in place, model weights, the KV cache) and returns its outputs; replays refill those same output
tensors. Off CUDA (or `enabled=False`) it simply calls the function: the eager reference path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


class StepGraph:
    """`graph()` runs `fn` (captured on first call when `enabled`) and returns its output tensors.

    Warm-up runs execute `fn` for real before capture (cuBLAS/SDPA workspaces, lazy inits), so the
    caller must make them harmless (the engine passes an all-inactive mask: no frame counter moves).
    `prepare` is called before the warm-up and `finish` after capture, to set and restore that state.
    """

    def __init__(self, fn: Callable[[], torch.Tensor], *, enabled: bool, warmup: int = 2):
        if warmup < 1:
            raise ValueError(f"StepGraph warmup must be >= 1 (capture needs warm kernels), got {warmup}")
        self.fn = fn
        self.enabled = enabled
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def capture(self) -> None:
        """Warm up on a side stream, then capture `fn` into a CUDA graph (outputs become static)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a server's other threads may touch CUDA while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.fn()
        self.graph = graph
        log.info("captured the per-frame step as one CUDA graph")

    def __call__(self) -> torch.Tensor:
        if not self.enabled:
            return self.fn()
        if self.graph is None:
            raise RuntimeError(
                "StepGraph: call capture() before replaying (the engine does it on first step)"
            )
        self.graph.replay()
        return self.out  # type: ignore[return-value]

    def reset(self) -> None:
        """Drop the graph (and its memory pool); the next capture records it afresh."""
        self.graph, self.out = None, None
