"""The alert engine: rules × one run snapshot × the previous alert states → new states.

Pure: no clock, no disk, no network. ``now`` comes in, values go out — so a backtest can
replay a run tick by tick through exactly the function the daemon runs.

Lifecycle of one (rule, run) alert::

    inactive ──holds──► pending ──held for `for:`──► firing ──clears──► resolved
        ▲                  │ clears or run ends        │ run ends (resolve_on_end)
        └──────────────────┘                           ▼
                                                    resolved

An ended run is read one last time; an alert that fires on that tick (a NaN in the final
rows) is reported firing and resolved together.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from runwatch.checks import Context, Rule, Verdict
from runwatch.duration import format_duration
from runwatch.model import (
    TOLD_ONCE,
    AlertState,
    AlertStatus,
    RunSnapshot,
    Transition,
    evolve,
    fingerprint_at,
)
from runwatch.template import render

_HOLDING = (AlertStatus.PENDING, AlertStatus.FIRING)
_INACTIVE = AlertStatus.INACTIVE  # (a module global: cheaper than the enum's attribute)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    alerts: tuple[AlertState, ...]  # the states that are new or changed: what to store
    transitions: tuple[Transition, ...]  # what changed, in rule order


@dataclass(frozen=True, slots=True)
class Quiet:
    """An alert that a rule left as it was, and until when it would again: while the
    rule, the stored state and the run (:func:`_basis`) are the very same, asking the rule
    before ``until`` gives the same answer (:attr:`Verdict.until`), so it is not asked."""

    rule: Rule
    before: AlertState
    basis: tuple[object, ...]
    until: float


def evaluate(
    rules: Iterable[Rule],
    snapshot: RunSnapshot,
    previous: Mapping[str, AlertState],
    now: float,
    aliases: Mapping[str, tuple[str, ...]],
    *,
    quiet_until: dict[str, Quiet] | None = None,
) -> Evaluation:
    """Evaluate every rule that matches ``snapshot``'s run.

    ``previous`` maps fingerprints to the states the last tick left (missing = new).
    Rules that do not match the run leave no state and no transition. An alert that stays
    quiet with the same memory is left as it was and not returned: an idle tick over
    thousands of runs then writes (almost) nothing.

    ``quiet_until``, kept by the caller from tick to tick, lets an idle tick skip the
    rules that judge time or state (heartbeat, progress, state) on a run that brought
    nothing new, until the time their answer could change; the result is exactly that of
    asking them.

    An alert inactive before and after, of the same run state, severity and labels, is
    not rebuilt for the points it read (its value, step, latest point): only a new
    memory is kept, and the rest is brought up to date when its status changes, or at
    the latest one to two ``SEEN_EVERY`` after it last was (``last_seen``: what garbage
    collection reads). Nothing reads an inactive alert's values but ``runwatch alerts
    --state inactive``; a busy tick then rebuilds, holds and writes only the alerts whose
    memory moves, not every alert of every run that logged.
    """
    alerts: list[AlertState] = []
    transitions: list[Transition] = []
    ended = snapshot.state.ended
    quiet = not snapshot.history  # no new point of any key this tick
    basis = _basis(snapshot) if quiet and quiet_until is not None else None
    path = snapshot.ref.path
    for rule in rules:
        if rule.raised_by_code:
            if snapshot.code_alerts and rule.match.matches(snapshot):
                raised(rule, snapshot, previous, now, alerts, transitions)
            continue
        fp = fingerprint_at(rule.name, path)
        if quiet and _left_alone(rule, snapshot, previous.get(fp), basis,
                                 quiet_until.get(fp) if basis is not None else None, now):
            continue
        if not rule.match.matches(snapshot):
            continue
        before = previous.get(fp) or AlertState(
            fingerprint=fp, rule=rule.name, run=snapshot.ref, severity=rule.severity,
            first_seen=now,
        )
        tag = rule.memory_tag
        verdict = rule.evaluate(Context(
            snapshot=snapshot, now=now, aliases=aliases, memory=_recall(before.memory, tag),
            holding=before.status in _HOLDING,
        ))
        memory = None if verdict.memory is None else [tag, verdict.memory]
        if fp in previous and _idle(rule, snapshot, before, verdict, now):
            if memory != before.memory:
                alerts.append(evolve(before, memory=memory))
            elif basis is not None and verdict.until is not None:
                quiet_until[fp] = Quiet(rule, before, basis, verdict.until)
            continue
        if fp in previous and _unchanged(rule, snapshot, before, verdict, memory):
            if basis is not None and verdict.until is not None:  # (no history-only kind
                quiet_until[fp] = Quiet(rule, before, basis, verdict.until)  # gives until)
            continue
        after = step_alert(rule, snapshot, before, verdict, now, memory=memory)
        if after.status != before.status and after.status != AlertStatus.INACTIVE:
            transitions.append(Transition(alert=after, previous=before.status))
        if ended and rule.resolve_on_end and after.status == AlertStatus.FIRING:
            # The run's last word: what fired on it resolves with it, so nothing stays
            # firing for a run that will never be read again.
            resolved = evolve(after, status=AlertStatus.RESOLVED, resolved_at=now,
                               active_since=None, since_step=None,
                               resolution=ended_reason(snapshot))
            transitions.append(Transition(alert=resolved, previous=AlertStatus.FIRING))
            after = resolved
        alerts.append(after)
    return Evaluation(alerts=tuple(alerts), transitions=tuple(transitions))


def code_fingerprint(rule: str, path: str, title: str) -> str:
    """The identity of the alerts of one title that one run's code raises (code_alert)."""
    return fingerprint_at(f"{rule}\x00{title}", path)


