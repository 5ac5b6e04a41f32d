"""Durations as users write them in YAML: ``30s``, ``10m``, ``2h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import math
import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(" + "|".join(sorted(UNITS, key=len, reverse=True)) + ")")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ValueError naming the text."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"invalid duration {text!r}: expected a finite, positive number")
        return float(text)
    compact = str(text).strip().replace(" ", "")
    if compact and _PART.sub("", compact) == "" and _PART.match(compact):
        return sum(float(n) * UNITS[u] for n, u in _PART.findall(compact))
    try:
        seconds = float(compact)
    except ValueError:
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit like 30s, 10m, 2h, 1d"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: expected a finite, positive number")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` → ``1h30m``; the inverse of :func:`parse_duration` for whole seconds."""
    seconds = round(seconds)
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
