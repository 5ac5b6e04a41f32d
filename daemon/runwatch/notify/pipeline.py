"""After a tick: decide who must hear what (mute → route → group → dedup), queue it, send it.

Planning reads the store's alert states — firing alerts, and resolved ones whose
resolution a receiver may not have heard yet — and never changes them. For every
(route, receiver, group) it asks ``dedup.needs_notify`` against the notification log, and
queues one message in the outbox unless an entry with the same content is already
there (waiting for a retry, in flight, or failed for good) and younger than the repeat
interval: a message waiting for a retry is never queued twice. A new entry replaces the
group's older pending ones that nobody is sending (its content is the newer state).
Everything is decided against an explicit ``now``; draining is ``outbox.drain``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from runwatch.model import AlertState, AlertStatus
from runwatch.notify.base import Chart, Message, Notifier, Reason
from runwatch.notify.dedup import GroupState, needs_notify, record_expiry, resolved_news
from runwatch.notify.outbox import DrainReport, drain, new_entry
from runwatch.notify.routing import (
    RouteSpec,
    alert_labels,
    inhibit_rules,
    inhibited_while_firing,
    matching_routes,
    mute,
    route_specs,
)
from runwatch.store.base import OutboxEntry, Store

log = logging.getLogger("runwatch.notify.pipeline")
dedup_log = logging.getLogger("runwatch.notify.dedup")


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanReport:
    queued: tuple[Message, ...] = ()
    superseded: int = 0  # older pending entries replaced by newer content
    muted: int = 0  # alerts muted by a silence or an inhibit rule
    waiting: int = 0  # groups held back by an entry already queued or by group_wait


@dataclass(frozen=True, kw_only=True, slots=True)
class NotifyReport:
    """What one notify step did; ``pending`` is what the outbox still holds to send."""

    queued: int = 0
    superseded: int = 0
    muted: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    pending: int = 0
    errors: tuple[str, ...] = ()
    receivers: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # outcome counts

    def as_json(self) -> dict[str, object]:
        return {"queued": self.queued, "sent": self.sent, "retrying": self.retrying,
                "failed": self.failed, "muted": self.muted, "pending": self.pending,
                "errors": list(self.errors),
                "receivers": {k: dict(v) for k, v in self.receivers.items()}}


@dataclass(kw_only=True, slots=True)
class _Group:
    route: RouteSpec
    receiver: str
    key: str
    labels: Mapping[str, str]
    alerts: list[AlertState] = field(default_factory=list)


def plan(store: Store, config: object, now: float, *,
         charts: Mapping[str, Chart] | None = None) -> PlanReport:
    """Queue in the outbox what the receivers of ``config`` (a ``config.Config``) must be
    told about the stored alerts at ``now``; one transaction, nothing sent."""
    routes = route_specs(
        config.routes, [r.name for r in config.receivers],  # type: ignore[attr-defined]
        repeat_interval=config.repeat_interval,  # type: ignore[attr-defined]
        send_resolved=config.send_resolved,  # type: ignore[attr-defined]
    )
    if not routes:
        return PlanReport()
    alerts = store.alerts(status=(AlertStatus.FIRING, AlertStatus.RESOLVED))
    labels = {a.fingerprint: alert_labels(a) for a in alerts}
    inhibit = inhibit_rules(config.inhibit)  # type: ignore[attr-defined]
    muted = mute(alerts, labels, inhibit=inhibit,
                 silences=store.silences(now, include_expired=True), now=now)
    for m in muted.values():
        log.debug("alert %s muted by %s", m.fingerprint, m.by)
    # A resolution that an inhibit rule mutes still closes what a receiver was told (a
    # stall announced before its run crashed): it stays in its group, but only as that.
    # One that was muted while it fired was never news: its resolution is no news either.
    closing = {fp for fp, m in muted.items() if m.inhibited}
    closing |= inhibited_while_firing(alerts, labels, inhibit)
    groups = _groups([a for a in alerts if a.fingerprint not in muted
                      or (a.status == AlertStatus.RESOLVED and a.fingerprint in closing)],
                     labels, routes)
    queued_by_key: dict[tuple[str, str], list[OutboxEntry]] = {}
    for entry in store.outbox():
        if not entry.followup:  # charts of a delivered post: not news about the group
            queued_by_key.setdefault(entry.key, []).append(entry)

    # Chart points travel only to receivers that draw them (`charts: true`); a kind without
    # the option (webhook) gets them as they are.
    no_charts = {r.name for r in config.receivers  # type: ignore[attr-defined]
                 if getattr(r, "charts", None) is False}
    entries, messages, waiting = [], [], 0
    for group in groups:
        message = _decide(store, group, queued_by_key.get((group.key, group.receiver), []),
                          now, {} if group.receiver in no_charts else charts or {},
                          quiet=closing)
        if message is _WAIT:
            waiting += 1
        elif isinstance(message, Message):
            messages.append(message)
            entries.append(new_entry(
                message, expires_at=record_expiry(now, group.route.repeat_interval)))
    superseded = store.enqueue(entries) if entries else 0  # before anything is sent
    return PlanReport(queued=tuple(messages), superseded=superseded, muted=len(muted),
                      waiting=waiting)


_WAIT = object()  # news, but it must wait: already queued, or group_wait


def _groups(alerts: Sequence[AlertState], labels: Mapping[str, Mapping[str, str]],
            routes: Sequence[RouteSpec]) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for alert in alerts:
        own = labels[alert.fingerprint]
        for route in matching_routes(routes, own):
            group_labels = route.group_labels(own)
            key = route.group_key(group_labels)
            for receiver in route.receivers:
                group = groups.get((key, receiver))
                if group is None:
                    group = groups[(key, receiver)] = _Group(
                        route=route, receiver=receiver, key=key, labels=group_labels)
                if alert not in group.alerts:  # two routes alike, both `continue`
                    group.alerts.append(alert)
    return list(groups.values())


def _ended(alert: AlertState) -> bool:
    return alert.run_state.ended  # UNKNOWN (stored before runwatch kept it) counts as live


def _decide(store: Store, group: _Group, queued: Sequence[OutboxEntry], now: float,
            charts: Mapping[str, Chart], *, quiet: Collection[str] = ()
            ) -> Message | object | None:
    """The message to queue for ``group``; None if there is no news, ``_WAIT`` if the
    news must wait (already queued, or group_wait)."""
    route = group.route
    firing = {a.fingerprint: a.fired_at if a.fired_at is not None else float("-inf")
              for a in group.alerts if a.status == AlertStatus.FIRING}
    state = GroupState(
        firing=firing,
        resolved=frozenset(a.fingerprint for a in group.alerts
                           if a.status == AlertStatus.RESOLVED),
        flashed={a.fingerprint: a.fired_at for a in group.alerts
                 if a.status == AlertStatus.RESOLVED and a.fired_at is not None
                 and a.fingerprint not in quiet},
        live=any(not _ended(a) for a in group.alerts if a.status == AlertStatus.FIRING))
    last = store.last_notification(group.key, group.receiver)
    reason = needs_notify(last, state, now, route.repeat_interval, route.send_resolved)
    where = f"group {group.key} → {group.receiver}"
    if reason is Reason.NONE:
        dedup_log.debug("%s: %s", where, reason)
        return None
    if reason is Reason.FIRST and route.group_wait > 0 and firing:
        oldest = min(firing.values())
        if now - oldest < route.group_wait:
            dedup_log.info("%s: %s, held for group_wait until %.0f", where, reason,
                           oldest + route.group_wait)
            return _WAIT
    resolved = resolved_news(last, state, now, route.repeat_interval, route.send_resolved)
    same = [e for e in queued if e.firing == set(firing) and e.resolved == resolved
            and now - e.created_at < route.repeat_interval]
    if same:
        entry = same[-1]
        dedup_log.info("%s: %s, but entry %s already says so (%s)", where, reason, entry.id,
                       f"failed: {entry.last_error}" if entry.failed
                       else f"{entry.attempts} attempt(s), due at {entry.next_attempt_at:.0f}")
        return _WAIT
    dedup_log.info("%s: %s (%d firing, %d resolved)", where, reason, len(firing), len(resolved),
                   extra={"receiver": group.receiver, "group": group.key,
                          "reason": str(reason)})

    def ordered(wanted: set[str] | frozenset[str]) -> tuple[AlertState, ...]:
        chosen = [a for a in group.alerts if a.fingerprint in wanted]
        return tuple(sorted(chosen, key=lambda a: (a.run.path, a.rule, a.fingerprint)))

    shown = ordered(set(firing)) + ordered(resolved)
    return Message(
        id=uuid.uuid4().hex, receiver=group.receiver, group_key=group.key,
        group_labels=dict(group.labels), firing=ordered(set(firing)), resolved=ordered(resolved),
        reason=reason, created_at=now,
        charts={a.fingerprint: charts[a.fingerprint] for a in shown if a.fingerprint in charts},
    )


def abandon_unknown_receivers(store: Store, receivers: Sequence[str], now: float) -> int:
    """Fail the pending entries of receivers no longer configured (nothing could send them)."""
    known = set(receivers)
    failed = 0
    for entry in store.outbox(include_failed=False):
        if entry.receiver not in known and not entry.claimed(now):
            error = f"receiver {entry.receiver}: not configured any more"
            if store.fail_outbox(entry.id, claimant=None, error=error, now=now):
                log.error("%s: message %s (%s) dropped", error, entry.id, entry.group_key)
                failed += 1
    return failed


def notify_after_tick(
    store: Store,
    config: object,
    notifiers: Mapping[str, Notifier],
    now: float,
    *,
    charts: Mapping[str, Chart] | None = None,
) -> NotifyReport:
    """What the tick's caller calls after ``run_tick``: plan from the stored alert states,
    then drain the outbox through ``notifiers`` (by receiver name)."""
    receivers = [r.name for r in config.receivers]  # type: ignore[attr-defined]
    abandoned = abandon_unknown_receivers(store, receivers, now)
    planned = plan(store, config, now, charts=charts)
    drained = drain(store, notifiers, now)
    return _report(store, planned, drained, abandoned)


def drain_only(store: Store, notifiers: Mapping[str, Notifier], now: float) -> NotifyReport:
    """Send what the outbox holds without planning anything new (retries between ticks)."""
    return _report(store, PlanReport(), drain(store, notifiers, now), 0)


def _report(store: Store, planned: PlanReport, drained: DrainReport, abandoned: int
            ) -> NotifyReport:
    return NotifyReport(
        queued=len(planned.queued), superseded=planned.superseded, muted=planned.muted,
        sent=drained.sent, retrying=drained.retrying, failed=drained.failed + abandoned,
        pending=store.outbox_depth(), errors=drained.errors,
        receivers=drained.by_receiver,
    )
