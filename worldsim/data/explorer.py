"""A scripted explorer: batched sticky keys held for random durations, a turn when a wall blocks the way."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worldsim.world import KEY_NAMES

# How likely each key is to be held when its timer runs out: forward-biased so the explorer travels
# through the level instead of jittering in place. Every key has p > 0, so every key gets used; keys
# the table does not name get DEFAULT_PRESS.
PRESS_PROB = {
    "forward": 0.6,
    "back": 0.15,
    "strafe_left": 0.2,
    "strafe_right": 0.2,
    "turn_left": 0.25,
    "turn_right": 0.25,
}
DEFAULT_PRESS = 0.3
TURN_KEYS = ("turn_left", "turn_right")


class Explorer:
    """Choose `[B, K]` multi-hot keys for B games, all on `device`, with no host syncs.

    Each key is an independent switch: when its timer runs out it is pressed with its probability and
    held (or released) for a random `hold` frames. A game whose last move hit a wall (`blocked`) drops
    every key and holds one turn key for a random `turn_hold` frames. Deterministic for a seed on a device.
    """

    def __init__(
        self,
        batch: int,
        num_keys: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        *,
        key_names: Sequence[str] | None = None,
        hold: tuple[int, int] = (2, 24),
        turn_hold: tuple[int, int] = (4, 16),
    ) -> None:
        if batch < 1 or num_keys < 1:
            raise ValueError(
                f"Explorer needs batch >= 1 and num_keys >= 1, got batch={batch}, num_keys={num_keys}"
            )
        if key_names is None and num_keys == len(KEY_NAMES):
            key_names = KEY_NAMES
        if key_names is not None and len(key_names) != num_keys:
            raise ValueError(
                f"key_names has {len(key_names)} names for num_keys={num_keys}; pass one per key"
            )
        for name, (lo, hi) in (("hold", hold), ("turn_hold", turn_hold)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) frames with 1 <= min <= max, got {(lo, hi)}")
        self.batch, self.num_keys, self.hold, self.turn_hold = batch, num_keys, hold, turn_hold
        self.device = torch.device(device)
        self.key_names = (
            tuple(key_names) if key_names is not None else tuple(f"key_{i}" for i in range(num_keys))
        )
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(int(seed))
        self._p = torch.tensor([PRESS_PROB.get(n, DEFAULT_PRESS) for n in self.key_names], device=self.device)
        turns = [i for i, n in enumerate(self.key_names) if n in TURN_KEYS]
        # [T, K] one row per turn key: the key state held while turning away from a wall.
        self._turn_rows = torch.zeros(max(len(turns), 1), num_keys, dtype=torch.bool, device=self.device)
        for row, i in enumerate(turns):
            self._turn_rows[row, i] = True
        self._has_turns = bool(turns)
        self._held = torch.zeros(batch, num_keys, dtype=torch.bool, device=self.device)
        self._timer = torch.zeros(batch, num_keys, dtype=torch.long, device=self.device)

    def _randint(self, lo: int, hi: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(lo, hi + 1, shape, generator=self._gen, device=self.device)

    def act(self, blocked: torch.Tensor | None = None) -> torch.Tensor:
        """The keys for the next step; `blocked` [B] bool says which games just hit a wall."""
        b, k = self.batch, self.num_keys
        self._timer -= 1
        expired = self._timer <= 0
        pressed = torch.rand(b, k, generator=self._gen, device=self.device) < self._p
        self._held = torch.where(expired, pressed, self._held)
        self._timer = torch.where(expired, self._randint(*self.hold, (b, k)), self._timer)
        if blocked is not None:
            hit = blocked.to(device=self.device, dtype=torch.bool).reshape(b, 1)
            if self._has_turns:
                which = self._randint(0, self._turn_rows.shape[0] - 1, (b,))
                turn = self._turn_rows[which]  # [B, K]
            else:  # no turn key to escape with: a fresh random key state instead
                turn = torch.rand(b, k, generator=self._gen, device=self.device) < self._p
            self._held = torch.where(hit, turn, self._held)
            self._timer = torch.where(hit, self._randint(*self.turn_hold, (b, 1)).expand(b, k), self._timer)
        return self._held.clone()
