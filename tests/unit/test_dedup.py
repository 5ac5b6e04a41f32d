"""``needs_notify``: one case table over the notification log's last record."""

from __future__ import annotations

import pytest

from runwatch.notify.base import Reason
from runwatch.notify.dedup import (
    RECORD_RETENTION,
    GroupState,
    needs_notify,
    record_expiry,
    resolved_news,
)
from runwatch.store.base import NotificationRecord

T0 = 1_700_000_000.0
HOUR = 3600.0
REPEAT = 4 * HOUR


def told(firing=(), resolved=(), *, at=T0) -> NotificationRecord:
    return NotificationRecord(group_key="g", receiver="r", firing=frozenset(firing),
                              resolved=frozenset(resolved), sent_at=at,
                              expires_at=record_expiry(at, REPEAT))


def now_(firing=(), resolved=(), fired_at=T0 - 60, flashed=(), live=True) -> GroupState:
    """``flashed``: resolved alerts that fired (at T0 + 30) — pass them in ``resolved`` too.
    ``live``: whether a firing alert's run is still running."""
    return GroupState(firing={fp: fired_at for fp in firing}, resolved=frozenset(resolved),
                      flashed={fp: T0 + 30 for fp in flashed}, live=live)


CASES = [
    # (name, last record, group now, seconds since T0, send_resolved, reason)
    ("fired and resolved unannounced: news once", None,
     now_(resolved={"a"}, flashed={"a"}), 60, False, Reason.FIRST),
    ("... joining a told group", told({"b"}), now_({"b"}, {"a"}, flashed={"a"}), 60, False,
     Reason.CHANGED),
    ("... once told, not again", told(resolved={"a"}, at=T0 + 60),
     now_(resolved={"a"}, flashed={"a"}), 120, True, Reason.NONE),
    ("... fired long ago, record forgotten: not news", None,
     now_(resolved={"a"}, flashed={"a"}), REPEAT + HOUR, True, Reason.NONE),
    ("nothing told, one fires", None, now_({"a"}), 0, True, Reason.FIRST),
    ("nothing told, nothing fires", None, now_(), 0, True, Reason.NONE),
    ("never told it fired: its resolution is not news", None, now_(resolved={"a"}), 0, True,
     Reason.NONE),
    ("same alert still firing", told({"a"}), now_({"a"}), HOUR, True, Reason.NONE),
    ("a new alert joins", told({"a"}), now_({"a", "b"}), 60, True, Reason.CHANGED),
    ("repeat interval elapsed", told({"a"}), now_({"a"}), REPEAT, True, Reason.REPEAT),
    ("... but the run has ended: a crash is told once", told({"a"}), now_({"a"}, live=False),
     REPEAT, True, Reason.NONE),
    ("... though a new alert on it is news", told({"a"}), now_({"a", "b"}, live=False),
     REPEAT, True, Reason.CHANGED),
    ("just before the repeat interval", told({"a"}), now_({"a"}), REPEAT - 1, True,
     Reason.NONE),
    ("one of two told resolved", told({"a", "b"}), now_({"a"}, {"b"}), 60, True,
     Reason.RESOLVED),
    ("one of two resolved, send_resolved off", told({"a", "b"}), now_({"a"}, {"b"}), 60,
     False, Reason.NONE),
    ("... and the repeat interval still applies", told({"a", "b"}), now_({"a"}, {"b"}),
     REPEAT, False, Reason.REPEAT),
    ("all told resolved", told({"a"}), now_(resolved={"a"}), 60, True, Reason.RESOLVED),
    ("all resolved, send_resolved off", told({"a"}), now_(resolved={"a"}), 60, False,
     Reason.NONE),
    ("resolution already announced", told(resolved={"a"}), now_(resolved={"a"}), 60, True,
     Reason.NONE),
    ("a resolved alert the receiver never heard of", told({"a"}), now_({"a"}, {"b"}), 60,
     True, Reason.NONE),
    ("fires again after its resolution was sent", told(resolved={"a"}), now_({"a"}), 60,
     True, Reason.CHANGED),
    ("fired again after the last message (resolution never sent)", told({"a"}),
     now_({"a"}, fired_at=T0 + 30), 60, False, Reason.CHANGED),
    ("nothing fires and nothing resolved: silence or gone", told({"a"}), now_(), REPEAT,
     True, Reason.NONE),
    ("an expired record is no record", told({"a"}), now_({"a"}),
     REPEAT + RECORD_RETENTION, True, Reason.FIRST),
    ("a new alert beats a due repeat", told({"a"}), now_({"a", "b"}), REPEAT, True,
     Reason.CHANGED),
    ("a new alert beats a resolution", told({"a", "b"}), now_({"a", "c"}, {"b"}), 60, True,
     Reason.CHANGED),
]


@pytest.mark.parametrize(("last", "group", "elapsed", "send_resolved", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_needs_notify(last, group, elapsed, send_resolved, reason):
    assert needs_notify(last, group, T0 + elapsed, REPEAT, send_resolved) is reason


def test_announced_resolved_are_only_those_told_firing():
    group = now_({"a"}, {"b", "c"})
    assert group.announced_resolved(told({"a", "b"})) == {"b"}
    assert group.announced_resolved(None) == set()


def test_resolved_news_is_what_was_told_firing_and_what_flashed_unannounced():
    group = now_({"a"}, {"b", "c", "d"}, flashed={"d"})
    last = told({"a", "b"})
    assert resolved_news(last, group, T0 + 60, REPEAT, True) == {"b", "d"}
    assert resolved_news(last, group, T0 + 60, REPEAT, False) == {"d"}


def test_resolved_news_reads_an_expired_record_as_none():
    # needs_notify says FIRST: the message must not close what a forgotten record told.
    group = now_({"a"}, {"b"})
    late = T0 + REPEAT + RECORD_RETENTION
    assert needs_notify(told({"a", "b"}), group, late, REPEAT, True) is Reason.FIRST
    assert resolved_news(told({"a", "b"}), group, late, REPEAT, True) == set()


def test_records_outlive_the_repeat_interval():
    assert record_expiry(T0, REPEAT) == T0 + REPEAT + RECORD_RETENTION
