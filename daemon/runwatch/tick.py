"""One tick: read every source, evaluate every run, store what changed.

The one code path behind ``runwatch check`` and, on a schedule, the daemon. A source that
fails is reported and skipped; the other sources are still checked. The store is written
once per source, alerts and cursors in one transaction, so a crash between two ticks can
neither skip a run's new rows nor count them twice.

A run whose evaluation raises keeps the cursor it had: its new rows are read again on the
next tick, and the error is reported again on every tick they still cannot be judged —
a run that is not being watched says so each time, not once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from runwatch import keys
from runwatch.checks import Rule
from runwatch.engine import Quiet, evaluate, fingerprints, retire
from runwatch.model import (
    AlertState,
    AlertStatus,
    RunRef,
    RunSnapshot,
    Severity,
    Transition,
    fingerprint,
)
from runwatch.notify.base import Chart
from runwatch.sources.base import Poll, Source
from runwatch.store.base import Store
from runwatch.window import NONE, Window

# The alert a source raises about itself when it cannot reach where its runs live.
SOURCE_UNREACHABLE = "source-unreachable"


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceTick:
    """What one source's part of a tick came to: for ``runwatch status``."""

    ok: bool  # answered, and raised nothing
    runs: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TickReport:
    transitions: tuple[Transition, ...]
    runs_checked: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    # The points of the metric an alert fired on, up to where it fired, by fingerprint:
    # what receivers with `charts: true` draw.
    charts: Mapping[str, Chart] = field(default_factory=dict)
    # Sources that raised, or got no answer from where their runs live: their runs were
    # not judged this tick (what `/readyz` and `runwatch status` report).
    failed_sources: tuple[str, ...] = ()
    by_source: Mapping[str, SourceTick] = field(default_factory=dict)
    # What was read of each run this tick (the status pages keep a row per run from it).
    snapshots: tuple[RunSnapshot, ...] = ()


