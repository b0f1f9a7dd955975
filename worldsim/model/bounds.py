"""Type and range checks for config fields: a config read from a file is refused field by field, with
the field, the value and the allowed range, before anything is sized from it."""

from __future__ import annotations

import math
from typing import Any

# Every size a config may hold, bounded so that a damaged or hostile file cannot make us allocate
# terabytes: (type, min, max). The maxima sit well above the largest shapes we run (the anchor
# presets of `presets_anchor.py`: 1536 wide, 30 deep, 832-pixel frames).
Spec = dict[str, tuple[type, float, float]]


def check_fields(obj: Any, spec: Spec, owner: str) -> None:
    """Raise ValueError naming `owner.field` when a field has the wrong type or leaves its range."""
    for name, (kind, lo, hi) in spec.items():
        v = getattr(obj, name)
        if kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        else:
            ok = isinstance(v, kind)
        if not ok:
            raise ValueError(f"{owner}.{name} must be {kind.__name__}, got {v!r}")
        if kind is not str and not lo <= v <= hi:
            raise ValueError(f"{owner}.{name}={v!r} must be >= {lo:g} and <= {hi:g}")
        if kind is str and not lo <= len(v) <= hi:
            raise ValueError(f"{owner}.{name}={v[:40]!r}: must be {lo:g} to {hi:g} characters long")
