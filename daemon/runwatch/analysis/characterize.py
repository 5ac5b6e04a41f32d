"""``characterize``: one run's health, as a report a person reads in ten seconds. Pure.

Everything that says "wrong" comes from the loaded rules, replayed over the run's history
(see ``replay``): the grad-norm bounds, the NaN loss, hung versus dead, crashed. The report
adds what no single rule can say — the loss trend from start to now, eval metrics, the
pace and the ETA, the config — and one thing the rules do not fire on: a loss that climbs
back up slowly is a ``warning`` before any threshold is crossed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runwatch import keys as keynames
from runwatch.analysis import curves, runconfig
from runwatch.analysis.curves import Direction, Trend
from runwatch.analysis.replay import DEFAULT_TICK, MAX_TICKS, replay, worst_first
from runwatch.checks import Rule
from runwatch.model import AlertState, AlertStatus, RunRef, RunSnapshot, RunState, Series, Severity

EVAL_PREFIXES = ("eval/", "eval_", "val/", "val_", "valid/", "validation/", "validation_",
                 "test/")
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "err", "wer", "cer", "mse", "mae",
                   "rmse", "nll", "bpb", "bpc")
TOKEN_RATE_HINTS = ("tokens_per_s", "tokens_per_sec", "tok_per_s", "tokens/s", "tok/s",
                    "tokens_per_second", "tps")
TOKEN_TOTALS = ("tokens", "num_tokens", "tokens_seen", "total_tokens", "consumed_tokens",
                "num_input_tokens_seen")
MAX_EVALS = 8
CURVE_POINTS = 120  # points of the loss and grad curves a report keeps for drawing


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"healthy": 0, "warning": 1, "critical": 2}[self.value]


class Liveness(enum.StrEnum):
    ALIVE = "alive"  # logging rows
    HUNG = "hung"  # the process beats, the training loop does not move
    DEAD = "dead"  # no heartbeat: the process is gone
    ENDED = "ended"


@dataclass(frozen=True, kw_only=True, slots=True)
class Reason:
    """One thing that makes a run less than healthy."""

    severity: Severity
    text: str
    rule: str | None = None  # the rule whose alert says so; None for the loss trend
    step: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GradHealth:
    key: str
    latest: float
    recent_max: float
    bounds: tuple[str, ...]  # the rules' bounds, e.g. "> 10 critical (grad-norm-exploding)"
    holding: tuple[str, ...]  # the rules on this metric that hold now

    @property
    def ok(self) -> bool:
        return not self.holding


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalMetric:
    key: str
    latest: float
    latest_step: int
    best: float
    best_step: int
    higher_is_better: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Pace:
    """How far the run is, how fast it goes and when it will be done."""

    step: int | None
    step_key: str | None
    total: int | None = None
    total_from: str | None = None  # the config keys that gave ``total``
    rate: float | None = None  # steps per second over the newest rows
    eta: float | None = None  # seconds left at ``rate``; None when unknown

    @property
    def fraction(self) -> float | None:
        if self.total and self.step is not None:
            return min(1.0, max(0.0, self.step / self.total))
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunReport:
    run: RunRef
    state: RunState
    now: float
    health: Health
    reasons: tuple[Reason, ...]
    liveness: Liveness
    heartbeat_age: float | None
    progress_age: float | None
    started: float | None
    loss_key: str | None
    loss: Trend | None
    grad: GradHealth | None
    evals: tuple[EvalMetric, ...]
    pace: Pace
    tokens_per_s: float | None
    config: Mapping[str, Any]
    alerts: tuple[AlertState, ...]  # firing or pending on the run, worst first
    tags: tuple[str, ...] = ()
    curves: Mapping[str, Series] = field(default_factory=dict)  # thinned loss, grad norm

    @property
    def ended(self) -> bool:
        return self.state.ended

    @property
    def last_seen(self) -> float | None:
        """The run's newest sign of life: when an ended run ended."""
        ages = [a for a in (self.heartbeat_age, self.progress_age) if a is not None]
        return self.now - min(ages) if ages else None


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """The history keys a report reads, as a container (``key in filter``): what the rules
    read, the loss, grad-norm, step and eval families, any eval metric, token counts and the
    row time. A run directory's reader asks it about each key as it meets it."""

    exact: frozenset[str]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or key == "_step":  # every row's step comes anyway
            return False
        if key in self.exact or key == "_timestamp":
            return True
        lowered = key.lower()
        return lowered.startswith(EVAL_PREFIXES) or "token" in lowered

    def pick(self, run_keys: Iterable[str], limit: int = 32) -> list[str]:
        """The wanted keys among ``run_keys``, at most ``limit``: exact ones first."""
        mine = sorted((k for k in run_keys if k in self and k != "_timestamp"),
                      key=lambda k: (k not in self.exact, len(k), k))
        return mine[:limit]


