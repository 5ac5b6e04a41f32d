"""``nonfinite``: a metric is NaN or ±inf."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.checks.points import first_stirring, scan, verdict_from_scan


def _nonfinite(value: float, _in_run: bool) -> bool:
    return not math.isfinite(value)


class NonfiniteRule(RuleBase):
    kind: Literal["nonfinite"]
    metric: str

    history_only: ClassVar[bool] = True
    default_summary: ClassVar[str] = "{metric} is {value} at step {step}"

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def wakes_at(self, values: Sequence[float], start: int) -> int:
        return first_stirring(values, start, lambda stretch: math.isfinite(sum(stretch)))

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        values = series.values
        if not values:
            return Verdict(active=None, memory=ctx.memory, metric=key)
        trailing = tuple(ctx.memory) if ctx.memory else None
        # Fast path: a finite sum means every point is finite (one C-level pass).
        if trailing is None and math.isfinite(sum(values)):
            return Verdict(active=False, metric=key, value=values[-1], step=series.steps[-1])
        result = scan(series, matches=_nonfinite, severity=lambda v: 0.0, trailing=trailing,
                      finite_only=False)
        return verdict_from_scan(result, metric=key, held=self.hold is not None)
