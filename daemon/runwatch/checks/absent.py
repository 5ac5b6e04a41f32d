"""``absent``: a running run has not logged a metric for a duration."""

from __future__ import annotations

from typing import ClassVar, Literal

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.fieldtypes import Duration
from runwatch.model import RunState
from runwatch.window import Window


class AbsentRule(RuleBase):
    kind: Literal["absent"]
    metric: str
    older_than: Duration

    default_summary: ClassVar[str] = "{metric} not logged for {age}"
    steps_hold: ClassVar[bool] = False

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def history_needed(self) -> Window:
        # A metric logged within `older_than` must be in a first read, or it looks absent.
        return super().history_needed() | Window(seconds=self.older_than)

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        snap = ctx.snapshot
        # Memory: when the metric was last logged, else when we first saw the run.
        last = series.times[-1] if series.times else ctx.memory
        if last is None:
            last = snap.started if snap.started is not None else ctx.now
        if snap.state is not RunState.RUNNING:
            return Verdict(active=False, memory=last, metric=key or self.metric)
        age = ctx.now - last
        active = age > self.older_than
        return Verdict(active=active, memory=last, metric=key or self.metric, age=age,
                       threshold=self.older_than,
                       since=last + self.older_than if active else None)
