"""One tick: read every source, evaluate every run, store what changed.

The one code path behind ``runwatch check`` and, on a schedule, the daemon. A source that
fails is reported and skipped; the other sources are still checked. The store is written
once per source, alerts and cursors in one transaction, so a crash between two ticks can
neither skip a run's new rows nor count them twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from runwatch import keys
from runwatch.checks import Rule
from runwatch.engine import evaluate, retire
from runwatch.model import AlertStatus, RunSnapshot, Transition, fingerprint
from runwatch.sources.base import Source
from runwatch.store.base import Store


@dataclass(frozen=True, kw_only=True, slots=True)
class TickReport:
    transitions: tuple[Transition, ...]
    runs_checked: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def wanted_keys(rules: Iterable[Rule], aliases: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """Every history key any rule may read, after alias expansion: what a source decodes."""
    return frozenset(
        key for rule in rules for metric in rule.metrics()
        for key in keys.candidates(metric, aliases)
    )


def run_tick(
    *,
    sources: Sequence[Source],
    rules: Sequence[Rule],
    aliases: Mapping[str, tuple[str, ...]],
    store: Store,
    now: float,
    dry_run: bool = False,
) -> TickReport:
    """Poll, evaluate and (unless ``dry_run``) commit every source in turn."""
    wanted = wanted_keys(rules, aliases)
    transitions: list[Transition] = []
    errors: list[str] = []
    snapshots: list[RunSnapshot] = []
    for source in sources:
        cursors = store.load_cursors(source.name)  # a store failure fails the tick, loudly
        try:
            poll = source.poll(cursors, wanted, now)
        except Exception as exc:  # one source's outage or bug must not stop the others
            what = exc if isinstance(exc, OSError) else f"unexpected {type(exc).__name__}: {exc}"
            errors.append(f"source {source.name}: {what}")
            continue
        errors.extend(poll.errors)
        alerts = []
        previous = store.load_alerts(_fingerprints(rules, poll.snapshots))
        for snapshot in poll.snapshots:
            try:
                result = evaluate(rules, snapshot, previous, now, aliases)
            except Exception as exc:  # one run's bad data must not stop the others
                errors.append(f"run {snapshot.ref.path}: evaluation failed:"
                              f" {type(exc).__name__}: {exc}")
                continue
            alerts.extend(result.alerts)
            transitions.extend(result.transitions)
        snapshots.extend(poll.snapshots)
        if not dry_run:
            store.commit_tick(source=source.name, alerts=alerts, cursors=poll.cursors, now=now)
    retired = retire(store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING)),
                     {rule.name for rule in rules}, now)
    transitions.extend(retired.transitions)
    if retired.alerts and not dry_run:
        store.commit_tick(source="", alerts=retired.alerts, cursors={}, now=now)
    return TickReport(transitions=tuple(transitions), runs_checked=len(snapshots),
                      errors=tuple(errors),
                      warnings=tuple(unlogged_metrics(rules, snapshots, aliases)))


def unlogged_metrics(rules: Iterable[Rule], snapshots: Sequence[RunSnapshot],
                     aliases: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Rules reading an exact key that no run they match has ever logged: most often a
    typo (``train/gradnorm``) that would otherwise leave the rule silent forever.

    Aliases are left out — a team that logs no grad norm is not told so every tick — and so
    is ``absent``, whose point is a metric that is not there.
    """
    warnings = []
    for rule in rules:
        exact = [m for m in rule.metrics() if m not in aliases and not m.startswith("_")]
        if rule.kind == "absent" or not exact:
            continue  # the common case, and no run needs matching for it
        matched = [s for s in snapshots if rule.match.matches(s)]
        for metric in exact:
            if matched and not any(metric in s.keys for s in matched):
                warnings.append(f"rule {rule.name!r}: metric {metric!r} is logged by none of"
                                f" the {len(matched)} runs it matched")
    return warnings


def _fingerprints(rules: Sequence[Rule], snapshots: Iterable[RunSnapshot]) -> list[str]:
    return [fingerprint(rule.name, snap.ref) for snap in snapshots for rule in rules]
