"""Scanning new points for a per-point condition (threshold, nonfinite, spike).

The scan finds the most extreme matching point and the start of the trailing run of
matching points, which is what ``for:`` needs: the condition has held from that point
through the newest one. The run's start is carried across ticks in the check's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Scan:
    worst: tuple[int, float, float] | None  # (step, time, value) of the most extreme match
    worst_since: tuple[int, float] | None  # start of the matching run the worst lies in
    trailing: tuple[int, float] | None  # start of the run reaching the newest point


def scan(
    steps: Sequence[int],
    times: Sequence[float],
    values: Sequence[float],
    *,
    matches: Callable[[float, bool], bool],
    severity: Callable[[float], float],
    trailing: tuple[int, float] | None,
) -> Scan:
    """Walk the points once. ``matches(value, in_run)`` may loosen its bound inside a run
    (hysteresis); ``severity`` orders matches, the largest being the worst."""
    worst = worst_since = None
    worst_rank = 0.0
    run = trailing
    for step, time, value in zip(steps, times, values, strict=True):
        if matches(value, run is not None):
            if run is None:
                run = (step, time)
            rank = severity(value)
            if worst is None or rank > worst_rank:
                worst, worst_rank, worst_since = (step, time, value), rank, run
        else:
            run = None
    return Scan(worst=worst, worst_since=worst_since, trailing=run)
