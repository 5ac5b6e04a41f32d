"""Plain-value builders for unit tests of the pure parts (checks, engine)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from runwatch.checks import RULE_ADAPTER, Rule
from runwatch.model import RunRef, RunSnapshot, RunState, Series

T0 = 1_760_000_000.0  # a fixed "now" for tests: 2025-10-09T08:53:20Z


def canon(value: Any) -> Any:
    """A comparable form of ``value`` in which NaN equals NaN, 1 differs from 1.0 and -0.0
    from 0.0: stored values compared exactly."""
    if isinstance(value, float):
        return ("float", repr(value))
    if is_dataclass(value) and not isinstance(value, type):
        items = tuple((f.name, canon(getattr(value, f.name))) for f in fields(value))
        return (type(value).__name__, items)
    if isinstance(value, dict):
        return ("map", tuple(sorted((k, canon(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("seq", tuple(canon(v) for v in value))
    return value


def rule(**fields: Any) -> Rule:
    fields.setdefault("name", "r")
    fields.setdefault("severity", "warning")
    return RULE_ADAPTER.validate_python(fields)


def series(values: Sequence[float], *, start_step: int = 0, start_time: float = T0,
           interval: float = 10.0) -> Series:
    n = len(values)
    return Series(steps=tuple(range(start_step, start_step + n)),
                  times=tuple(start_time + i * interval for i in range(n)),
                  values=tuple(float(v) for v in values))


def snapshot(history: Mapping[str, Series] | None = None, *, state: RunState = RunState.RUNNING,
             heartbeat: float | None = T0, progress: float | None = None,
             started: float | None = None, keys: Sequence[str] | None = None,
             run_id: str = "abc123", name: str = "llama-7b", project: str = "pretrain",
             entity: str = "team", tags: Sequence[str] = (), group: str = "",
             config: Mapping[str, Any] | None = None) -> RunSnapshot:
    history = dict(history or {})
    last_step = max((s.steps[-1] for s in history.values() if s.steps), default=None)
    if progress is None:
        progress = max((s.times[-1] for s in history.values() if s.times), default=None)
    return RunSnapshot(
        ref=RunRef(source="test", id=run_id, name=name, project=project, entity=entity,
                   location=f"/runs/run-{run_id}"),
        state=state, heartbeat=heartbeat, progress=progress, started=started,
        last_step=last_step, tags=tuple(tags), group=group, config=dict(config or {}),
        keys=frozenset(keys if keys is not None else history), history=history,
    )


# --- notify: alerts and messages as the notifiers get them --------------------------------
# (imported here so this section stays self-contained below the builders above)

from runwatch.model import AlertState, AlertStatus, Severity, fingerprint  # noqa: E402
from runwatch.notify.base import Chart, Message, Reason  # noqa: E402


def notify_alert(rule: str = "grad-norm-exploding", *, run_id: str = "abc123",
                 name: str = "llama-7b", status: str = "firing", severity: str = "critical",
                 summary: str = "grad norm 12.3 > 10", metric: str | None = "grad_norm",
                 location: str | None = None, labels: Mapping[str, str] | None = None,
                 fired_at: float = T0 - 3600) -> AlertState:
    """A firing (or resolved, at T0) alert of a W&B run; its page is the run's location
    unless ``location`` says otherwise."""
    run = RunRef(source="wandb", id=run_id, name=name, project="pretrain", entity="team",
                 location=(location if location is not None
                           else f"https://wandb.ai/team/pretrain/runs/{run_id}"))
    return AlertState(
        fingerprint=fingerprint(rule, run), rule=rule, run=run, severity=Severity(severity),
        status=AlertStatus(status), fired_at=fired_at,
        resolved_at=T0 if status == "resolved" else None, metric=metric, value=12.3,
        step=1200, summary=summary, labels=dict(labels or {}),
    )


def notify_message(firing: Sequence[AlertState] = (), resolved: Sequence[AlertState] = (), *,
                   receiver: str, group_key: str = "g", id: str = "out-1",
                   reason: Reason = Reason.FIRST, refs: Mapping[str, str] | None = None,
                   charts: Mapping[str, Chart] | None = None, **fields: Any) -> Message:
    """A message decided at T0."""
    return Message(id=id, receiver=receiver, group_key=group_key, firing=tuple(firing),
                   resolved=tuple(resolved), created_at=T0, reason=reason,
                   refs=dict(refs or {}), charts=dict(charts or {}), **fields)
