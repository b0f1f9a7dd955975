"""Which physical keys press which game key, by pygame's key names: the keyboard reads its bindings
from here and the HUD its labels, so the two never disagree. Plain data: no pygame import."""

from __future__ import annotations

# game key -> pygame key names (`pygame.K_<name>`); the first one is the key the HUD shows
KEY_BINDINGS: dict[str, tuple[str, ...]] = {
    "forward": ("w", "UP"),
    "back": ("s", "DOWN"),
    "strafe_left": ("a",),
    "strafe_right": ("d",),
    "turn_left": ("q", "LEFT"),
    "turn_right": ("e", "RIGHT"),
}

# How the HUD names held keys: the keyboard key that presses them.
KEY_LABELS: dict[str, str] = {key: names[0].upper() for key, names in KEY_BINDINGS.items()}
