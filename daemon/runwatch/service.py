"""The one cycle behind ``runwatch check`` and every scheduled tick of ``runwatch run``:
read the sources, evaluate, commit, then deliver what the store now says needs telling.

:class:`Runtime` is everything built from one config — rules, live sources, notifiers — so
the daemon can build a new one on reload and swap it in only when it is whole.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runwatch.config import Config, RuleSet
from runwatch.notify.base import Notifier
from runwatch.sources.base import Source
from runwatch.store.base import Store
from runwatch.tick import TickReport, run_tick
from runwatch.wiring import build_sources

log = logging.getLogger("runwatch.service")

# A busy tick allocates a few objects per row read (some 300,000 for 50,000 rows) beside a
# heap that holds every watched run's state; at the interpreter's default thresholds
# (700, 10, 10) the cyclic collector walks that heap hundreds of times a tick — a third of
# a busy tick's time in bench/rundir_tick.py. runwatch makes almost no reference cycles
# (its garbage is freed as it goes), so a ticking process collects far less often.
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """The cyclic collector's thresholds for a process that ticks (``run``, ``check``)."""
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """What one config builds; reused parts keep their connections across reloads."""

    config: Config
    rule_set: RuleSet
    sources: tuple[Source, ...]
    notifiers: Mapping[str, Notifier] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # receivers that could not be set up, one line each

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def spec(self, name: str) -> Any:
        """The config of the source called ``name``, or None."""
        return next((s for s in self.config.sources if s.name == name), None)

    def close(self, *, keep: Runtime | None = None) -> None:
        """Close the notifiers and sources ``keep`` does not reuse."""
        kept = set(map(id, keep.notifiers.values())) | set(map(id, keep.sources)) if keep \
            else set()
        for notifier in self.notifiers.values():
            if id(notifier) not in kept:
                notifier.close()
        for source in self.sources:
            if id(source) not in kept and hasattr(source, "close"):
                source.close()


def build_runtime(config: Config, rule_set: RuleSet, *, previous: Runtime | None = None,
                  notify: bool = True) -> Runtime:
    """Sources and notifiers for ``config``. A source or receiver whose config did not
    change since ``previous`` is reused as it is (a W&B source keeps its client)."""
    sources: list[Source] = []
    fresh = {s.name: s for s in build_sources(config)}  # builds contact nothing
    for spec in config.sources:
        old = previous.source(spec.name) if previous else None
        old_spec = previous.spec(spec.name) if previous else None
        sources.append(old if old is not None and old_spec == spec else fresh[spec.name])
    notifiers: dict[str, Notifier] = {}
    problems: list[str] = []
    if notify and config.receivers:
        from runwatch.notify.receivers import build_notifier

        for receiver in config.receivers:
            old_receiver = previous.config.receiver(receiver.name) if previous else None
            if previous and old_receiver == receiver and receiver.name in previous.notifiers:
                notifiers[receiver.name] = previous.notifiers[receiver.name]
                continue
            try:
                notifiers[receiver.name] = build_notifier(receiver)
            except Exception as exc:  # one broken receiver must not keep the others quiet
                problems.append(f"receiver {receiver.name}: cannot be set up: {exc}")
    return Runtime(config=config, rule_set=rule_set, sources=tuple(sources),
                   notifiers=notifiers, problems=tuple(problems))


@dataclass(frozen=True, kw_only=True)
class CycleReport:
    tick: TickReport
    notifications: dict[str, Any] | None  # the pipeline's summary; None on a dry run


def run_cycle(runtime: Runtime, store: Store, now: float, *,
              sources: Sequence[Source] | None = None, dry_run: bool = False) -> CycleReport:
    """One tick over ``sources`` (default: all), then delivery through the notifiers."""
    report = tick(runtime, store, now, sources=sources, dry_run=dry_run)
    if dry_run:
        return CycleReport(tick=report, notifications=None)
    return CycleReport(tick=report, notifications=deliver(runtime, store, now,
                                                          charts=report.charts))


def tick(runtime: Runtime, store: Store, now: float, *,
         sources: Sequence[Source] | None = None, dry_run: bool = False) -> TickReport:
    """The cycle's first half: read ``sources`` (default: all), evaluate, commit."""
    return run_tick(sources=runtime.sources if sources is None else sources,
                    rules=runtime.rule_set.rules, aliases=runtime.rule_set.aliases,
                    store=store, now=now, dry_run=dry_run)


def deliver(runtime: Runtime, store: Store, now: float, *,
            charts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Plan and send what the store's alert states call for; a summary for printing."""
    if not runtime.config.receivers:
        return {"skipped": "no receivers configured"}
    from runwatch.notify.pipeline import notify_after_tick

    result = notify_after_tick(store, runtime.config, runtime.notifiers, now,
                               charts=charts).as_json()
    result["errors"] = list(runtime.problems) + list(result["errors"])
    return result


def source_status(*, started_at: float, duration: float, ok: bool, runs: int,
                  errors: Sequence[str], transitions: int = 0, by: str = "run",
                  last_ok: float | None = None) -> dict[str, Any]:
    """What ``runwatch status`` shows of one source's last tick, as the store keeps it."""
    import os

    status: dict[str, Any] = {
        "last_tick": started_at, "duration": round(duration, 3), "ok": ok, "runs": runs,
        "transitions": transitions, "errors": list(errors)[:20], "error_count": len(errors),
        "pid": os.getpid(), "by": by}
    if last_ok is not None:
        status["last_ok"] = last_ok
    return status
