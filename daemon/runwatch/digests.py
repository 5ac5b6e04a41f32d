"""The daily digest's schedule and delivery: which period is due, composing it from the
sources and the store, and queueing it in the outbox for every digest receiver.

A digest goes out through the outbox like any alert message (same retries, same dedup).
Its notification record — written with the delivery, under the group ``digest`` — is
what says a period was sent: a restart finds it and sends nothing twice. A digest whose
time passed while runwatch was down is sent at start-up if that was less than
``digest.grace`` ago; an older one is skipped (and logged), not sent days late.

Decisions (:func:`due`) are pure functions of the schedule, the records and ``now``.
"""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

from runwatch.analysis import report_keys
from runwatch.analysis.digest import Digest, compose
from runwatch.config import Config, RuleSet
from runwatch.model import AlertStatus
from runwatch.notify.base import DIGEST_IMAGE_CID, DigestContent, Message, Reason
from runwatch.notify.outbox import new_entry
from runwatch.schedule import cron_trigger
from runwatch.store.base import Store

log = logging.getLogger("runwatch.digest")

GROUP = "digest"  # the notification group every digest is recorded under
RECORD_TTL = 45 * 86400.0  # how long "this period was sent" is remembered
LOOKBACK = 8 * 86400.0  # how far back the schedule is searched for the last digest time
MAX_PERIOD = 7 * 86400.0  # a digest never covers more than a week
DEFAULT_SCHEDULE = "0 8 * * *"


@dataclass(frozen=True, kw_only=True, slots=True)
class Period:
    start: float
    end: float  # the scheduled time this digest is for


def scheduled(trigger: CronTrigger, after: float, until: float, limit: int = 20_000
              ) -> list[float]:
    """The schedule's times in ``(after, until]``, oldest first (at most ``limit``)."""
    times: list[float] = []
    moment = datetime.fromtimestamp(after, UTC)
    previous = None
    while len(times) < limit:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None or fire.timestamp() > until:
            break
        if fire.timestamp() > after:
            times.append(fire.timestamp())
        previous = fire
        moment = fire
    return times


def last_time(trigger: CronTrigger, now: float) -> tuple[float | None, float | None]:
    """The newest scheduled time at or before ``now``, and the one before it."""
    times = scheduled(trigger, now - LOOKBACK, now)
    return (times[-1] if times else None), (times[-2] if len(times) > 1 else None)


def due(trigger: CronTrigger, *, sent: float | None, now: float, grace: float
        ) -> tuple[Period | None, str]:
    """The period whose digest is due at ``now`` for a receiver last sent one at ``sent``
    (None: never), and why (or why not), in words for the log."""
    end, before = last_time(trigger, now)
    if end is None:
        return None, "no digest time in the last week"
    if sent is not None and sent >= end:
        return None, "the digest of this period went out already"
    late = now - end
    if late > grace:
        return None, (f"the digest of {_iso(end)} was missed by {late / 3600:.1f} h, more than"
                      f" the grace of {grace / 3600:.1f} h: skipped")
    start = sent if sent is not None else (before if before is not None else end - 86400.0)
    return Period(start=max(start, end - MAX_PERIOD), end=end), "due"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def sent_at(store: Store, receiver: str) -> float | None:
    """When the newest digest for ``receiver`` was decided: delivered (the notification
    log) or queued (the outbox, failed for good included: a period is tried once)."""
    times = [e.created_at for e in store.outbox(group_key=GROUP, receiver=receiver)
             if not e.followup]  # a chart of a digest delivered is no digest of its own
    record = store.last_notification(GROUP, receiver)
    if record is not None:
        times.append(record.sent_at)
    return max(times, default=None)


def trigger_of(config: Config) -> tuple[CronTrigger, zoneinfo.ZoneInfo | None]:
    spec = config.digest
    schedule = spec.schedule if spec is not None else DEFAULT_SCHEDULE
    zone = spec.zone if spec is not None else None
    return cron_trigger(schedule, zone), zone


def build(config: Config, rule_set: RuleSet, store: Store | None, period: Period
          ) -> Digest:
    """The digest of ``period``: the sources' runs and the store's alerts."""
    from runwatch.reports import config_runs

    keys = report_keys(rule_set.rules, rule_set.aliases)
    found = config_runs(config, keys, since=period.start, now=period.end)
    alerts = []
    if store is not None:
        alerts = [a for a in store.alerts(status=(AlertStatus.FIRING, AlertStatus.RESOLVED))
                  if a.status == AlertStatus.FIRING
                  or (a.fired_at is not None and a.fired_at >= period.start)]
    return compose(runs=found.runs, alerts=alerts, start=period.start, end=period.end,
                   rules=rule_set.rules, aliases=rule_set.aliases, errors=found.errors)


def content(digest: Digest, zone: zoneinfo.ZoneInfo | None = None) -> DigestContent:
    """The digest rendered for every kind of receiver, its chart drawn (a chart that cannot
    be drawn costs the digest nothing)."""
    from runwatch.notify import digest_render as words
    from runwatch.notify.charts import digest_png

    try:
        image = digest_png(digest.running, digest.firing)
    except Exception as exc:
        log.warning("digest chart not drawn: %s: %s", type(exc).__name__, exc)
        image = None
    return DigestContent(
        title=words.title(digest, zone), summary=words.summary_line(digest),
        text=words.text(digest, zone), blocks=tuple(words.slack_blocks(digest, zone)),
        html=words.html(digest, image_cid=DIGEST_IMAGE_CID if image else None, zone=zone),
        body=words.body(digest), image=image)


def queue(store: Store, rendered: DigestContent, receivers: Iterable[str], now: float
          ) -> list[Message]:
    """One outbox entry per receiver; the drain sends them."""
    messages = [Message(id=f"digest-{uuid.uuid4().hex[:16]}", receiver=name, group_key=GROUP,
                        group_labels={"kind": "digest"}, reason=Reason.DIGEST, created_at=now,
                        digest=rendered)
                for name in receivers]
    store.enqueue([new_entry(m, expires_at=now + RECORD_TTL) for m in messages])
    return messages


@dataclass(frozen=True, kw_only=True, slots=True)
class DigestRun:
    queued: tuple[str, ...]  # receivers a digest was queued for
    skipped: Mapping[str, str]  # receiver -> why not
    digest: Digest | None = None


def run_scheduled(config: Config, rule_set: RuleSet, store: Store, now: float,
                  receivers: Sequence[str] | None = None) -> DigestRun:
    """Queue the due digest for every digest receiver that has not had it: what the
    daemon's digest job, and its start-up, do."""
    spec = config.digest
    if spec is None:
        return DigestRun(queued=(), skipped={})
    trigger, zone = trigger_of(config)
    names = list(receivers if receivers is not None else spec.receivers)
    periods: dict[str, Period] = {}
    skipped: dict[str, str] = {}
    for name in names:
        period, why = due(trigger, sent=sent_at(store, name), now=now, grace=spec.grace)
        if period is None:
            skipped[name] = why
        else:
            periods[name] = period
    if not periods:
        return DigestRun(queued=(), skipped=skipped)
    # One digest for every receiver due, covering the widest period any of them needs, up
    # to now: a digest sent late at start-up also tells what happened since its time (the
    # next one starts where this one ends).
    digest = build(config, rule_set, store,
                   Period(start=min(p.start for p in periods.values()), end=now))
    queue(store, content(digest, zone), periods, now)
    return DigestRun(queued=tuple(periods), skipped=skipped, digest=digest)
