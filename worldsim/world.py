"""The one interface under everything that makes frames: a batched `World` (docs/design.md §2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

# The built-in game's keys, in the order of the multi-hot key vector. A checkpoint stores its own
# key names; nothing in the model hard-codes this tuple.
KEY_NAMES: tuple[str, ...] = (
    "forward",
    "back",
    "strafe_left",
    "strafe_right",
    "turn_left",
    "turn_right",
)
# Pairs of the built-in keys that cancel out (a person never holds both; the game moves by neither).
OPPOSITE_KEYS: tuple[tuple[str, str], ...] = (
    ("forward", "back"),
    ("strafe_left", "strafe_right"),
    ("turn_left", "turn_right"),
)


def keys_tensor(
    keys: torch.Tensor | Sequence[Sequence[int | bool]],
    batch: int,
    num_keys: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Validate a multi-hot key batch and return it as a `[B, K]` bool tensor on `device`."""
    t = torch.as_tensor(keys, device=device)
    if t.ndim == 1 and batch == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != num_keys:
        raise ValueError(f"keys must have shape [B, K] = [{batch}, {num_keys}], got {tuple(t.shape)}")
    if t.shape[0] != batch:
        raise ValueError(
            f"keys has {t.shape[0]} rows but the world steps {batch} games; pass one row per game"
        )
    if t.dtype != torch.bool:
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"keys must be bool or uint8 multi-hot, got dtype {t.dtype}")
        t = t != 0
    return t


class World(ABC):
    """A batch of `batch_size` games that turn keys into frames.

    `reset` and `step` return frames `[B, H, W, 3]` uint8 on `device`. Keys are `[B, K]` bool/uint8
    multi-hot in the order of `key_names`. Both accept `slots`, a list of game indices, to act on a
    subset (the server resets one session without touching the others); frames then come back
    `[len(slots), H, W, 3]` in the order of `slots`.
    """

    key_names: tuple[str, ...]
    height: int
    width: int
    batch_size: int
    device: torch.device

    @property
    def num_keys(self) -> int:
        return len(self.key_names)

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def reset(
        self,
        seeds: Sequence[int] | int | None = None,
        *,
        slots: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Start new games (one seed per game, or per slot) and return their first frames."""

    @abstractmethod
    def step(self, keys: torch.Tensor, *, slots: Sequence[int] | None = None) -> torch.Tensor:
        """Advance every game (or the given slots) by one tick under `keys` and return the new frames."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the world holds (GPU memory, threads). Safe to call twice."""

    def describe(self) -> dict:
        """What a client or a recording needs to know about this world."""
        return {
            "world": self.name,
            "height": self.height,
            "width": self.width,
            "key_names": list(self.key_names),
            "batch_size": self.batch_size,
            "device": str(self.device),
        }


def normalize_seeds(seeds: Sequence[int] | int | None, n: int) -> list[int]:
    """One int seed per game: None -> 0..n-1, an int s -> s..s+n-1, a sequence must have n items."""
    if seeds is None:
        return list(range(n))
    if isinstance(seeds, int):
        return [seeds + i for i in range(n)]
    out = [int(s) for s in seeds]
    if len(out) != n:
        raise ValueError(f"got {len(out)} seeds for {n} games; pass one seed per game")
    return out