def fingerprints(rules: Iterable[Rule], snapshot: RunSnapshot) -> list[str]:
    """Every alert ``evaluate`` may read for ``snapshot``: one per rule, and one per title
    its training code raised for each code_alert rule."""
    path = snapshot.ref.path
    found = [fingerprint_at(rule.name, path) for rule in rules if not rule.raised_by_code]
    if snapshot.code_alerts:
        titles = {raised.title for raised in snapshot.code_alerts}
        found += [code_fingerprint(rule.name, path, title) for rule in rules
                  if rule.raised_by_code for title in titles]
    return found


def raised(rule: Rule, snapshot: RunSnapshot, previous: Mapping[str, AlertState],
           now: float, alerts: list[AlertState], transitions: list[Transition]) -> None:
    """Tell what the run's training code raised (``snapshot.code_alerts``), as W&B would:
    each title once within the ``wait_duration`` of the one told, an alert per title. A
    told alert fires and is closed at once ("told once"): the receivers hear it once, as
    news, and nothing stays firing to repeat or resolve. One raised more than the rule's
    ``max_age`` before ``now`` is not told (a first read of an old run). A title told
    again within one tick (after its wait) is told once, its summary saying how often."""
    path = snapshot.ref.path
    latest: dict[str, AlertState] = {}  # per title: as told last (what is stored)
    told: dict[str, Transition] = {}  # per title: one transition a tick
    for event in snapshot.code_alerts:
        if not rule.wants(event):
            continue
        fp = code_fingerprint(rule.name, path, event.title)
        before = latest.get(fp) or previous.get(fp)
        when = event.time if event.time is not None else now
        memory = before.memory if before is not None else None
        if isinstance(memory, dict) and when - float(memory.get("at", -math.inf)) < float(
                memory.get("wait", 0.0)):
            continue  # told within its wait: W&B would not send it again either
        if now - when > rule.max_age:
            continue
        severity = rule.severity_of(event)
        fields = summary_fields(rule, snapshot, Verdict(active=True), event.step)
        summary = render(rule.summary or ("{title}: {text}" if event.text else "{title}"),
                         fields | rule.summary_of(event))
        count = memory.get("count", 1) + 1 if fp in latest and isinstance(memory, dict) else 1
        if count > 1:
            summary += f" (raised {count} times since the last tick)"
        fired = AlertState(
            fingerprint=fp, rule=rule.name, run=snapshot.ref, severity=severity,
            status=AlertStatus.FIRING, active_since=now, fired_at=now,
            first_seen=before.first_seen if before is not None else now, last_seen=now,
            step=event.step, summary=summary, labels={**rule.labels, "title": event.title},
            memory={"at": when, "wait": event.wait, "count": count},
            run_state=snapshot.state)
        closed = evolve(fired, status=AlertStatus.RESOLVED, resolved_at=now, active_since=None,
                        resolution=TOLD_ONCE)
        told[fp] = Transition(alert=closed, previous=(
            (told[fp].previous if fp in told else before.status) if before is not None
            else AlertStatus.INACTIVE))
        latest[fp] = closed
    alerts.extend(latest.values())
    transitions.extend(told.values())