def report_keys(rules: Iterable[Rule], aliases: Mapping[str, tuple[str, ...]]) -> KeyFilter:
    found = {k for rule in rules for m in rule.metrics() for k in keynames.candidates(m, aliases)}
    for name in ("loss", "grad_norm", "step", "eval_loss", "eval_accuracy"):
        found.update(keynames.candidates(name, aliases))
    return KeyFilter(frozenset(found - {"_step"}))


def characterize(run: RunSnapshot, *, rules: Sequence[Rule],
                 aliases: Mapping[str, tuple[str, ...]], now: float,
                 stored: Iterable[AlertState] = (), tick: float = DEFAULT_TICK,
                 max_ticks: int = MAX_TICKS, replayed: bool = True) -> RunReport:
    """The health report of ``run`` (a snapshot carrying its history, whole or sampled).

    ``stored`` are the daemon's alerts for the run, if a store is at hand: one firing there
    counts as firing here too, so a report never calls healthy what the channel was told
    is broken. ``tick`` and ``max_ticks`` size the replay (see ``replay``): the digest,
    judging a thousand runs, replays in fewer, longer slices. With ``replayed`` False the
    rules are not replayed — ``stored`` is the whole judgement (the status pages, whose
    curves are thinned) — and only say what kind each alert is and the grad norm's bounds.
    """
    judged = replay(rules if replayed else (), run, now, aliases, tick=tick,
                    max_ticks=max_ticks)
    holding = {a.rule: a for a in judged.holding()}
    for alert in stored:
        if alert.status == AlertStatus.FIRING and alert.rule not in holding:
            holding[alert.rule] = alert
    alerts = tuple(sorted(holding.values(), key=worst_first))
    reasons = [Reason(severity=a.severity, text=a.summary or a.rule, rule=a.rule, step=a.step)
               for a in alerts]

    loss_key = keynames.resolve("loss", run.keys, aliases)
    loss_series = run.history.get(loss_key) if loss_key else None
    loss = curves.trend(loss_series) if loss_series else None
    if loss is not None and loss.finite and loss.direction in (Direction.DIVERGING,
                                                                Direction.WORSENING):
        reasons.append(Reason(severity=Severity.WARNING, text=_trend_text(loss_key, loss),
                              step=loss.last_step))

    kinds = {rule.name: rule.kind for rule in rules}
    health = _health(reasons)
    grad_key = keynames.resolve("grad_norm", run.keys, aliases)
    grad_series = run.history.get(grad_key) if grad_key else None
    drawn = {k: curves.thin(s, CURVE_POINTS) for k, s in
             (("loss", loss_series), ("grad_norm", grad_series)) if s is not None and s.values}
    return RunReport(
        run=run.ref, state=run.state, now=now, health=health,
        reasons=tuple(sorted(reasons, key=lambda r: -r.severity.rank)),
        liveness=_liveness(run, alerts, kinds), heartbeat_age=_age(run.heartbeat, now),
        progress_age=_age(run.progress, now), started=run.started,
        loss_key=loss_key, loss=loss,
        grad=_grad(grad_key, grad_series, rules, aliases, holding),
        evals=_evals(run.history), pace=_pace(run, aliases), tokens_per_s=_tokens(run.history),
        config=runconfig.highlights(run.config), alerts=alerts, tags=run.tags, curves=drawn,
    )


def _health(reasons: Sequence[Reason]) -> Health:
    worst = max((r.severity.rank for r in reasons), default=0)
    return (Health.HEALTHY, Health.WARNING, Health.CRITICAL)[worst]


