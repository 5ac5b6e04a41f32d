"""``progress``: a running run's newest history row is too old.

The heartbeat cannot see a hung training loop (wandb-core keeps beating); the newest row
can. "Too old" is both older than ``older_than`` and ``factor`` times the run's own recent
median interval between rows, so a run that logs every 40 minutes is not stalled at 31.
A run whose heartbeat is as stale as its rows is dead, not hung: that is left to the
heartbeat rule, so one dead run does not raise both. "As stale" is older than half the
limit: a live writer beats every ~15 s, while a dead process's last heartbeat is its last
row's time give or take a flush — the same age, so that a bound of the whole limit would
let the rule fire in the seconds between the two (found by the shipped rule tests).
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.fieldtypes import Duration
from runwatch.model import RunSnapshot, RunState
from runwatch.window import Window

ROW_TIME_KEY = "_timestamp"  # every wandb history row carries it


class ProgressRule(RuleBase):
    kind: Literal["progress"]
    older_than: Duration
    factor: float = Field(default=10.0, ge=0)
    window: int = Field(default=50, ge=3, le=5_000)  # rows for the median interval

    default_summary: ClassVar[str] = "no new history row for {age} (last step {step})"
    steps_hold: ClassVar[bool] = False

    def metrics(self) -> tuple[str, ...]:
        return (ROW_TIME_KEY,)

    def history_needed(self) -> Window:
        return super().history_needed() | Window(rows=self.window)

    def rests_until(self, snapshot: RunSnapshot) -> float:
        # Not stalled while its newest row is younger than older_than (the limit is never
        # less), whatever its pace or heartbeat; rows that come only make it younger.
        if snapshot.state is not RunState.RUNNING or snapshot.progress is None:
            return -math.inf
        return snapshot.progress + self.older_than

    def memory_of(self, row_times: Sequence[float]) -> list[float]:
        return list(row_times[-self.window:])

    def evaluate(self, ctx: Context) -> Verdict:
        snap = ctx.snapshot
        _, rows = ctx.series(ROW_TIME_KEY)
        memory = ctx.memory
        if not rows.times and isinstance(memory, list) and len(memory) <= self.window:
            recent = memory  # no new row (most ticks): the sample as it was, not a copy
        else:
            recent = [*(memory or ()), *rows.times][-self.window:]
        if snap.state is not RunState.RUNNING:
            return Verdict(active=False, memory=recent, step=snap.last_step, until=math.inf)
        # Before its first row a run is loading data or compiling: there is no pace to
        # judge yet (a dead process still shows as a stale heartbeat).
        newest = snap.progress if snap.progress is not None else (
            recent[-1] if recent else None)
        if newest is None:
            return Verdict(active=None, memory=recent, until=math.inf)
        limit = self.older_than
        if len(recent) >= 3:
            gaps = map(operator.sub, recent[1:], recent[:-1])
            limit = max(limit, self.factor * statistics.median(gaps))
        age = ctx.now - newest
        if snap.heartbeat is not None and ctx.now - snap.heartbeat > limit / 2:
            # No sign of life either: the process is gone, which is the heartbeat rule's
            # to report. This rule speaks of live processes that make no progress.
            # (and stays so while nothing new comes: the heartbeat only gets older)
            return Verdict(active=False, memory=recent, age=age, threshold=limit,
                           step=snap.last_step, until=math.inf)
        active = age > limit
        return Verdict(active=active, memory=recent, age=age, threshold=limit,
                       step=snap.last_step, since=newest + limit if active else None,
                       until=None if active else newest + limit)