def _left_alone(rule: Rule, snapshot: RunSnapshot, stored: AlertState | None,
                basis: tuple[object, ...] | None, known: Quiet | None, now: float) -> bool:
    """Whether, on a run that brought no point, asking ``rule`` would leave ``stored`` as
    it is: a history-only check (:func:`_stays`), or one whose answer holds until a time
    not yet come for the very same rule, stored state and run (:class:`Quiet`)."""
    if stored is None:
        return False
    if stored.status is _INACTIVE and _due(stored, now):
        return False  # renewed when asked (see _idle)
    if rule.history_only:
        return _stays(rule, snapshot, stored)
    return (known is not None and known.rule is rule and known.before is stored
            and now < known.until and known.basis == basis)


def _basis(snapshot: RunSnapshot) -> tuple[object, ...]:
    """What of a run with no new point the rules that give ``until`` (heartbeat,
    progress, state) and the matching of rules read."""
    return (snapshot.ref, snapshot.state, snapshot.ended_why, snapshot.heartbeat,
            snapshot.progress, snapshot.last_step, snapshot.tags, snapshot.group,
            snapshot.config)


ENDED = "run ended"  # how the resolution of an alert that held until its run ended begins


def ended_reason(snapshot: RunSnapshot) -> str:
    """``run ended: crashed``, with why the source took it as ended when it says."""
    why = f" ({snapshot.ended_why})" if snapshot.ended_why else ""
    return f"{ENDED}: {snapshot.state}{why}"


def retire(alerts: Iterable[AlertState], rule_names: Collection[str], now: float, *,
           reason: str = "rule removed") -> Evaluation:
    """Alerts of rules that are no longer loaded (removed or renamed): what fired resolves,
    what was pending is dropped — nothing stays firing for a rule nobody evaluates.
    ``reason`` is the resolution the resolved ones carry."""
    kept: list[AlertState] = []
    transitions: list[Transition] = []
    for alert in alerts:
        if alert.rule in rule_names or alert.status not in _HOLDING:
            continue
        if alert.status == AlertStatus.FIRING:
            after = evolve(alert, status=AlertStatus.RESOLVED, resolved_at=now,
                            active_since=None, since_step=None, last_seen=now,
                            resolution=reason)
            transitions.append(Transition(alert=after, previous=alert.status))
        else:
            after = evolve(alert, status=AlertStatus.INACTIVE, active_since=None,
                            since_step=None, last_seen=now)
        kept.append(after)
    return Evaluation(alerts=tuple(kept), transitions=tuple(transitions))


def _stays(rule: Rule, snapshot: RunSnapshot, before: AlertState) -> bool:
    """Whether a rule that judges new points only (``history_only``) leaves ``before`` as
    it is on a tick that brought none, without evaluating it: such a check then answers
    "nothing to decide on" with the memory it had, and an alert that is quiet, with that
    memory, the same run, severity and labels, is left alone (:func:`_unchanged`). A held
    alert is evaluated: its ``for:`` clock moves with ``now``."""
    if before.status in _HOLDING or before.run != snapshot.ref:
        return False
    if before.severity != rule.severity or before.labels != rule.labels:
        return False
    memory = before.memory
    return memory is None or _recall(memory, rule.memory_tag) is not None


SEEN_EVERY = 86400.0  # an idle inactive alert is renewed within one to two of these


def _due(alert: AlertState, now: float) -> bool:
    """Whether an inactive alert is to be renewed (its values, ``last_seen``): one to two
    ``SEEN_EVERY`` after it last was, spread by its fingerprint so that the alerts made on
    one tick are not all renewed on one tick."""
    if alert.last_seen is None:
        return True
    age = now - alert.last_seen  # (the spread is asked of the few alerts that old)
    return age >= SEEN_EVERY and age >= SEEN_EVERY * (
        1 + (zlib.crc32(alert.fingerprint.encode()) & 0xFF) / 256)


def _idle(rule: Rule, snapshot: RunSnapshot, before: AlertState, verdict: Verdict,
          now: float) -> bool:
    """An inactive alert that stays so, of the same run, run state, severity and labels,
    not due to be renewed: only its memory may move."""
    return (before.status is _INACTIVE and not verdict.active
            and before.run_state is snapshot.state and before.run == snapshot.ref
            and before.severity == rule.severity and before.labels == rule.labels
            and not _due(before, now))


def _unchanged(rule: Rule, snapshot: RunSnapshot, before: AlertState, verdict: Verdict,
               memory: object) -> bool:
    """A quiet alert that stays quiet, remembering what it remembered."""
    if verdict.active or before.status in _HOLDING:
        return False
    if memory != before.memory or before.run != snapshot.ref:
        return False
    if before.severity != rule.severity or before.labels != rule.labels:
        return False
    step = verdict.step if verdict.step is not None else snapshot.last_step
    return verdict.active is None or (
        verdict.value == before.value and step == before.step
        and verdict.metric == before.metric)