def _trend_text(key: str | None, loss: Trend) -> str:
    if loss.direction == Direction.DIVERGING:
        return (f"{key} diverging: {loss.last:.4g} is {loss.above_best:+.0%} above its best"
                f" ({loss.best:.4g} at step {loss.best_step}) and rising")
    return f"{key} worsening: {loss.first:.4g} → {loss.last:.4g} ({loss.change:+.1%})"


def _age(when: float | None, now: float) -> float | None:
    return None if when is None else max(0.0, now - when)


def _liveness(run: RunSnapshot, alerts: Sequence[AlertState], kinds: Mapping[str, str]
              ) -> Liveness:
    if run.state.ended:
        return Liveness.ENDED
    held = {kinds.get(a.rule) for a in alerts}
    if "heartbeat" in held:
        return Liveness.DEAD
    if "progress" in held:
        return Liveness.HUNG
    return Liveness.ALIVE


def _grad(key: str | None, series: Series | None, rules: Sequence[Rule],
          aliases: Mapping[str, tuple[str, ...]], holding: Mapping[str, AlertState]
          ) -> GradHealth | None:
    if key is None or series is None or not series.values:
        return None
    bounds, held = [], []
    for rule in rules:
        if rule.kind != "threshold" or key not in keynames.candidates(rule.metric, aliases):
            continue
        bounds.append(f"{rule.op} {rule.value:g} {rule.severity} ({rule.name})")
        if rule.name in holding:
            held.append(rule.name)
    recent = series.values[-curves.window_size(len(series.values)):]
    finite = [v for v in recent if math.isfinite(v)]
    return GradHealth(key=key, latest=series.values[-1],
                      recent_max=max(finite) if finite else math.nan,
                      bounds=tuple(bounds), holding=tuple(held))


def is_eval(key: str) -> bool:
    return key.lower().startswith(EVAL_PREFIXES)


def higher_is_better(key: str) -> bool:
    leaf = key.lower().replace("/", "_")
    return not any(word in leaf for word in LOWER_IS_BETTER)


def _evals(history: Mapping[str, Series]) -> tuple[EvalMetric, ...]:
    out = []
    for key in sorted(k for k in history if is_eval(k)):
        series = history[key]
        up = higher_is_better(key)
        found = curves.best(series, higher_is_better=up)
        if found is None:
            continue
        out.append(EvalMetric(key=key, latest=series.values[-1], latest_step=series.steps[-1],
                              best=found[0], best_step=found[1], higher_is_better=up))
    # losses first: what people compare runs by
    out.sort(key=lambda e: (e.higher_is_better, e.key))
    return tuple(out[:MAX_EVALS])


def _pace(run: RunSnapshot, aliases: Mapping[str, tuple[str, ...]]) -> Pace:
    step_key = keynames.resolve("step", run.keys - {"_step"}, aliases)
    series = run.history.get(step_key) if step_key else None
    if series is not None and series.values and math.isfinite(series.values[-1]):
        step: int | None = int(series.values[-1])
        rate = curves.step_rate(series.values, series.times)
    else:
        step_key = "_step"
        step = run.last_step
        line = run.history.get("_timestamp") or max(run.history.values(),
                                                    key=lambda s: len(s.steps), default=None)
        rate = curves.step_rate(line.steps, line.times) if line is not None else None
    found = runconfig.total_steps(run.config)
    total, total_from = found if found else (None, None)
    eta = None
    if total is not None and step is not None and rate and not run.state.ended:
        eta = max(0.0, (total - step) / rate)
    return Pace(step=step, step_key=step_key, total=total, total_from=total_from,
                rate=rate, eta=eta)


def _tokens(history: Mapping[str, Series]) -> float | None:
    """Tokens per second: a logged rate's recent median, else a token count's pace."""
    for key, series in sorted(history.items()):
        lowered = key.lower()
        if any(h in lowered for h in TOKEN_RATE_HINTS) and series.values:
            value = curves.value_at(series, series.steps[-1])
            if value is not None and math.isfinite(value):
                return value
    for key, series in sorted(history.items()):
        if key.rsplit("/", 1)[-1].lower() in TOKEN_TOTALS and len(series.values) > 1:
            return curves.step_rate(series.values, series.times)
    return None
