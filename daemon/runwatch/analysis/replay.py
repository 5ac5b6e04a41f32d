"""A run's history replayed through the engine, tick by tick, on the run's own clock.

A report must judge a run exactly as the rules do, or the verdict and the alerts disagree.
So it does not re-implement a single threshold: it feeds the run's history to
``engine.evaluate`` in slices of ``tick`` seconds of the run's time, the way the daemon
would have read it had it watched all along, and keeps what holds at the end. A grad-norm
spike that passed a thousand steps ago has resolved by then; a NaN in the last rows has not.

The last slice is judged with the run as it is now (its state, heartbeat and ``now``). An
ended run's metric rules are judged at its last sign of life, as still running — the
engine resolves whatever fires on an ended run in the same breath, and a report wants to
know what was wrong when it ended — and its state rules on the ended run.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from runwatch.checks import Rule
from runwatch.engine import evaluate
from runwatch.model import AlertState, AlertStatus, RunSnapshot, RunState, Series

DEFAULT_TICK = 60.0
MAX_TICKS = 500

_HOLDING = (AlertStatus.PENDING, AlertStatus.FIRING)


@dataclass(frozen=True, kw_only=True, slots=True)
class Replay:
    """Every matching rule's alert after the replay, by rule name."""

    alerts: Mapping[str, AlertState]
    ticks: int

    def holding(self) -> list[AlertState]:
        """The alerts firing or pending at the end, worst first."""
        return sorted((a for a in self.alerts.values() if a.status in _HOLDING),
                      key=worst_first)


def worst_first(alert: AlertState) -> tuple[bool, int, str]:
    """Firing before pending, the most severe first, then by rule: how alerts are listed."""
    return (alert.status != AlertStatus.FIRING, -alert.severity.rank, alert.rule)


def replay(rules: Sequence[Rule], snapshot: RunSnapshot, now: float,
           aliases: Mapping[str, tuple[str, ...]], *, tick: float = DEFAULT_TICK,
           max_ticks: int = MAX_TICKS) -> Replay:
    cuts = _cuts(snapshot.history, tick, max_ticks)
    by_fp: dict[str, AlertState] = {}
    start = None
    for end_step, when in cuts[:-1]:  # a slice's time: its newest row's, on the timeline
        part = _slice(snapshot.history, start, end_step)
        start = end_step
        moment = replace(snapshot, state=RunState.RUNNING, heartbeat=when, progress=when,
                         last_step=end_step, history=part)
        _apply(evaluate(rules, moment, by_fp, when, aliases).alerts, by_fp)
    last = _slice(snapshot.history, start, None)
    final = replace(snapshot, history=last)
    if snapshot.state.ended:
        alive = [t for t in (snapshot.progress, snapshot.heartbeat) if t is not None]
        when = max(alive) if alive else now
        as_running = replace(final, state=RunState.RUNNING, heartbeat=when)
        metric_rules = [r for r in rules if r.resolve_on_end]
        _apply(evaluate(metric_rules, as_running, by_fp, when, aliases).alerts, by_fp)
        end_rules = [r for r in rules if not r.resolve_on_end]
        _apply(evaluate(end_rules, final, by_fp, now, aliases).alerts, by_fp)
    else:
        _apply(evaluate(rules, final, by_fp, now, aliases).alerts, by_fp)
    return Replay(alerts={a.rule: a for a in by_fp.values()}, ticks=len(cuts))


def _apply(alerts: Sequence[AlertState], by_fp: dict[str, AlertState]) -> None:
    for alert in alerts:
        by_fp[alert.fingerprint] = alert


def _timeline(history: Mapping[str, Series]) -> Series | None:
    """The series with the most points: the one whose steps and times mark the ticks."""
    return max(history.values(), key=lambda s: len(s.steps), default=None)


def _cuts(history: Mapping[str, Series], tick: float, max_ticks: int
          ) -> list[tuple[int, float]]:
    """(last step, time) of every tick's slice; the last entry is the final tick."""
    line = _timeline(history)
    if line is None or not line.steps:
        return [(0, math.nan)]
    times = [t for t in line.times if math.isfinite(t)]
    if len(times) < 2:
        return [(line.steps[-1], times[-1] if times else math.nan)]
    span = max(times) - min(times)
    tick = max(tick, span / max_ticks)
    cuts: list[tuple[int, float]] = []
    boundary = line.times[0] + tick if math.isfinite(line.times[0]) else min(times) + tick
    for step, when in zip(line.steps, line.times, strict=True):
        if math.isfinite(when) and when >= boundary:
            if not cuts or cuts[-1][0] != step:
                cuts.append((step, when))
            boundary = when + tick
    if not cuts or cuts[-1][0] != line.steps[-1]:
        cuts.append((line.steps[-1], times[-1]))
    return cuts


def _slice(history: Mapping[str, Series], after: int | None, upto: int | None
           ) -> dict[str, Series]:
    """Points with ``after`` < step <= ``upto`` (None: unbounded) of every series."""
    out = {}
    for key, series in history.items():
        lo = 0 if after is None else bisect.bisect_right(series.steps, after)
        hi = len(series.steps) if upto is None else bisect.bisect_right(series.steps, upto)
        if hi > lo:
            if lo == 0 and hi == len(series.steps):
                out[key] = series
            else:
                out[key] = Series(steps=series.steps[lo:hi], times=series.times[lo:hi],
                                  values=series.values[lo:hi])
    return out
