"""Which physical keys press which game key, by pygame's key names: the keyboard reads its bindings
from here and the HUD its labels, so the two never disagree. Plain data: no pygame import.

A world's keys are bound by name: the built-in game's below; the parts of Atari's action names (UP,
DOWN, LEFT, RIGHT, FIRE) on the arrows / WASD and Space, where a one-action-per-frame world (a Discrete
env) turns the held parts into one action (`worldsim.actions.choose_action`); any other name on the
number keys 1..9 in key order."""

from __future__ import annotations

from collections.abc import Sequence

from worldsim.actions import choose_action, components, one_action_per_frame

# game key -> pygame key names (`pygame.K_<name>`); the first one is the key the HUD shows
KEY_BINDINGS: dict[str, tuple[str, ...]] = {
    "forward": ("w", "UP"),
    "back": ("s", "DOWN"),
    "strafe_left": ("a",),
    "strafe_right": ("d",),
    "turn_left": ("q", "LEFT"),
    "turn_right": ("e", "RIGHT"),
}

# The parts of Atari's action names (worldsim.actions.COMPONENTS) -> pygame key names.
ACTION_BINDINGS: dict[str, tuple[str, ...]] = {
    "UP": ("UP", "w"),
    "DOWN": ("DOWN", "s"),
    "LEFT": ("LEFT", "a"),
    "RIGHT": ("RIGHT", "d"),
    "FIRE": ("SPACE",),
}
NUMBER_KEYS: tuple[str, ...] = tuple("123456789")  # for key names bound nowhere else, in key order

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


def bindings_for(key_names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """What the keyboard holds for a world with `key_names` -> the pygame key names that hold it. A
    one-action-per-frame world binds the parts of its action names (UP, FIRE, ...; NOOP needs no key),
    any other world its key names; each is bound as the module docstring says."""
    if one_action_per_frame(key_names):
        held = dict.fromkeys(c for n in key_names for c in sorted(components(n), key=str(n).find))
    else:
        held = dict.fromkeys(key_names)
    numbers = iter(NUMBER_KEYS)
    out: dict[str, tuple[str, ...]] = {}
    for name in held:
        keys = KEY_BINDINGS.get(name) or ACTION_BINDINGS.get(name)
        if keys is None:
            number = next(numbers, None)
            keys = (number,) if number else None
        if keys:
            out[name] = keys
    return out


def _key_label(name: str) -> str:
    return {"PERIOD": ".", "ESCAPE": "Esc"}.get(name, name.upper() if len(name) == 1 else name.title())


def controls(key_names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(keys, what they do) for every key the window knows, for a world with `key_names` (default: the
    built-in game's): the start-up log and the help overlay."""
    names = tuple(KEY_BINDINGS) if key_names is None else tuple(key_names)
    rows = [
        (" / ".join(_key_label(n) for n in keys), _GAME_KEY_WORDS.get(k, k))
        for k, keys in bindings_for(names).items()
    ]
    if one_action_per_frame(names):
        rows.append(("none held", names[choose_action((), names)]))
        if any(len(components(n)) > 1 for n in names):
            rows.append(("held together", "one action, e.g. UP + RIGHT + FIRE = UPRIGHTFIRE"))
    if any(n in KEY_BINDINGS for n in names):
        rows.append(("gamepad", "sticks or d-pad move, shoulders turn"))
    elif any(c in ACTION_BINDINGS for n in names for c in components(n)):
        rows.append(("gamepad", "stick or d-pad: UP / DOWN / LEFT / RIGHT, A: FIRE"))
    rows += [
        (" / ".join(_key_label(n) for n in WINDOW_KEYS[k]), words) for k, words in _WINDOW_KEY_WORDS.items()
    ]
    return rows
