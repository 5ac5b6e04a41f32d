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
from dataclasses import dataclass, field

from runwatch import keys
from runwatch.analysis.curves import Direction, Trend, trend
from runwatch.model import RunRef, RunSnapshot, RunState, Series

POINTS = 48  # per sparkline: new points are thinned into this many
KEEP_ENDED = 7 * 86400.0  # an ended run stays on the board this long after it last logged
CURVES = ("loss", "grad_norm")


@dataclass(frozen=True, kw_only=True, slots=True)
class Curve:
    steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def extended(self, series: Series) -> Curve:
        """The curve with ``series``'s finite points after its last step, thinned to
        ``POINTS`` (every other point dropped, oldest first, until it fits)."""
        last = self.steps[-1] if self.steps else None
        pairs = [(s, v) for s, v in zip(series.steps, series.values, strict=False)
                 if (last is None or s > last) and math.isfinite(v)]
        if not pairs:
            return self
        steps = list(self.steps) + [s for s, _ in pairs]
        values = list(self.values) + [v for _, v in pairs]
        while len(steps) > POINTS:  # every other point, the newest always kept
            keep = list(range(0, len(steps), 2))
            if keep[-1] != len(steps) - 1:
                keep.append(len(steps) - 1)
            steps, values = [steps[i] for i in keep], [values[i] for i in keep]
        return Curve(steps=tuple(steps), values=tuple(values))


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
    curves: Mapping[str, Curve] = field(default_factory=dict)
    sparks: Mapping[str, str] = field(default_factory=dict)  # the curves as SVG points
    loss_trend: Trend | None = None
    seen: float = 0.0  # when a tick last read it

    @property
    def loss_worsening(self) -> bool:
        return self.loss_trend is not None and self.loss_trend.direction in (
            Direction.DIVERGING, Direction.WORSENING)


def spark(curve: Curve, width: float = 100.0, height: float = 24.0) -> str:
    """The points of an SVG polyline drawing ``curve`` in a ``width`` × ``height`` box."""
    if len(curve.values) < 2:
        return ""
    low, high = min(curve.values), max(curve.values)
    first, last = curve.steps[0], curve.steps[-1]
    span_x, span_y = (last - first) or 1, (high - low) or 1.0
    return " ".join(f"{(s - first) / span_x * width:.1f},{height - (v - low) / span_y * height:.1f}"
                    for s, v in zip(curve.steps, curve.values, strict=True))



class RunBoard:
    def __init__(self) -> None:
        self._rows: dict[str, RunRow] = {}
        self._lock = threading.Lock()

    def update(self, snapshots: Iterable[RunSnapshot], now: float,
               aliases: Mapping[str, tuple[str, ...]]) -> None:
        """What one tick read: a row per snapshot, its curves extended."""
        with self._lock:
            rows = dict(self._rows)
        for snap in snapshots:
            before = rows.get(snap.ref.path)
            curves = dict(before.curves) if before is not None else {}
            for name in CURVES:
                key = keys.resolve(name, snap.keys, aliases)
                series = snap.history.get(key) if key else None
                if series:
                    curves[name] = curves.get(name, Curve()).extended(series)
            loss = curves.get("loss")
            changed = before is None or loss is not before.curves.get("loss")
            row = RunRow(
                ref=snap.ref, state=snap.state, ended_why=snap.ended_why,
                heartbeat=snap.heartbeat, progress=snap.progress, started=snap.started,
                step=snap.last_step if snap.last_step is not None else (
                    before.step if before else None),
                tags=tuple(snap.tags), curves=curves, seen=now,
                sparks={n: spark(c) for n, c in curves.items()} if before is None
                or curves != before.curves else before.sparks,
                loss_trend=(trend(Series(steps=loss.steps, values=loss.values))
                            if loss is not None and changed else
                            before.loss_trend if before else None))
            rows[snap.ref.path] = row
        for path, row in list(rows.items()):
            if row.state.ended and now - row.seen > KEEP_ENDED:
                del rows[path]
        with self._lock:
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
