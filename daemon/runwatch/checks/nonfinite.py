"""``nonfinite``: a metric is NaN or ±inf."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.checks.points import scan


def _nonfinite(value: float, _in_run: bool) -> bool:
    return not math.isfinite(value)


class NonfiniteRule(RuleBase):
    kind: Literal["nonfinite"]
    metric: str

    default_summary: ClassVar[str] = "{metric} is {value} at step {step}"

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        values = series.values
        if not values:
            return Verdict(active=None, memory=ctx.memory, metric=key)
        trailing = tuple(ctx.memory) if ctx.memory else None
        # Fast path: a finite sum means every point is finite (one C-level pass).
        if trailing is None and math.isfinite(sum(values)):
            return Verdict(active=False, metric=key, value=values[-1], step=series.steps[-1])
        result = scan(series.steps, series.times, values, matches=_nonfinite,
                      severity=lambda v: 0.0, trailing=trailing)
        memory = list(result.trailing) if result.trailing else None
        if self.hold is not None:
            since = result.trailing
            return Verdict(active=since is not None, memory=memory, metric=key,
                           value=values[-1], step=series.steps[-1],
                           since=since[1] if since else None,
                           since_step=since[0] if since else None)
        if result.worst is None:
            return Verdict(active=False, memory=memory, metric=key, value=values[-1],
                           step=series.steps[-1])
        step, time, value = result.worst
        return Verdict(active=True, memory=memory, metric=key, value=value, step=step,
                       since=time, since_step=step)
