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

# The window's own keys, by pygame key name (`pygame.K_<name>`); none of them is a game key.
WINDOW_KEYS: dict[str, tuple[str, ...]] = {
    "pause": ("p",),
    "step": ("PERIOD",),
    "help": ("h", "F1"),
    "reset": ("r",),
    "quit": ("ESCAPE",),
}

_GAME_KEY_WORDS = {
    "forward": "forward",
    "back": "back",
    "strafe_left": "strafe left",
    "strafe_right": "strafe right",
    "turn_left": "turn left",
    "turn_right": "turn right",
}
_WINDOW_KEY_WORDS = {
    "pause": "pause / resume",
    "step": "one frame (while paused)",
    "help": "show / hide this help",
    "reset": "new game (same seed)",
    "quit": "quit",
}


def _key_label(name: str) -> str:
    return {"PERIOD": ".", "ESCAPE": "Esc"}.get(name, name.upper() if len(name) == 1 else name.title())


def controls() -> list[tuple[str, str]]:
    """(keys, what they do) for every key the window knows: the start-up log and the help overlay."""
    rows = [
        (" / ".join(_key_label(n) for n in names), _GAME_KEY_WORDS[k]) for k, names in KEY_BINDINGS.items()
    ]
    rows.append(("gamepad", "sticks or d-pad move, shoulders turn"))
    rows += [
        (" / ".join(_key_label(n) for n in WINDOW_KEYS[k]), words) for k, words in _WINDOW_KEY_WORDS.items()
    ]
    return rows
