"""What the status pages know of the watched runs: a row per run, kept from the daemon's
ticks (never read from a run's log or W&B on a request).

Each tick hands over the snapshots it judged; the board keeps, per run, what the page
shows — state, step, heartbeat and progress times, tags — and a short, thinned curve of
its loss and grad norm for the sparklines, built from the rows each tick read. A run
appears from the first tick that reads it and stays for ``KEEP_ENDED`` after a tick last
read it. The writer saves changed rows in the store (``to_save``: at most every ``SAVE_EVERY``,
at once when a run appears or changes state), so a restart and a standby replica show the
runs that ended before them, whose logs no tick reads again (``load``).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runwatch import keys
from runwatch.analysis import runconfig
from runwatch.analysis.curves import Direction, Trend, step_rate, trend
from runwatch.model import EMPTY_SERIES, RunRef, RunSnapshot, RunState, Series
from runwatch.store.base import BoardEntry

POINTS = 48  # per sparkline: new points are thinned into this many
KEEP_ENDED = 7 * 86400.0  # an ended run stays on the board this long after it last logged
CURVES = ("loss", "grad_norm")
SAVE_EVERY = 60.0  # changed rows are saved at most this often (a new or ended run at once)
RESAVE = 86400.0  # an unchanged row is saved again this long after, so it is not forgotten


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
    config: Mapping[str, Any] = field(default_factory=dict)  # runconfig.essentials of it
    config_read: object = field(default=None, compare=False, repr=False)  # the source's
    curves: Mapping[str, Series] = field(default_factory=dict)  # thinned, see extend
    sparks: Mapping[str, str] = field(default_factory=dict)  # the curves as SVG points
    loss_trend: Trend | None = None
    seen: float = field(default=0.0, compare=False)  # when a tick last read it
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


def encode(row: RunRow) -> str:
    """``row`` as the store keeps it (its sparks and loss trend are worked out again)."""
    ref = row.ref
    return json.dumps({
        "ref": [ref.source, ref.id, ref.name, ref.project, ref.entity, ref.location],
        "state": str(row.state), "ended_why": row.ended_why, "heartbeat": row.heartbeat,
        "progress": row.progress, "started": row.started, "step": row.step,
        "tags": list(row.tags), "config": row.config, "seen": row.seen, "total": row.total,
        "rate": row.rate,
        "curves": {n: [c.steps, c.times, c.values] for n, c in row.curves.items()},
    }, separators=(",", ":"), default=str)


def decode(body: str) -> RunRow:
    """A row saved by ``encode``; ValueError (or KeyError, TypeError) if it is not one."""
    data = json.loads(body)
    source, id_, name, project, entity, location = data["ref"]
    curves = {str(n): Series(steps=tuple(int(x) for x in steps),
                             times=tuple(float(x) for x in times),
                             values=tuple(float(x) for x in values))
              for n, (steps, times, values) in data["curves"].items()}
    loss = curves.get("loss")
    return RunRow(
        ref=RunRef(source=source, id=id_, name=name, project=project, entity=entity,
                   location=location),
        state=RunState(data["state"]), ended_why=str(data["ended_why"] or ""),
        heartbeat=_number(data["heartbeat"]), progress=_number(data["progress"]),
        started=_number(data["started"]),
        step=None if data["step"] is None else int(data["step"]),
        tags=tuple(str(t) for t in data["tags"]), config=dict(data["config"]),
        curves=curves, sparks={n: spark(c) for n, c in curves.items()},
        loss_trend=trend(loss) if loss is not None else None, seen=float(data["seen"]),
        total=None if data["total"] is None else int(data["total"]),
        rate=_number(data["rate"]))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


class RunBoard:
    def __init__(self) -> None:
        self._rows: dict[str, RunRow] = {}
        self._lock = threading.Lock()
        self._changed: set[str] = set()  # rows not saved as they are now
        self._urgent = False  # a run appeared or changed state since the last save
        self._saved_at = -math.inf
        self._saved_seen: dict[str, float] = {}  # per row: its ``seen`` when last saved
        self._bodies: dict[str, str] = {}  # per row: as last loaded (a reload decodes news)

    def load(self, entries: Iterable[BoardEntry], sources: Iterable[str],
             now: float) -> list[str]:
        """Show the saved rows of ``sources`` (those of any other source, and those unseen
        for ``KEEP_ENDED``, are left out), replacing what the board held; a line for each
        row that cannot be read."""
        wanted, rows, problems, bodies = set(sources), {}, [], {}
        with self._lock:
            held, known = self._rows, self._bodies
        for entry in entries:
            if entry.source not in wanted or now - entry.seen > KEEP_ENDED:
                continue
            if known.get(entry.path) == entry.body and entry.path in held:
                rows[entry.path] = held[entry.path]  # unchanged since the last load
            else:
                try:
                    rows[entry.path] = decode(entry.body)
                except Exception as exc:  # any shape at all: the row is left out, said
                    problems.append(f"run board row {entry.path!r} cannot be read ({exc!r});"
                                    " shown again when its run is read")
                    continue
            bodies[entry.path] = entry.body
        with self._lock:
            self._rows = rows
            self._bodies = bodies
            self._changed.clear()
            self._urgent = False
            self._saved_seen = {p: r.seen for p, r in rows.items()}
        return problems

    def to_save(self, now: float) -> list[BoardEntry] | None:
        """The rows to save now — changed since their last save, or unchanged for
        ``RESAVE`` — or None when no save is due (every ``SAVE_EVERY``, or at once after a
        run appeared or changed state). Once saved, they count as saved; ``unsaved`` says
        otherwise."""
        with self._lock:
            if not self._urgent and now - self._saved_at < SAVE_EVERY:
                return None
            stale = {p for p, seen in self._saved_seen.items()  # (read since, by a tick)
                     if now - seen > RESAVE and p in self._rows and self._rows[p].seen > seen}
            paths = (self._changed | stale) & self._rows.keys()
            rows = [self._rows[p] for p in sorted(paths)]
            self._changed.clear()
            self._urgent = False
            self._saved_at = now
            for row in rows:
                self._saved_seen[row.ref.path] = row.seen
        return [BoardEntry(path=r.ref.path, source=r.ref.source, seen=r.seen, body=encode(r))
                for r in rows]

    def unsaved(self, entries: Iterable[BoardEntry]) -> None:
        """``entries`` (from ``to_save``) did not reach the store: saved with the next."""
        with self._lock:
            self._changed.update(e.path for e in entries)
            self._urgent = True

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
            # The config as the source gave it this tick, kept only to tell whether the
            # next one is the same object (a run directory's is, until it changes): a
            # source that gives it once (W&B) leaves nothing large held here.
            config_read = snap.config or None
            if config_read is None or (before is not None
                                       and config_read is before.config_read):
                config = before.config if before is not None else {}
            else:
                config = runconfig.essentials(config_read)
            if before is not None and config is before.config:
                total = before.total
            else:
                found = runconfig.total_steps(config) if config else None
                total = found[0] if found else None
            row = RunRow(
                ref=snap.ref, state=snap.state, ended_why=snap.ended_why,
                heartbeat=snap.heartbeat, progress=snap.progress, started=snap.started,
                step=snap.last_step if snap.last_step is not None else (
                    before.step if before else None),
                tags=tuple(snap.tags), curves=curves, seen=now,
                config=config, config_read=config_read,
                sparks={n: spark(c) for n, c in curves.items()} if before is None
                or curves != before.curves else before.sparks,
                loss_trend=(trend(loss)
                            if loss is not None and changed else
                            before.loss_trend if before else None),
                total=total, rate=_rate(snap) or (before.rate if before else None))
            rows[snap.ref.path] = row
            if before is None or before.state != row.state:
                self._urgent = True
                self._changed.add(snap.ref.path)
            elif before != row:  # (equality leaves out when it was seen)
                self._changed.add(snap.ref.path)
        for path, row in list(rows.items()):
            if now - row.seen > KEEP_ENDED:
                del rows[path]
                self._saved_seen.pop(path, None)
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
