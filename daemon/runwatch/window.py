"""How much of a run's history a first read takes: what the rules can use, and at least
the source's ``first_read``.

A run seen for the first time (or whose cursor is gone) is not read from its first row:
the newest rows are enough for every rule to judge it — a spike needs its window, a
plateau its patience, ``for: 500 steps`` five hundred steps, the progress rule its
interval sample. A :class:`Window` says how far back that is, in rows, steps and
seconds; a read goes back until all three are covered (or the run's start). Backtests and
reports, which want a run's whole history, ask for :data:`FULL`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runwatch.duration import format_duration, parse_duration

ROWS_TEXT = r"^\s*([0-9]+)\s*(?:rows?)?\s*$"  # "10000 rows", or just "10000" (${VAR} text)
STEPS_TEXT = r"^\s*([0-9]+)\s*steps?\s*$"  # "500 steps": a count of steps
_ROWS = re.compile(ROWS_TEXT)
STEPS = re.compile(STEPS_TEXT)


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """The newest ``rows`` history rows, spanning at least ``steps`` steps and
    ``seconds`` of row time; ``full``: every row."""

    rows: int = 0
    steps: int = 0
    seconds: float = 0.0
    full: bool = False

    def __or__(self, other: Window) -> Window:
        """The window that covers both."""
        return Window(rows=max(self.rows, other.rows), steps=max(self.steps, other.steps),
                      seconds=max(self.seconds, other.seconds), full=self.full or other.full)

    def covered(self, rows: int, steps: float, seconds: float) -> bool:
        """Whether ``rows`` rows spanning ``steps`` steps and ``seconds`` are enough."""
        return not self.full and (rows >= self.rows and steps >= self.steps
                                  and seconds >= self.seconds)

    def __str__(self) -> str:
        if self.full:
            return "the whole history"
        parts = [f"{self.rows:,} rows"]
        if self.steps:
            parts.append(f"{self.steps:,} steps")
        if self.seconds:
            parts.append(format_duration(self.seconds))
        return ", ".join(parts)


NONE = Window()
FULL = Window(full=True)
DEFAULT_FIRST_READ = Window(rows=200)


def parse_first_read(value: Any) -> Window:
    """A source's ``first_read``: ``10000`` or ``"10000 rows"``, ``"50000 steps"``, a
    duration (``"6h"``), or ``all``."""
    if isinstance(value, Window):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"invalid first_read {value}: at least 1 row")
        return Window(rows=value)
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return FULL
        if m := _ROWS.match(value):
            return parse_first_read(int(m.group(1)))
        if (m := STEPS.match(value)) and int(m.group(1)) > 0:
            return Window(rows=1, steps=int(m.group(1)))
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = 0.0
        if seconds > 0:
            return Window(rows=1, seconds=seconds)
    raise ValueError(f"invalid first_read {value!r}: a number of rows ('10000 rows'),"
                     " of steps ('50000 steps'), a duration ('6h') or 'all'")
