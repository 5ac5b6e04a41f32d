"""Runs replayed as the daemon would have seen them, tick by tick, on their own clock.

A :class:`ReplayRun` is a run's whole history plus when it ended and when its process was
last heard from; asked for the tick at ``now``, it hands out what a source would have: the
points logged since the last tick (each seen ``delay`` seconds after its time — wandb-core
writes its log every ~15 s), the heartbeat, the state once the exit record is written.
:class:`ReplaySource` is a source over such runs, so a replay goes through the daemon's own
tick (``run_tick``): ``runwatch test-rules`` replays synthetic runs, ``runwatch backtest``
real ones.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runwatch.model import CodeAlert, RunRef, RunSnapshot, RunState, Series
from runwatch.sources.base import Poll
from runwatch.window import NONE, Window

ROW_TIME = "_timestamp"  # every row's time: a series over all rows


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayRun:
    ref: RunRef
    history: Mapping[str, Series]  # the whole history, ROW_TIME included
    end_at: float | None = None  # when its exit record was written
    end_state: RunState = RunState.FINISHED
    alive_until: float | None = None  # its last sign of life when it died silently
    started: float | None = None
    tags: tuple[str, ...] = ()
    group: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    delay: float = 0.0  # a point logged at t is seen at t + delay
    code_alerts: tuple[CodeAlert, ...] = ()  # what its training code raised, by time

    @property
    def first_time(self) -> float | None:
        rows = self.history.get(ROW_TIME)
        return rows.times[0] if rows is not None and rows.times else None

    @property
    def last_time(self) -> float | None:
        """The time after which nothing more happens: its end, else its last sign."""
        times = [t for t in (self.end_at, self.alive_until) if t is not None]
        rows = self.history.get(ROW_TIME)
        if rows is not None and rows.times:
            times.append(rows.times[-1])
        return max(times) if times else None

    @property
    def end(self) -> float:
        """When its exit record was written; inf if never."""
        return self.end_at if self.end_at is not None else math.inf

    def state_at(self, now: float) -> RunState:
        """The run's state as a tick at ``now`` sees it."""
        return self.end_state if now - self.delay >= self.end else RunState.RUNNING

    def seen(self, key: str, now: float) -> int:
        """How many points of ``key`` a tick at ``now`` has seen."""
        series = self.history.get(key)
        return 0 if series is None else bisect.bisect_right(series.times, self.seen_until(now))

    def seen_until(self, now: float) -> float:
        """The newest point time a tick at ``now`` sees: written by then, not after the end."""
        return min(now - self.delay, self.end)

    def snapshot(self, since: float, now: float, *,
                 wanted: Collection[str] | None = None) -> RunSnapshot:
        """What a tick at ``now`` sees, its new points being those seen after ``since``:
        of the keys in ``wanted`` only, when given (the rules asked read no others)."""
        written = now - self.delay  # the newest record time written by now
        cutoff = self.seen_until(now)
        start = since - self.delay
        history: dict[str, Series] = {}
        keys = []
        for key, series in self.history.items():
            times = series.times
            last = bisect.bisect_right(times, cutoff)
            if not last:
                continue  # not logged yet
            keys.append(key)
            if wanted is not None and key not in wanted:
                continue
            first = bisect.bisect_right(times, start)
            if first < last:
                history[key] = Series(steps=series.steps[first:last], times=times[first:last],
                                      values=series.values[first:last])
        rows = self.history.get(ROW_TIME)
        seen_rows = bisect.bisect_right(rows.times, cutoff) if rows is not None else 0
        alive = min(self.end, self.alive_until if self.alive_until is not None else math.inf)
        return RunSnapshot(
            ref=self.ref,
            state=self.state_at(now),
            heartbeat=min(written, alive),
            progress=rows.times[seen_rows - 1] if seen_rows else None,
            started=self.started,
            last_step=rows.steps[seen_rows - 1] if seen_rows else None,
            tags=self.tags, group=self.group, config=self.config,
            keys=frozenset(keys), history=history,
            code_alerts=tuple(a for a in self.code_alerts
                              if a.time is not None and start < a.time <= cutoff))


class ReplaySource:
    """A source over replayed runs: each poll hands out what is new since the last, as the
    run-directory source does; an ended run is handed out once more, then no more."""

    def __init__(self, runs: Sequence[ReplayRun], name: str = "replay") -> None:
        self.name = name
        self.runs = list(runs)
        self._since = {run.ref.path: -math.inf for run in runs}
        self._done: set[str] = set()

    @property
    def all_ended(self) -> bool:
        """Whether every run has been handed out ended (nothing more will come)."""
        return len(self._done) == len(self.runs)

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float, *,
             keys_for: Callable[[RunSnapshot], frozenset[str]] | None = None,
             needs_config: bool = True, window: Window = NONE) -> Poll:
        snapshots = []
        for run in self.runs:
            path = run.ref.path
            if path in self._done or (run.first_time is not None
                                      and now - run.delay < run.first_time):
                continue  # not begun yet, as far as its log says
            snapshot = run.snapshot(self._since[path], now)
            self._since[path] = now
            if snapshot.state.ended:
                self._done.add(path)
            snapshots.append(snapshot)
        return Poll(snapshots=tuple(snapshots))