def wanted_keys(rules: Iterable[Rule], aliases: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """Every history key any rule may read, after alias expansion: what a source decodes."""
    return frozenset(
        key for rule in rules for metric in rule.metrics()
        for key in keys.candidates(metric, aliases)
    )


def history_needed(rules: Iterable[Rule]) -> Window:
    """The newest history every rule can judge a run by on first sight: what a source's
    first read of a run takes (with its own ``first_read``, if larger)."""
    window = NONE
    for rule in rules:
        window |= rule.history_needed()
    return window


def keys_for_run(rules: Sequence[Rule], aliases: Mapping[str, tuple[str, ...]]
                 ) -> Callable[[RunSnapshot], frozenset[str]]:
    """The history keys the rules matching one run read, resolved against its keys: what a
    source that pays per key fetched asks for."""
    # Rules that read no history (state, heartbeat) need no matching per run.
    reading = [(rule.match, metrics) for rule in rules if (metrics := rule.metrics())]

    def keys_for(snapshot: RunSnapshot) -> frozenset[str]:
        found = set()
        for match, metrics in reading:
            if match.matches(snapshot):
                for metric in metrics:
                    key = keys.resolve(metric, snapshot.keys, aliases)
                    if key is not None:
                        found.add(key)
        return frozenset(found)

    return keys_for


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
    keys_for = keys_for_run(rules, aliases)
    needs_config = any(rule.match.config for rule in rules)
    window = history_needed(rules)
    by_name = {rule.name: rule for rule in rules}
    charts: dict[str, Chart] = {}
    transitions: list[Transition] = []
    errors: list[str] = []
    snapshots: list[RunSnapshot] = []
    failed: list[str] = []
    by_source: dict[str, SourceTick] = {}
    for source in sources:
        cursors = store.load_cursors(source.name)  # a store failure fails the tick, loudly
        try:
            poll = source.poll(cursors, wanted, now, keys_for=keys_for,
                               needs_config=needs_config, window=window)
        except Exception as exc:  # one source's outage or bug must not stop the others
            what = exc if isinstance(exc, OSError) else f"unexpected {type(exc).__name__}: {exc}"
            errors.append(f"source {source.name}: {what}")
            failed.append(source.name)
            by_source[source.name] = SourceTick(ok=False, runs=0,
                                                errors=(f"source {source.name}: {what}",))
            continue
        errors.extend(poll.errors)
        if not poll.reachable:
            failed.append(source.name)
        by_source[source.name] = SourceTick(ok=poll.reachable, runs=len(poll.snapshots),
                                            errors=tuple(poll.errors))
        alerts = []
        held: set[str] = set()  # cursor keys of runs whose new rows were not judged
        about_key = fingerprint(SOURCE_UNREACHABLE, source_ref(source.name))
        previous = store.load_alerts([about_key, *_fingerprints(rules, poll.snapshots)])
        # What stayed quiet last tick and until when (engine.Quiet), for this tick's runs.
        known = _QUIET.get(source, {})
        quiet_until = {fp: q for fp, q in known.items() if previous.get(fp) is q.before}
        _QUIET[source] = quiet_until
        for snapshot in poll.snapshots:
            try:
                result = evaluate(rules, snapshot, previous, now, aliases,
                                  quiet_until=quiet_until)
            except Exception as exc:  # one run's bad data must not stop the others
                keys = cursor_keys(snapshot.ref)
                failures = _FAILURES.setdefault(source, {})
                count = failures.get(snapshot.ref.path, 0) + 1
                what = (f"run {snapshot.ref.path}: evaluation failed{_steps(snapshot)}:"
                        f" {type(exc).__name__}: {exc}")
                if count < HOLD_TICKS or dry_run:
                    failures[snapshot.ref.path] = count
                    errors.append(f"{what}; its cursor stays, so it is read again next tick")
                    held.update(keys)
                else:  # the same rows fail every time: judging them is not going to happen
                    failures.pop(snapshot.ref.path, None)
                    errors.append(f"{what}; failed {count} ticks in a row, so these rows are"
                                  " skipped and the run is judged from the next ones")
                continue
            _FAILURES.get(source, {}).pop(snapshot.ref.path, None)
            alerts.extend(result.alerts)
            transitions.extend(result.transitions)
            for fired in result.transitions:
                if fired.status == AlertStatus.FIRING:
                    drawn = chart(fired.alert, snapshot, by_name.get(fired.alert.rule))
                    if drawn is not None:
                        charts[fired.alert.fingerprint] = drawn
        snapshots.extend(poll.snapshots)
        about_source = source_alert(source.name, poll, previous.get(about_key), now)
        if about_source is not None:
            alerts.append(about_source.alert)
            transitions.append(about_source)
        cursors = {k: v for k, v in poll.cursors.items() if k not in held}
        if not dry_run:
            store.commit_tick(source=source.name, alerts=alerts, cursors=cursors, now=now)
    names = frozenset({rule.name for rule in rules} | {SOURCE_UNREACHABLE})
    if _RETIRED.get(store) != names:
        retired = retire(store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING)),
                         names, now)
        transitions.extend(retired.transitions)
        if not dry_run:
            if retired.alerts:
                store.commit_tick(source="", alerts=retired.alerts, cursors={}, now=now)
            _RETIRED[store] = names
    return TickReport(transitions=tuple(transitions), runs_checked=len(snapshots),
                      errors=tuple(errors),
                      warnings=tuple(unlogged_metrics(rules, snapshots, aliases)),
                      charts=charts, failed_sources=tuple(failed), by_source=by_source,
                      snapshots=tuple(snapshots))


