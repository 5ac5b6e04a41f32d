"""Frozen value types shared by every part of runwatch.

Times are Unix seconds as floats (the unit wandb itself records), so the pure parts —
checks, the engine, dedup — compare plain numbers and take ``now`` as an argument.
This module imports nothing of runwatch's own.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 2 for critical: the worse, the higher."""
        return _SEVERITY_RANKS[self]


_SEVERITY_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class RunState(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"
    KILLED = "killed"
    PREEMPTED = "preempted"
    UNKNOWN = "unknown"

    @property
    def ended(self) -> bool:
        return self not in (RunState.RUNNING, RunState.UNKNOWN)


class AlertStatus(enum.StrEnum):
    INACTIVE = "inactive"  # evaluated, condition not holding; keeps check memory
    PENDING = "pending"  # condition holds, `for:` not yet satisfied
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRef:
    """Who a run is. ``location`` is the run directory or the run's page."""

    source: str
    id: str
    name: str = ""
    project: str = ""
    entity: str = ""
    location: str = ""

    @property
    def path(self) -> str:
        """``entity/project/run_id`` when known, the run's location otherwise."""
        if self.entity and self.project:
            return f"{self.entity}/{self.project}/{self.id}"
        return self.location or self.id

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass(frozen=True, kw_only=True, slots=True)
class Series:
    """New points of one metric, columnar: a tick evaluates whole columns at C speed."""

    steps: tuple[int, ...] = ()
    times: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.values)


EMPTY_SERIES = Series()


# The resolution of an alert told once and closed at once: what the training code raised
# (code_alert). Receivers show it as news at its severity, not as a recovery.
TOLD_ONCE = "told once"


@dataclass(frozen=True, kw_only=True, slots=True)
class CodeAlert:
    """An alert the training code raised itself (``run.alert(title=…, text=…, level=…,
    wait_duration=…)``), as the run's log holds it. ``step`` and ``time`` are those of the
    newest history row logged before it (the record carries neither), when there is one."""

    title: str
    text: str = ""
    level: str = "INFO"  # INFO, WARN or ERROR, as the SDK writes it
    wait: float = 60.0  # seconds: the same title is not told again within this
    step: int | None = None
    time: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSnapshot:
    """What a source knows of one run at one tick.

    ``history`` holds only the points read since the run's cursor, keyed by the
    exact metric key; ``keys`` is every history key the run has ever logged, so
    aliases resolve the same way on every tick.
    """

    ref: RunRef
    state: RunState
    # Why the run is taken as ended when no record of its own said so ("no record for 2h")
    ended_why: str = ""
    heartbeat: float | None = None  # newest sign of life of the writer process
    progress: float | None = None  # time of the newest history row
    started: float | None = None
    last_step: int | None = None
    tags: tuple[str, ...] = ()
    group: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()
    history: Mapping[str, Series] = field(default_factory=dict)
    code_alerts: tuple[CodeAlert, ...] = ()  # raised since the cursor (run directories)


def fingerprint(rule: str, run: RunRef) -> str:
    """Stable identity of one (rule, run) alert across ticks, restarts and replicas.

    The run's path (``entity/project/id``, or its directory) is unique without the source's
    name, and leaving the name out keeps alerts when a source is renamed or re-pathed.
    """
    return fingerprint_at(rule, run.path)


# A tick asks twice per (rule, run): to load, to evaluate. Keyed by text, not by the RunRef,
# whose dataclass hash is computed in Python on every call.
@functools.lru_cache(maxsize=1 << 16)
def fingerprint_at(rule: str, path: str) -> str:
    """:func:`fingerprint` of the run at ``path`` (its ``RunRef.path``)."""
    return hashlib.sha256(f"{rule}\x00{path}".encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertState:
    """One (rule, run) pair as the engine left it; the store persists it verbatim.

    ``memory`` is the check's bounded window (JSON-serialisable), kept so an
    incremental tick never re-reads history and a restart loses nothing.
    """

    fingerprint: str
    rule: str
    run: RunRef
    severity: Severity
    status: AlertStatus = AlertStatus.INACTIVE
    active_since: float | None = None  # when the condition started holding
    since_step: int | None = None  # the step it started holding at, when known
    fired_at: float | None = None
    resolved_at: float | None = None
    first_seen: float | None = None
    last_seen: float | None = None  # last evaluation
    metric: str | None = None
    value: float | None = None  # the worst point (or, for a held condition, the newest)
    step: int | None = None
    first_value: float | None = None  # the first bad point: its value at ``since_step``
    latest_value: float | None = None  # the newest point read, bad or not, and its step
    latest_step: int | None = None
    summary: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: Any = None
    run_state: RunState = RunState.UNKNOWN  # the run's state when last evaluated
    # Why it resolved, in words every receiver shows: "condition cleared", "run ended:
    # killed", "rule removed", "source removed", "source answers again". Empty unless
    # resolved (and for alerts resolved before runwatch said why).
    resolution: str = ""


# dataclasses.replace for AlertState at about half the cost (an engine tick makes one per
# alert that moved: thousands a busy tick, one per rule a backtest tick): the same fields
# set through the slots' own descriptors, past the frozen __setattr__ — no __init__ logic
# is skipped, AlertState has none beyond setting its fields.
_ALERT_FIELDS = tuple(f.name for f in fields(AlertState))
_ALERT_SETTERS = tuple(getattr(AlertState, name).__set__ for name in _ALERT_FIELDS)
_ALERT_INDEX = {name: i for i, name in enumerate(_ALERT_FIELDS)}
_alert_values = operator.attrgetter(*_ALERT_FIELDS)


def evolve(alert: AlertState, **changes: Any) -> AlertState:
    """``alert`` with ``changes``, as ``dataclasses.replace`` makes it."""
    values = list(_alert_values(alert))
    index = _ALERT_INDEX
    for name, value in changes.items():
        if name not in index:
            raise TypeError(f"AlertState has no field {name!r}")
        values[index[name]] = value
    new = object.__new__(AlertState)
    for set_slot, value in zip(_ALERT_SETTERS, values, strict=True):
        set_slot(new, value)
    return new


def told_once(alert: AlertState) -> bool:
    """Whether ``alert`` was told once and closed at once (what the training code raised):
    news at its severity, never a recovery."""
    return alert.status == AlertStatus.RESOLVED and alert.resolution == TOLD_ONCE


def status_word(alert: AlertState) -> str:
    """``told`` for an alert told once, else its status: what every listing shows."""
    return "told" if told_once(alert) else str(alert.status)


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """A change of an alert's status that someone should hear about."""

    alert: AlertState
    previous: AlertStatus

    @property
    def status(self) -> AlertStatus:
        return self.alert.status
