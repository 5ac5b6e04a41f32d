"""Who hears about an alert, and what mutes it: labels, selectors, routes, inhibition, silences.

**Labels.** An alert is routed by its labels: its rule's ``labels`` plus these, which win
over a rule label of the same name — ``rule``, ``severity``, ``run`` (the run's path,
``entity/project/id`` or its directory), ``run_id``, ``run_name``, ``project``,
``entity``, ``source`` and, when the rule reads one, ``metric``.

**Selectors** (a route's ``match``, an inhibit rule's ``source`` and ``target``) come in
two forms. A mapping: every named label must match, each value a literal or a glob
(``*``, ``?``, ``[...]``), or a list of them meaning any one::

    match: {rule: "run-stalled*", severity: critical}
    target: {rule: [run-stalled*, run-slow, progress-stalled]}

Or a list of Alertmanager matchers, all of which must hold: ``name=value``,
``name!=value``, ``name=~regex``, ``name!~regex`` (regexes match the whole value)::

    match: ["severity=~warning|critical", "project!=scratch"]

A label the alert does not carry counts as the empty string. An empty selector matches
every alert.

**Routes** are tried in order; the first that matches wins, unless it says
``continue: true`` (then later routes are tried too). An alert that no route matches is
not sent. A config without ``routes`` sends every alert to every receiver. Each route
groups its alerts by ``group_by`` (default ``[rule]``: 300 runs crashing together become
one message per rule, not 300); ``group_by: []`` puts everything in one group and
``group_by: ["..."]`` gives every alert its own group, as in Alertmanager.

**Inhibition** (Alertmanager semantics): while an alert matching ``source`` fires, the
alerts matching ``target`` that carry equal values for every ``equal`` label are muted.
An alert never inhibits itself.

**Silences** mute every alert their matchers all match while they are active.

Muting is decided afresh on every tick and never changes an alert's state: an alert
still firing when its silence ends or its inhibiting alert resolves is notified then.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from runwatch.model import AlertState, AlertStatus
from runwatch.store.base import Matcher, Silence

ALL_LABELS = "..."  # group_by: ["..."] — one group per alert
DEFAULT_GROUP_BY = ("rule",)


def alert_labels(alert: AlertState) -> dict[str, str]:
    """The labels routes, inhibit rules and silences see for ``alert``."""
    run = alert.run
    labels = {str(k): str(v) for k, v in alert.labels.items()}
    labels.update(
        rule=alert.rule,
        severity=str(alert.severity),
        run=run.path,
        run_id=run.id,
        run_name=run.name,
        project=run.project,
        entity=run.entity,
        source=run.source,
    )
    if alert.metric:
        labels["metric"] = alert.metric
    return labels


# --- selectors ----------------------------------------------------------------------------


class LabelMatcher(Protocol):
    name: str

    def matches(self, labels: Mapping[str, str]) -> bool: ...


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True, kw_only=True, slots=True)
class GlobMatcher:
    """``name`` matches one of ``patterns``: literals or shell globs, case-sensitive."""

    name: str
    patterns: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        return any(_glob(p).match(value) is not None for p in self.patterns)

    def __str__(self) -> str:
        if len(self.patterns) == 1:
            return f"{self.name}={self.patterns[0]}"
        return f"{self.name}=[{', '.join(self.patterns)}]"


@dataclass(frozen=True, slots=True)
class Selector:
    """All of ``matchers`` must match; no matchers match everything."""

    matchers: tuple[LabelMatcher, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.matchers)) + "}"


def selector(spec: Mapping[str, str | Sequence[str]] | Sequence[str]) -> Selector:
    """A selector from its config form (see the module docstring); ValueError if invalid."""
    if isinstance(spec, str):
        raise ValueError(f"expected a mapping of labels or a list of matchers, got {spec!r}")
    if isinstance(spec, Mapping):
        return Selector(tuple(
            GlobMatcher(name=str(name), patterns=(value,) if isinstance(value, str)
                        else tuple(map(str, value)))
            for name, value in spec.items()
        ))
    return Selector(tuple(Matcher.parse(text) for text in spec))


# --- routes -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteSpec:
    """One route as the pipeline uses it, defaults resolved."""

    name: str  # part of every group key: stable across restarts as long as the route is
    match: Selector
    receivers: tuple[str, ...]
    continue_: bool = False
    group_by: tuple[str, ...] | None = DEFAULT_GROUP_BY  # None: every label ("...")
    group_wait: float = 0.0
    repeat_interval: float
    send_resolved: bool = True

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by is None:
            return dict(labels)
        return {name: labels.get(name, "") for name in self.group_by}

    def group_key(self, group_labels: Mapping[str, str]) -> str:
        """``<route>:{label="value",...}`` — the notification log's key for the group."""
        inner = ",".join(f"{k}={_quote(v)}" for k, v in sorted(group_labels.items()))
        return f"{self.name}:{{{inner}}}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def route_specs(
    routes: Sequence[object],
    receivers: Sequence[str],
    *,
    repeat_interval: float,
    send_resolved: bool,
) -> tuple[RouteSpec, ...]:
    """The config's routes (``config.models.Route``) with defaults filled in; without any,
    one route sending everything to every receiver."""
    if not routes:
        if not receivers:
            return ()
        return (RouteSpec(name="default", match=Selector(), receivers=tuple(receivers),
                          repeat_interval=repeat_interval, send_resolved=send_resolved),)
    specs = []
    for route in routes:
        group_by = getattr(route, "group_by", None)
        match = selector(getattr(route, "match", {}) or {})
        specs.append(RouteSpec(
            # The route's matchers name it: reordering routes keeps every group key.
            name=str(match),
            match=match,
            receivers=tuple(route.receivers),  # type: ignore[attr-defined]
            continue_=bool(getattr(route, "continue_", False)),
            group_by=(DEFAULT_GROUP_BY if group_by is None
                      else None if ALL_LABELS in group_by else tuple(group_by)),
            group_wait=float(getattr(route, "group_wait", 0.0) or 0.0),
            repeat_interval=float(getattr(route, "repeat_interval", None) or repeat_interval),
            send_resolved=(send_resolved if getattr(route, "send_resolved", None) is None
                           else bool(route.send_resolved)),  # type: ignore[attr-defined]
        ))
    return tuple(specs)


