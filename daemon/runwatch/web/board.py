"""What the status pages know of the watched runs: a row per run, kept from the daemon's
ticks (never read from a run's log or W&B on a request).

Each tick hands over the snapshots it judged; the board keeps, per run, what the page
shows — state, step, heartbeat and progress times, tags — and a short, thinned curve of
its loss and grad norm for the sparklines, built from the rows each tick read. A run
appears from the first tick that reads it (after a restart: the live runs at once, the
others when they log again), and an ended run stays for ``KEEP_ENDED``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from runwatch import keys
from runwatch.analysis import runconfig
from runwatch.analysis.curves import Direction, Trend, step_rate, trend
from runwatch.model import EMPTY_SERIES, RunRef, RunSnapshot, RunState, Series

POINTS = 48  # per sparkline: new points are thinned into this many
KEEP_ENDED = 7 * 86400.0  # an ended run stays on the board this long after it last logged
CURVES = ("loss", "grad_norm")


def extend(curve: Series, new: Series) -> Series:
    """``curve`` (a run's thinned curve, a ``Series``) with ``new``'s finite points after
    its last step, thinned to ``POINTS`` (every other point dropped, oldest first, until
    it fits; the newest always kept)."""
    last = curve.steps[-1] if curve.steps else None
    times = new.times if len(new.times) == len(new.steps) else (math.nan,) * len(new.steps)
    points = []
    for s, t, v in zip(new.steps, times, new.values, strict=True):
        if (last is None or s > last) and math.isfinite(v):
            points.append((s, t, v))
            last = s  # steps only go forward (a resumed run's repeats are dropped)
    if not points:
        return curve
    merged = list(zip(curve.steps, curve.times, curve.values, strict=True)) + points
    while len(merged) > POINTS:
        keep = merged[::2]
        if len(merged) % 2 == 0:
            keep.append(merged[-1])
        merged = keep
    steps, times, values = zip(*merged, strict=True)
    return Series(steps=steps, times=times, values=values)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRow:
    ref: RunRef
    state: RunState
    ended_why: str = ""
    heartbeat: float | None = None
    progress: float | None = None
    started: float | None = None
    step: int | None = None
    tags: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)  # as last read with the run
    curves: Mapping[str, Series] = field(default_factory=dict)  # thinned, see extend
    sparks: Mapping[str, str] = field(default_factory=dict)  # the curves as SVG points
    loss_trend: Trend | None = None
    seen: float = 0.0  # when a tick last read it
    total: int | None = None  # the steps its config says it will take
    rate: float | None = None  # steps per second over its newest points

    @property
    def done_at(self) -> float | None:
        """When it will take its last step at its current pace (Unix seconds, counted from
        its newest row: a stalled run's finish time passes rather than moving on); None
        when unknown or ended."""
        if self.state.ended or not self.total or not self.rate or self.step is None:
            return None
        return (self.progress or self.seen) + max(0.0, (self.total - self.step) / self.rate)

    @property
    def loss_worsening(self) -> bool:
        return self.loss_trend is not None and self.loss_trend.direction in (
            Direction.DIVERGING, Direction.WORSENING)


def spark(curve: Series, width: float = 100.0, height: float = 24.0) -> str:
    """The points of an SVG polyline drawing ``curve`` in a ``width`` × ``height`` box."""
    if len(curve.values) < 2:
        return ""
    low, high = min(curve.values), max(curve.values)
    first, last = curve.steps[0], curve.steps[-1]
    span_x, span_y = (last - first) or 1, (high - low) or 1.0
    return " ".join(f"{(s - first) / span_x * width:.1f},{height - (v - low) / span_y * height:.1f}"
                    for s, v in zip(curve.steps, curve.values, strict=True))



def _rate(snap: RunSnapshot) -> float | None:
    """Steps per second over the newest rows this tick read (the run's pace now, not its
    lifetime's), from its longest series."""
    line = max(snap.history.values(), key=lambda s: len(s.steps), default=None)
    if line is None or len(line.times) != len(line.steps):
        return None
    return step_rate(line.steps, line.times)


class RunBoard:
    def __init__(self) -> None:
        self._rows: dict[str, RunRow] = {}
        self._lock = threading.Lock()

    def update(self, snapshots: Iterable[RunSnapshot], now: float,
               aliases: Mapping[str, tuple[str, ...]]) -> None:
        """What one tick read: a row per snapshot, its curves extended. Readers see the
        board before or after, never half of it; a row not seen for ``KEEP_ENDED`` goes."""
        with self._lock:
            self._update(snapshots, now, aliases)

    def _update(self, snapshots: Iterable[RunSnapshot], now: float,
                aliases: Mapping[str, tuple[str, ...]]) -> None:
        rows = dict(self._rows)
        for snap in snapshots:
            before = rows.get(snap.ref.path)
            curves = dict(before.curves) if before is not None else {}
            for name in CURVES:
                key = keys.resolve(name, snap.keys, aliases)
                series = snap.history.get(key) if key else None
                if series:
                    curves[name] = extend(curves.get(name, EMPTY_SERIES), series)
            loss = curves.get("loss")
            changed = before is None or loss is not before.curves.get("loss")
            row = RunRow(
                ref=snap.ref, state=snap.state, ended_why=snap.ended_why,
                heartbeat=snap.heartbeat, progress=snap.progress, started=snap.started,
                step=snap.last_step if snap.last_step is not None else (
                    before.step if before else None),
                tags=tuple(snap.tags), curves=curves, seen=now,
                config=snap.config or (before.config if before else {}),
                sparks={n: spark(c) for n, c in curves.items()} if before is None
                or curves != before.curves else before.sparks,
                loss_trend=(trend(loss)
                            if loss is not None and changed else
                            before.loss_trend if before else None))
            found = runconfig.total_steps(row.config) if row.config else None
            rows[snap.ref.path] = replace(row, total=found[0] if found else None,
                                          rate=_rate(snap) or (before.rate if before else None))
        for path, row in list(rows.items()):
            if now - row.seen > KEEP_ENDED:
                del rows[path]
        self._rows = rows

    def forget_source(self, source: str) -> None:
        with self._lock:
            self._rows = {p: r for p, r in self._rows.items() if r.ref.source != source}

    def rows(self) -> Sequence[RunRow]:
        with self._lock:
            return list(self._rows.values())

    def row(self, path: str) -> RunRow | None:
        with self._lock:
            return self._rows.get(path)
