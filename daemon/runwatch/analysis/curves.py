"""Numbers read off a metric's curve: its trend, its pace, its value at a step. Pure.

Single points lie — a loss logged per batch jumps by tens of percent from one step to the
next — so every figure here is taken over a window: the median of the first and the last
tenth of the steps a curve spans, the best such tenth, the step rate over the newest rows,
a value at a step over the points before it (at most ``MAX_WINDOW``). Non-finite points
are left out of the medians; a curve whose last window holds only NaN or inf says so
(``finite=False``).
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
import statistics
from dataclasses import dataclass

from runwatch.model import Series

BLOCKS = 10  # a trend's windows: tenths of the steps a curve spans
MAX_WINDOW = 100  # points a value is smoothed over (value_at, a grad norm's recent max)
FLAT = 0.01  # a change within ±1 % of the start is flat
DIVERGING = 0.10  # risen 10 % above its best window, and still rising: diverging
RATE_ROWS = 200  # the newest rows a step rate is measured over


class Direction(enum.StrEnum):
    IMPROVING = "improving"
    FLAT = "flat"
    WORSENING = "worsening"
    DIVERGING = "diverging"


@dataclass(frozen=True, kw_only=True, slots=True)
class Trend:
    """Where a curve started, where it is, and which way it goes (lower is better)."""

    first: float  # median of the first window
    last: float  # median of the last window (NaN when the window holds no finite point)
    best: float  # the lowest window median
    best_step: int
    change: float  # (last - first) / |first|: -0.4 is 40 % lower
    direction: Direction
    points: int
    window: int  # steps per window
    first_step: int
    last_step: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.last)

    @property
    def above_best(self) -> float:
        """How far the last window sits above the best one, relative to the best."""
        return _relative(self.last, self.best)


def window_size(points: int) -> int:
    return max(1, min(MAX_WINDOW, points // 10))


def _mean(values: tuple[float, ...] | list[float]) -> float:
    """The window's centre: the median of its finite points, so one outlier in a window
    (a bad batch) neither makes nor hides a trend."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _relative(value: float, base: float) -> float:
    if not (math.isfinite(value) and math.isfinite(base)):
        return math.inf if not math.isfinite(value) else math.nan
    if base == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - base) / abs(base)


def _blocks(series: Series) -> list[tuple[int, int, int]]:
    """The curve cut into ``BLOCKS`` equal spans of steps: (first index, end index, first
    step) of each block that holds a point. Spans of steps, not counts of points, so a
    W&B curve (evenly sampled, plus its newest rows exact) and the run directory's every
    row give the same windows."""
    steps = series.steps
    first, span = steps[0], steps[-1] - steps[0]
    if span <= 0:
        return [(0, len(steps), first)]
    cuts = [bisect.bisect_left(steps, first + span * k / BLOCKS) for k in range(BLOCKS)]
    cuts.append(len(steps))
    return [(lo, hi, steps[lo]) for lo, hi in itertools.pairwise(cuts) if hi > lo]


def trend(series: Series, *, higher_is_better: bool = False) -> Trend | None:
    """The trend of a curve, or None for one without a finite point.

    Its windows are tenths of the steps it spans: the first against the last, the best
    of them, and the one before the last. Diverging: the last window is ``DIVERGING``
    above the best and above the one before it — a loss that climbs back up, however
    slowly, before any threshold fires.
    """
    values = series.values
    n = len(values)
    if not n or not any(math.isfinite(v) for v in values):
        return None
    sign = -1.0 if higher_is_better else 1.0
    blocks = [(sign * _mean(values[lo:hi]), step) for lo, hi, step in _blocks(series)]
    finite_blocks = [b for b in blocks if math.isfinite(b[0])]
    best, best_step = min(finite_blocks) if finite_blocks else (math.nan, series.steps[0])
    first, last = blocks[0][0], blocks[-1][0]
    previous = blocks[-2][0] if len(blocks) > 1 else first
    change = _relative(last, first)
    if not math.isfinite(last) or (_relative(last, best) > DIVERGING and last > previous):
        direction = Direction.DIVERGING
    elif change < -FLAT:
        direction = Direction.IMPROVING
    elif change > FLAT:
        direction = Direction.WORSENING
    else:
        direction = Direction.FLAT
    window = max(1, round((series.steps[-1] - series.steps[0]) / BLOCKS))
    return Trend(first=sign * first, last=sign * last, best=sign * best, best_step=best_step,
                 change=change if not higher_is_better else -change, direction=direction,
                 points=n, window=window, first_step=series.steps[0],
                 last_step=series.steps[-1])


def step_rate(steps: tuple[float, ...], times: tuple[float, ...], *,
              rows: int = RATE_ROWS) -> float | None:
    """Steps per second over the newest ``rows`` rows; None without two timed rows."""
    pairs = [(s, t) for s, t in zip(steps[-rows:], times[-rows:], strict=True)
             if math.isfinite(s) and math.isfinite(t)]
    if len(pairs) < 2:
        return None
    (s0, t0), (s1, t1) = pairs[0], pairs[-1]
    if t1 <= t0 or s1 <= s0:
        return None
    return (s1 - s0) / (t1 - t0)


def value_at(series: Series, step: int, *, window: int | None = None) -> float | None:
    """The curve at ``step``: the median of the window of points up to it (so two runs
    compared at one step are compared on equally smoothed values); None before the first
    point."""
    end = bisect.bisect_right(series.steps, step)
    if end == 0:
        return None
    w = window or window_size(len(series.values))
    value = _mean(series.values[max(0, end - w):end])
    return value if math.isfinite(value) else series.values[end - 1]


def best(series: Series, *, higher_is_better: bool) -> tuple[float, int] | None:
    """The best finite point and its step."""
    pick = max if higher_is_better else min
    finite = [(v, s) for s, v in zip(series.steps, series.values, strict=True)
              if math.isfinite(v)]
    if not finite:
        return None
    return pick(finite, key=lambda p: p[0])


def thin(series: Series, points: int) -> Series:
    """At most ``points`` evenly spaced points, the first and the last kept: for drawing."""
    n = len(series.values)
    if n <= points or points < 2:
        return series
    index = [round(i * (n - 1) / (points - 1)) for i in range(points)]
    return Series(steps=tuple(series.steps[i] for i in index),
                  times=tuple(series.times[i] for i in index),
                  values=tuple(series.values[i] for i in index))
