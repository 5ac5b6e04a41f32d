"""Whether a receiver needs to hear about an alert group now: Alertmanager's nflog check.

Pure functions of the notification log's last record for (group, receiver), the group
as it is now and ``now``: :func:`needs_notify` returns a :class:`Reason`, which the
pipeline logs with every decision, and :func:`resolved_news` the resolved alerts the
message then shows. Both read an expired record as no record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runwatch.notify.base import Reason
from runwatch.store.base import NotificationRecord

# How long a notification record outlives the repeat interval: a daemon stopped for up to
# this long still knows, when it comes back, what it told each receiver (Alertmanager
# keeps its nflog 120h by default).
RECORD_RETENTION = 5 * 86400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupState:
    """An alert group as it is now, muted alerts left out.

    ``firing`` maps each firing alert's fingerprint to when it (last) started firing;
    ``resolved`` holds the fingerprints of the group's resolved alerts.
    """

    firing: Mapping[str, float] = field(default_factory=dict)
    resolved: frozenset[str] = frozenset()
    # Resolved alerts that did fire, by when they (last) started firing.
    flashed: Mapping[str, float] = field(default_factory=dict)
    # Whether a firing alert's run is still live: a crash reported once is not repeated
    # every repeat interval for a run that will never change again.
    live: bool = True

    def unannounced(self, last: NotificationRecord | None, now: float,
                    repeat_interval: float) -> frozenset[str]:
        """Alerts that fired and resolved before any notification said they fired — a NaN
        loss on a run's final rows, a crash between two ticks. News once, whatever
        ``send_resolved`` says: nobody must miss that it happened. Without a record, only
        those that fired within the repeat interval (older ones were told and forgotten)."""
        # One that fired after the last notification was sent cannot have been told by it,
        # even if that message showed an earlier flash of it (the training code raising the
        # same title again after its wait).
        since = last.sent_at if last is not None else now - repeat_interval
        return frozenset(fp for fp, fired in self.flashed.items() if fired > since)

    def announced_resolved(self, last: NotificationRecord | None) -> frozenset[str]:
        """The resolved alerts the receiver was told were firing: only those are news."""
        if last is None:
            return frozenset()
        return frozenset(fp for fp in last.firing if fp in self.resolved and fp not in self.firing)


def record_expiry(sent_at: float, repeat_interval: float) -> float:
    """When a record written at ``sent_at`` may be forgotten."""
    return sent_at + repeat_interval + RECORD_RETENTION


def needs_notify(
    last: NotificationRecord | None,
    group: GroupState,
    now: float,
    repeat_interval: float,
    send_resolved: bool,
) -> Reason:
    """Why ``group`` must be sent to the receiver whose last record is ``last``, or
    ``Reason.NONE``.

    * ``FIRST``: alerts fire and the receiver has no (unexpired) record of this group;
    * ``CHANGED``: an alert fires that the last notification did not say was firing, or
      that started firing again after it was sent, or one fired and resolved unannounced;
    * ``RESOLVED``: alerts the receiver was told were firing have resolved, and
      ``send_resolved``;
    * ``REPEAT``: alerts still fire, on a run still live, and ``repeat_interval`` has
      passed since ``sent_at``.

    Resolved alerts the receiver was never told were firing are never news.
    """
    last = _unexpired(last, now)
    flashes = group.unannounced(last, now, repeat_interval)
    if last is None:
        return Reason.FIRST if group.firing or flashes else Reason.NONE
    if flashes or any(fp not in last.firing or fired_at > last.sent_at
                      for fp, fired_at in group.firing.items()):
        return Reason.CHANGED
    if send_resolved and group.announced_resolved(last):
        return Reason.RESOLVED
    if group.firing and group.live and now - last.sent_at >= repeat_interval:
        return Reason.REPEAT
    return Reason.NONE


def resolved_news(
    last: NotificationRecord | None,
    group: GroupState,
    now: float,
    repeat_interval: float,
    send_resolved: bool,
) -> frozenset[str]:
    """The resolved alerts a message about ``group`` shows: those the receiver was told
    were firing (with ``send_resolved``), and those that fired and resolved unannounced."""
    last = _unexpired(last, now)
    told = group.announced_resolved(last) if send_resolved else frozenset()
    return told | group.unannounced(last, now, repeat_interval)


def _unexpired(last: NotificationRecord | None, now: float) -> NotificationRecord | None:
    return None if last is not None and last.expired(now) else last