# A run whose evaluation raises keeps its cursor for this many ticks in a row; then its
# rows are skipped (a bug that fails the same rows every time must not blind the run for
# ever, nor grow its re-read without end). Counted per live source object.
HOLD_TICKS = 3
_FAILURES: weakref.WeakKeyDictionary[Source, dict[str, int]] = weakref.WeakKeyDictionary()
# Per live source object: the alerts its last tick left quiet, and until when they stay so
# if nothing new comes (see engine.evaluate). Entries whose stored state has changed since
# (another tick's write, a reload of the store's states) are dropped at the next tick.
_QUIET: weakref.WeakKeyDictionary[Source, dict[str, Quiet]] = weakref.WeakKeyDictionary()


# Per live store object: the rule names its holding alerts were last retired against. An
# alert of a rule no longer loaded comes only from a change of the rules (or from before a
# start), so while the names stay the same an idle tick asks the store nothing about it —
# on PostgreSQL that query was half of an idle tick's time.
_RETIRED: weakref.WeakKeyDictionary[Store, frozenset[str]] = weakref.WeakKeyDictionary()


def cursor_keys(ref: RunRef) -> tuple[str, ...]:
    """The keys a source may keep a run's cursor under: W&B sources its path
    (entity/project/id), run-directory sources its location (the directory)."""
    return tuple(key for key in (ref.path, ref.location) if key)


def _steps(snapshot: RunSnapshot) -> str:
    """`` on steps 10-14`` of the rows a snapshot brings (`` at step 14`` without new
    rows), for the line saying they could not be judged."""
    ends = [s.steps[i] for s in snapshot.history.values() if s.steps for i in (0, -1)]
    if ends and min(ends) != max(ends):
        return f" on steps {min(ends)}-{max(ends)}"
    step = ends[0] if ends else snapshot.last_step
    return f" at step {step}" if step is not None else ""


CHART_POINTS = 500


def chart(alert: AlertState, snapshot: RunSnapshot, rule: Rule | None) -> Chart | None:
    """The last points of the metric an alert fired on, up to the firing step."""
    series = snapshot.history.get(alert.metric or "")
    if series is None or not series.steps:
        return None
    end = len(series.steps)
    if alert.step is not None:
        end = next((i + 1 for i in range(end - 1, -1, -1) if series.steps[i] <= alert.step), 0)
    start = max(0, end - CHART_POINTS)
    if end == 0:
        return None
    threshold = getattr(rule, "value", None) if rule is not None and rule.kind == "threshold" \
        else None
    return Chart(metric=alert.metric or "", steps=tuple(series.steps[start:end]),
                 values=tuple(series.values[start:end]),
                 threshold=float(threshold) if threshold is not None else None,
                 firing_step=alert.step)


def source_ref(name: str) -> RunRef:
    """The run a source's own alert is about: the source itself."""
    return RunRef(source=name, id=name, name=f"source {name}")


def source_alert(name: str, poll: Poll, before: AlertState | None,
                 now: float) -> Transition | None:
    """The `source-unreachable` alert's change this tick, if any, given its stored state
    ``before``: it fires once the source says it has been unreachable too long, and
    resolves on the first tick it answers."""
    firing = before is not None and before.status == AlertStatus.FIRING
    if poll.unreachable is not None and not firing:
        ref = source_ref(name)
        alert = AlertState(fingerprint=fingerprint(SOURCE_UNREACHABLE, ref),
                           rule=SOURCE_UNREACHABLE, run=ref,
                           severity=Severity.CRITICAL, status=AlertStatus.FIRING,
                           active_since=now, fired_at=now, first_seen=now, last_seen=now,
                           summary=poll.unreachable, labels={"source": name})
        return Transition(alert=alert, previous=before.status if before else AlertStatus.INACTIVE)
    if poll.reachable and firing:
        assert before is not None
        return Transition(alert=replace(before, status=AlertStatus.RESOLVED, resolved_at=now,
                                        last_seen=now, resolution="source answers again"),
                          previous=AlertStatus.FIRING)
    return None


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
    return [fp for snap in snapshots for fp in fingerprints(rules, snap)]