def _recall(stored: object, tag: str) -> object:
    """The check memory stored for this very rule definition, else None: a rule edited
    under the same name (another kind, metric or window) starts afresh instead of
    misreading memory of another shape."""
    if isinstance(stored, list) and len(stored) == 2 and stored[0] == tag:
        return stored[1]
    return None


def step_alert(
    rule: Rule, snapshot: RunSnapshot, before: AlertState, verdict: Verdict, now: float, *,
    memory: object,
) -> AlertState:
    """The state machine for one alert; see the module docstring. ``memory`` is what the
    alert keeps for its check (the verdict's memory, tagged by the rule's shape)."""
    holding = before.status in _HOLDING
    common = {
        "run": snapshot.ref, "severity": rule.severity, "labels": dict(rule.labels),
        "memory": memory, "last_seen": now, "run_state": snapshot.state,
    }
    step = verdict.step if verdict.step is not None else snapshot.last_step
    if verdict.active is not None:
        common |= {"metric": verdict.metric, "value": verdict.value, "step": step,
                   "latest_value": verdict.latest, "latest_step": verdict.latest_step}
    active = verdict.active
    if active is None:  # nothing new to decide on: keep the status
        active = holding
        if not holding:
            return evolve(before, **common)
    if not active:
        if before.status == AlertStatus.FIRING:
            # A check that stops applying when the run ends (a heartbeat) clears with no
            # value of its own: that is the run's end, not a fix.
            why = ended_reason(snapshot) if snapshot.state.ended and verdict.value is None \
                else "condition cleared"
            return evolve(before, **common, status=AlertStatus.RESOLVED, resolved_at=now,
                           active_since=None, since_step=None, resolution=why)
        status = AlertStatus.RESOLVED if before.status == AlertStatus.RESOLVED else (
            AlertStatus.INACTIVE)
        return evolve(before, **common, status=status, active_since=None, since_step=None,
                       first_value=None)

    first_value = before.first_value if holding else None
    if verdict.active is None:  # still holding, no new facts: only the `for:` clock moves
        since, since_step = before.active_since, before.since_step
    else:
        if first_value is None or before.since_step is None:
            first_value = verdict.first_value
        since = before.active_since if holding and before.active_since is not None else (
            verdict.since if verdict.since is not None else now)
        since_step = before.since_step if holding and before.since_step is not None else (
            verdict.since_step if verdict.since_step is not None else snapshot.last_step)
    status = AlertStatus.FIRING if before.status == AlertStatus.FIRING or _held_long_enough(
        rule, snapshot, since, since_step, now) else AlertStatus.PENDING
    if snapshot.state.ended and status == AlertStatus.PENDING:
        status = AlertStatus.INACTIVE  # a hold that can never complete: no more ticks
    if status == AlertStatus.FIRING and before.status != AlertStatus.FIRING:
        common["fired_at"] = now
    if verdict.active is not None:
        common["summary"] = render(rule.summary_template(), summary_fields(
            rule, snapshot, verdict, step, since_step=since_step, first_value=first_value))
    return evolve(before, **common, status=status, active_since=since,
                   since_step=since_step, first_value=first_value, resolved_at=None,
                   resolution="")


def _held_long_enough(rule: Rule, snapshot: RunSnapshot, since: float | None,
                      since_step: int | None, now: float) -> bool:
    hold = rule.hold
    if hold is None:
        return True
    if hold.steps is not None:
        return (snapshot.last_step is not None and since_step is not None
                and snapshot.last_step - since_step >= hold.steps)
    return since is not None and now - since >= (hold.seconds or 0)


def summary_fields(rule: Rule, snapshot: RunSnapshot, verdict: Verdict,
                   step: int | None, *, since_step: int | None = None,
                   first_value: float | None = None) -> dict[str, object]:
    """The documented template fields (see ``runwatch.template.FIELDS``)."""
    ref = snapshot.ref
    return {
        "rule": rule.name, "severity": str(rule.severity), "run": ref.display_name,
        "run_id": ref.id, "path": ref.path, "project": ref.project, "entity": ref.entity,
        "group": snapshot.group, "state": str(snapshot.state), "metric": verdict.metric,
        "value": verdict.value, "step": step, "threshold": verdict.threshold,
        "age": format_duration(verdict.age) if verdict.age is not None else None,
        "for": str(rule.hold) if rule.hold else None,
        "since_step": since_step, "first_value": first_value,
        "latest": verdict.latest, "latest_step": verdict.latest_step,
    }
