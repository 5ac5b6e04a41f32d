"""``spike``: a point more than ``k`` robust deviations (median/MAD) from its rolling window."""

from __future__ import annotations

import bisect
import math
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.window import Window

_MAD_TO_SIGMA = 1.4826  # makes the MAD a consistent estimator of a normal's sigma
_RELATIVE_FLOOR = 1e-3


class SpikeRule(RuleBase):
    kind: Literal["spike"]
    metric: str
    k: float = Field(default=6.0, gt=0)
    window: int = Field(default=50, ge=3, le=5_000)
    min_points: int = Field(default=10, ge=3)
    direction: Literal["up", "down", "both"] = "up"

    history_only: ClassVar[bool] = True
    default_summary: ClassVar[str] = (
        "{metric} spiked to {value:.4g} at step {step} (over {threshold:g} robust deviations)"
    )

    @model_validator(mode="after")
    def _enough_points_fit_the_window(self) -> SpikeRule:
        if self.min_points > self.window:
            raise ValueError(f"min_points {self.min_points} exceeds window {self.window}")
        return self

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def history_needed(self) -> Window:
        return super().history_needed() | Window(rows=self.window)

    def _score(self, value: float, ordered: list[float]) -> float:
        """Signed robust z-score of ``value`` against the sorted window."""
        n = len(ordered)
        median = _median(ordered)
        mad = _median(sorted(abs(x - median) for x in ordered)) if n else 0.0
        # A window of identical values has no spread (MAD 0): the floor keeps a change in
        # the fourth digit (a loss scale stepping 65536 → 65537) from scoring as a spike.
        scale = max(_MAD_TO_SIGMA * mad, _RELATIVE_FLOOR * abs(median), 1e-12)
        z = (value - median) / scale
        if self.direction == "down":
            return -z
        return abs(z) if self.direction == "both" else z

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        if not series.values:
            return Verdict(active=None, memory=ctx.memory, metric=key)
        recent = list(ctx.memory or ())
        ordered = sorted(recent)
        worst: tuple[float, int, float, float] | None = None  # (score, step, time, value)
        for step, time, value in zip(series.steps, series.times, series.values, strict=True):
            if not math.isfinite(value):
                continue  # the nonfinite rule's business; it would poison the window
            if len(ordered) >= self.min_points:
                score = self._score(value, ordered)
                if score > self.k and (worst is None or score > worst[0]):
                    worst = (score, step, time, value)
            recent.append(value)
            bisect.insort(ordered, value)
            if len(recent) > self.window:
                ordered.pop(bisect.bisect_left(ordered, recent.pop(0)))
        if worst is None:
            return Verdict(active=False, memory=recent, metric=key,
                           value=series.values[-1], step=series.steps[-1])
        score, step, time, value = worst
        return Verdict(active=True, memory=recent, metric=key, value=value, step=step,
                       since=time, since_step=step, threshold=self.k)


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    if n == 0:
        return 0.0
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
