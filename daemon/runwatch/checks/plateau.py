"""``plateau``: a metric has not improved by ``min_delta`` for ``patience`` steps or time.

Measured in the run's own steps and point times, so a paused run does not "plateau" on
the wall clock (a stopped run is what ``progress`` reports).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from runwatch.checks.base import Context, HoldField, RuleBase, Verdict
from runwatch.window import Window


class PlateauRule(RuleBase):
    kind: Literal["plateau"]
    metric: str
    patience: HoldField
    min_delta: float = Field(default=0.0, ge=0)
    direction: Literal["min", "max"] = "min"  # loss improves downwards, accuracy upwards

    history_only: ClassVar[bool] = True
    default_summary: ClassVar[str] = (
        "{metric} has not improved on {value:.4g} (step {step}) for {threshold}"
    )

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def history_needed(self) -> Window:
        return super().history_needed() | self.patience.window()

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        if not series.values:
            return Verdict(active=None, memory=ctx.memory, metric=key)
        best, best_step, best_time = ctx.memory or (None, None, None)
        sign = 1.0 if self.direction == "min" else -1.0
        for step, time, value in zip(series.steps, series.times, series.values, strict=True):
            if not math.isfinite(value):
                continue
            if best is None or sign * (best - value) > self.min_delta:
                best, best_step, best_time = value, step, time
        memory = [best, best_step, best_time]
        if best is None:
            return Verdict(active=None, memory=memory, metric=key)
        patience = self.patience
        if patience.steps is not None:
            active = series.steps[-1] - best_step >= patience.steps
        else:
            active = series.times[-1] - best_time >= (patience.seconds or 0)
        return Verdict(active=active, memory=memory, metric=key, value=best, step=best_step,
                       threshold=str(patience))
