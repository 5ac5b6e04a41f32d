"""Scanning new points for a per-point condition (threshold, nonfinite), and the verdict
that follows from a scan.

The scan finds the most extreme matching point and the start of the trailing run of
matching points, which is what ``for:`` needs: the condition has held from that point
through the newest one. The run's start (step, time and value: the first bad point) is
carried across ticks in the check's memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runwatch.checks.base import Verdict
from runwatch.model import Series


@dataclass(frozen=True, kw_only=True, slots=True)
class Scan:
    worst: tuple[int, float, float] | None  # (step, time, value) of the most extreme match
    # (step, time, value) of the first point of the matching run the worst lies in, and of
    # the run reaching the newest point; value None for a run remembered without it
    worst_since: tuple[int, float, float | None] | None
    trailing: tuple[int, float, float | None] | None
    last: tuple[int, float] | None  # (step, value) of the newest point judged


def scan(
    series: Series,
    *,
    matches: Callable[[float, bool], bool],
    severity: Callable[[float], float],
    trailing: tuple[int, float] | tuple[int, float, float | None] | None,
    finite_only: bool,
) -> Scan:
    """Walk the points once. ``matches(value, in_run)`` may loosen its bound inside a run
    (hysteresis); ``severity`` orders matches, the largest being the worst. With
    ``finite_only`` NaN and ±inf are not judged at all: they neither match nor break a run.
    """
    worst = worst_since = last = None
    worst_rank = 0.0
    run = None if trailing is None else (*trailing[:2], trailing[2] if len(trailing) > 2 else None)
    for step, time, value in zip(series.steps, series.times, series.values, strict=True):
        if finite_only and not math.isfinite(value):
            continue
        last = (step, value)
        if matches(value, run is not None):
            if run is None:
                run = (step, time, value)
            rank = severity(value)
            if worst is None or rank > worst_rank:
                worst, worst_rank, worst_since = (step, time, value), rank, run
        else:
            run = None
    return Scan(worst=worst, worst_since=worst_since, trailing=run, last=last)


def verdict_from_scan(result: Scan, *, metric: str | None, held: bool,
                      threshold: float | None = None) -> Verdict:
    """``held``: the condition must reach the newest point (``mode: last``, or a ``for:``);
    otherwise any match in the new points is active, reported by its worst point."""
    memory = list(result.trailing) if result.trailing else None
    if result.last is None:  # nothing judgeable arrived
        return Verdict(active=None, memory=memory, metric=metric, threshold=threshold)
    last_step, last_value = result.last
    latest = {"latest": last_value, "latest_step": last_step}
    if held:
        since = result.trailing
        return Verdict(active=since is not None, memory=memory, metric=metric,
                       threshold=threshold, value=last_value, step=last_step,
                       since=since[1] if since else None,
                       since_step=since[0] if since else None,
                       first_value=since[2] if since else None, **latest)
    if result.worst is None:
        return Verdict(active=False, memory=memory, metric=metric, threshold=threshold,
                       value=last_value, step=last_step, **latest)
    step, time, value = result.worst
    since_step, since, first = result.worst_since or (step, time, value)
    return Verdict(active=True, memory=memory, metric=metric, threshold=threshold,
                   value=value, step=step, since=since, since_step=since_step,
                   first_value=first, **latest)


def first_stirring(values: Sequence[float], start: int,
                   quiet: Callable[[Sequence[float]], bool]) -> int:
    """The index of the first of ``values`` from ``start`` on in no stretch that
    ``quiet`` passes (``len(values)`` if none), found in stretches that double while they
    pass and halve where they do not, so a long quiet history costs a few C-level passes.
    ``quiet`` may refuse a stretch with nothing wrong in it; it must judge one point
    exactly."""
    at, end, size = start, len(values), 64
    while at < end:
        stretch = values[at:at + size]
        if quiet(stretch):
            at += len(stretch)
            size = min(size * 2, 1 << 16)
        elif len(stretch) == 1:
            return at
        else:
            size = len(stretch) // 2
    return end
