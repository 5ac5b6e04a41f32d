"""``threshold``: a metric crosses a bound — on any new point, the last, or a window."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.checks.points import first_stirring, scan, verdict_from_scan
from runwatch.model import Series
from runwatch.window import Window

Op = Literal[">", ">=", "<", "<=", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}
_WINDOW_AGGREGATES = {"mean": lambda v: math.fsum(v) / len(v), "max": max, "min": min}


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    metric: str
    op: Op
    value: float
    mode: Literal["any", "last", "mean", "max", "min"] = "any"
    window: int = Field(default=20, ge=1, le=10_000)  # points, for mean/max/min
    resolve_value: float | None = None  # hysteresis: holds until the value passes this

    history_only: ClassVar[bool] = True
    default_summary: ClassVar[str] = "{metric} {value:.4g} {op} {threshold:.4g} at step {step}"

    @model_validator(mode="after")
    def _hysteresis_on_the_quiet_side(self) -> ThresholdRule:
        r = self.resolve_value
        if r is None:
            return self
        if self.op in ("==", "!="):
            raise ValueError(f"resolve_value needs an ordering op, not {self.op!r}")
        if self.op in (">", ">=") and r > self.value:
            raise ValueError(f"resolve_value {r} must be <= value {self.value} for {self.op!r}")
        if self.op in ("<", "<=") and r < self.value:
            raise ValueError(f"resolve_value {r} must be >= value {self.value} for {self.op!r}")
        return self

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def history_needed(self) -> Window:
        need = super().history_needed()
        return need | Window(rows=self.window) if self.mode in _WINDOW_AGGREGATES else need

    def summary_template(self) -> str:
        return self.summary or self.default_summary.replace("{op}", self.op)

    def evaluate(self, ctx: Context) -> Verdict:
        key, series = ctx.series(self.metric)
        if not series.values:
            return Verdict(active=None, memory=ctx.memory, metric=key, threshold=self.value)
        if self.mode in _WINDOW_AGGREGATES:
            return self._window(ctx, key, series)
        return self._points(ctx, key, series)

    def wakes_at(self, values: Sequence[float], start: int) -> int:
        if self.mode in _WINDOW_AGGREGATES or self.op not in (">", ">=", "<", "<="):
            return start
        extreme, bound, crosses = (max if self.op[0] == ">" else min), self.value, _OPS[self.op]

        def quiet(stretch: Sequence[float]) -> bool:
            # max/min skip a NaN unless it comes first (then they give NaN): a finite
            # extreme that does not cross means no finite point crosses.
            worst = extreme(stretch)
            return math.isfinite(worst) and not crosses(worst, bound)

        return first_stirring(values, start, quiet)

    def _crosses(self, value: float, in_run: bool) -> bool:
        # Only finite values get here (the scan skips NaN and ±inf: they are the nonfinite
        # kind's to report; an overflowing grad norm is not also "vanishing").
        bound = self.resolve_value if in_run and self.resolve_value is not None else self.value
        return _OPS[self.op](value, bound)

    def _points(self, ctx: Context, key: str | None, series: Series) -> Verdict:
        trailing = tuple(ctx.memory) if ctx.memory else None
        values = series.values
        if trailing is None and self.op in (">", ">=", "<", "<="):
            # Fast path: one C-level pass decides that nothing crossed.
            extreme = max(values) if self.op[0] == ">" else min(values)
            if math.isfinite(extreme) and not _OPS[self.op](extreme, self.value):
                return Verdict(active=False, metric=key, threshold=self.value,
                               value=values[-1], step=series.steps[-1])
        sign = 1.0 if self.op[0] in ">!=" else -1.0
        result = scan(series, matches=self._crosses, severity=lambda v: sign * v,
                      trailing=trailing, finite_only=True)
        return verdict_from_scan(result, metric=key, threshold=self.value,
                                 held=self.mode == "last" or self.hold is not None)

    def _window(self, ctx: Context, key: str | None, series: Series) -> Verdict:
        window = [*(ctx.memory or ()), *series.values][-self.window:]
        finite = [v for v in window if math.isfinite(v)]
        if not finite:
            return Verdict(active=None, memory=window, metric=key, threshold=self.value)
        aggregate = _WINDOW_AGGREGATES[self.mode](finite)
        active = self._crosses(aggregate, ctx.holding)
        return Verdict(active=active, memory=window, metric=key, threshold=self.value,
                       value=aggregate, step=series.steps[-1],
                       since=series.times[-1] if active else None,
                       since_step=series.steps[-1] if active else None)