def matching_routes(routes: Iterable[RouteSpec], labels: Mapping[str, str]) -> list[RouteSpec]:
    """The routes an alert with ``labels`` takes: the first match, and more after continue."""
    taken = []
    for route in routes:
        if route.match.matches(labels):
            taken.append(route)
            if not route.continue_:
                break
    return taken


# --- muting -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class InhibitRule:
    source: Selector
    target: Selector
    equal: tuple[str, ...] = ()

    def __str__(self) -> str:
        equal = f" equal [{', '.join(self.equal)}]" if self.equal else ""
        return f"{self.source} mutes {self.target}{equal}"


def inhibit_rules(inhibit: Iterable[object]) -> tuple[InhibitRule, ...]:
    """The config's ``inhibit`` entries (``config.models.Inhibit``) as rules."""
    return tuple(
        InhibitRule(source=selector(i.source), target=selector(i.target),  # type: ignore[attr-defined]
                    equal=tuple(i.equal))  # type: ignore[attr-defined]
        for i in inhibit
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Muted:
    """Why an alert is muted: the silence or the inhibit rule (and alert) that mutes it."""

    fingerprint: str
    by: str

    @property
    def inhibited(self) -> bool:
        return self.by.startswith("inhibit ")


def mute(
    alerts: Sequence[AlertState],
    labels: Mapping[str, Mapping[str, str]],
    *,
    inhibit: Sequence[InhibitRule],
    silences: Iterable[Silence],
    now: float,
) -> dict[str, Muted]:
    """The muted ones among ``alerts`` (``labels`` by fingerprint), by fingerprint.

    Only firing alerts inhibit; a silenced alert still does (it is still true). Silences
    are checked for being active at ``now``; a resolved alert is muted, too, by one that
    has ended but was active when it fired (what fired and resolved under a silence —
    what the training code raised, told once — was never news, nor is it once the silence
    ends), where ``silences`` holds ended ones.
    """
    silences = list(silences)
    active = [s for s in silences if s.active(now)]
    ended = [s for s in silences if s.ends_at <= now]
    since = min((s.starts_at for s in ended), default=math.inf)
    firing = [a for a in alerts if a.status == AlertStatus.FIRING]
    # Per rule: the firing alerts matching its source, by their values of the equal labels.
    source_sets = [_sources_by_key(rule, firing, labels) for rule in inhibit]
    muted: dict[str, Muted] = {}
    for alert in alerts:
        own = labels[alert.fingerprint]
        silence = next((s for s in active if s.matches(own)), None)
        if silence is not None:
            muted[alert.fingerprint] = Muted(fingerprint=alert.fingerprint,
                                             by=f"silence {silence.id}")
            continue
        for rule, by_key in zip(inhibit, source_sets, strict=True):
            if not by_key or not rule.target.matches(own):
                continue
            key = tuple(own.get(n, "") for n in rule.equal)
            others = by_key.get(key, set()) - {alert.fingerprint}  # never inhibits itself
            if others:
                muted[alert.fingerprint] = Muted(
                    fingerprint=alert.fingerprint,
                    by=f"inhibit {rule} (firing {min(others)})",
                )
                break
        else:
            fired = alert.fired_at
            if alert.status == AlertStatus.RESOLVED and fired is not None and fired >= since:
                silence = next((s for s in ended if s.active(fired) and s.matches(own)), None)
                if silence is not None:
                    muted[alert.fingerprint] = Muted(fingerprint=alert.fingerprint,
                                                     by=f"silence {silence.id} when it fired")
    return muted


def inhibited_while_firing(
    alerts: Sequence[AlertState],
    labels: Mapping[str, Mapping[str, str]],
    inhibit: Sequence[InhibitRule],
) -> set[str]:
    """Resolved alerts that an inhibit rule muted while they fired: a source alert with the
    same ``equal`` labels fired at some time while they did. Such an alert was never news
    (a spiky grad norm under an exploding one); once both have resolved, its resolution must
    not be announced as "fired and resolved unseen" either. One pass per rule: the
    sources are indexed by their ``equal`` labels, as :func:`mute` does."""
    timed = [a for a in alerts if a.fired_at is not None
             and a.status in (AlertStatus.FIRING, AlertStatus.RESOLVED)]
    resolved = [a for a in timed if a.status == AlertStatus.RESOLVED]
    if not inhibit or not resolved:
        return set()
    by_fp = {a.fingerprint: a for a in timed}
    found: set[str] = set()
    for rule in inhibit:
        sources = _sources_by_key(rule, timed, labels)
        if not sources:
            continue
        for target in resolved:
            own = labels[target.fingerprint]
            if target.fingerprint in found or not rule.target.matches(own):
                continue
            key = tuple(own.get(n, "") for n in rule.equal)
            if any(_overlap(by_fp[fp], target) for fp in sources.get(key, ())
                   if fp != target.fingerprint):
                found.add(target.fingerprint)
    return found


def _overlap(source: AlertState, target: AlertState) -> bool:
    """Whether ``source`` fired at some time while the resolved ``target`` did."""
    assert source.fired_at is not None and target.fired_at is not None
    source_end = source.resolved_at if source.status == AlertStatus.RESOLVED else None
    return ((target.resolved_at is None or source.fired_at <= target.resolved_at)
            and (source_end is None or source_end >= target.fired_at))


def _sources_by_key(
    rule: InhibitRule, alerts: Sequence[AlertState], labels: Mapping[str, Mapping[str, str]]
) -> dict[tuple[str, ...], set[str]]:
    """The fingerprints of ``alerts`` matching ``rule``'s source, by their ``equal`` labels."""
    found: dict[tuple[str, ...], set[str]] = {}
    for alert in alerts:
        own = labels[alert.fingerprint]
        if rule.source.matches(own):
            found.setdefault(tuple(own.get(n, "") for n in rule.equal), set()).add(
                alert.fingerprint)
    return found


def rule_name_problems(
    routes: Sequence[object], inhibit: Sequence[object], rule_names: Iterable[str]
) -> list[str]:
    """Selectors on the ``rule`` label that match none of ``rule_names``: most often a
    typo that would leave a route or an inhibit rule silently dead."""
    names = sorted(rule_names)
    problems = []
    places = [(f"routes[{i}].match", getattr(r, "match", {})) for i, r in enumerate(routes)]
    for i, rule in enumerate(inhibit):
        places += [(f"inhibit[{i}].source", rule.source),  # type: ignore[attr-defined]
                   (f"inhibit[{i}].target", rule.target)]  # type: ignore[attr-defined]
    for where, spec in places:
        for matcher in selector(spec or {}).matchers:
            if matcher.name == "rule" and not any(
                    matcher.matches({"rule": name}) for name in names):
                problems.append(f"{where}: {matcher} matches none of the loaded rules")
    return problems
