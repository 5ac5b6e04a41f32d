"""Health reports as JSON: the ``--json`` output of ``characterize``, ``watch`` and
``compare``, and the runs of the digest's webhook body. The schema is documented in the
README ("Reports as JSON"); NaN and ±inf are the strings W&B itself uses."""

from __future__ import annotations

import math
from typing import Any

from runwatch.analysis.characterize import RunReport
from runwatch.analysis.compare import Aligned, Comparison
from runwatch.analysis.runconfig import MISSING
from runwatch.analysis.watch import WatchReport

SCHEMA_VERSION = 1


def number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def plain(value: Any) -> Any:
    """A config value as JSON can hold it."""
    if value is MISSING:
        return None
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def run_json(r: RunReport) -> dict[str, Any]:
    loss = r.loss
    pace = r.pace
    return {
        "run": {"path": r.run.path, "id": r.run.id, "name": r.run.display_name,
                "project": r.run.project, "entity": r.run.entity, "location": r.run.location},
        "state": str(r.state),
        "health": str(r.health),
        "reasons": [{"severity": str(x.severity), "text": x.text, "rule": x.rule, "step": x.step}
                    for x in r.reasons],
        "liveness": str(r.liveness),
        "heartbeat_age_s": number(r.heartbeat_age),
        "progress_age_s": number(r.progress_age),
        "started": r.started,
        "tags": list(r.tags),
        "loss": None if loss is None else {
            "key": r.loss_key, "first": number(loss.first), "last": number(loss.last),
            "best": number(loss.best), "best_step": loss.best_step,
            "change": number(loss.change), "direction": str(loss.direction),
            "points": loss.points, "window": loss.window},
        "grad_norm": None if r.grad is None else {
            "key": r.grad.key, "latest": number(r.grad.latest),
            "recent_max": number(r.grad.recent_max), "bounds": list(r.grad.bounds),
            "holding": list(r.grad.holding)},
        "evals": [{"key": e.key, "latest": number(e.latest), "latest_step": e.latest_step,
                   "best": number(e.best), "best_step": e.best_step,
                   "higher_is_better": e.higher_is_better} for e in r.evals],
        "pace": {"step": pace.step, "step_key": pace.step_key, "total": pace.total,
                 "total_from": pace.total_from,
                 "steps_per_hour": number(pace.rate * 3600) if pace.rate else None,
                 "eta_s": number(pace.eta), "fraction": number(pace.fraction)},
        "tokens_per_s": number(r.tokens_per_s),
        "config": {k: plain(v) for k, v in r.config.items()},
        "alerts": [{"rule": a.rule, "severity": str(a.severity), "status": str(a.status),
                    "summary": a.summary, "step": a.step, "value": number(a.value)}
                   for a in r.alerts],
    }


def watch_json(w: WatchReport) -> dict[str, Any]:
    return {"version": SCHEMA_VERSION, "now": w.now, "since": w.since,
            "running": [run_json(r) for r in w.running],
            "ended": [run_json(r) | {"ended_at": r.last_seen} for r in w.ended]}


def _aligned(points: tuple[Aligned, ...]) -> list[dict[str, Any]]:
    return [{"step": p.step, "a": number(p.a), "b": number(p.b)} for p in points]


def compare_json(c: Comparison) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "a": run_json(c.a), "b": run_json(c.b),
        "config": [{"key": k, "a": plain(a), "b": plain(b)} for k, a, b in c.config],
        "loss": _aligned(c.loss), "grad_norm": _aligned(c.grad_norm),
        "evals": [{"key": e.key, "step": e.step, "a": number(e.a), "b": number(e.b),
                   "best_a": number(e.best_a), "best_b": number(e.best_b),
                   "higher_is_better": e.higher_is_better} for e in c.evals],
        "winner": c.winner, "reasons": list(c.reasons),
    }
