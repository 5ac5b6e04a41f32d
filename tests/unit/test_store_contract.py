"""The behaviour every store backend owes the daemon, run against each backend.

A new backend joins by adding one entry to ``BACKENDS``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from builders import canon
from pgtest import Schema
from runwatch.model import AlertState, AlertStatus, RunRef, Severity
from runwatch.store.base import (
    BoardEntry,
    Collected,
    Matcher,
    MatchOp,
    NotificationRecord,
    OutboxEntry,
    Store,
    StoreError,
    open_store,
)
from runwatch.store.memory import MemoryStore
from runwatch.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, kw_only=True)
class Backend:
    """How to open one backend; ``persistent`` backends can be reopened and shared."""

    open: Callable[[], Store]
    persistent: bool
    drop: Callable[[], None] = lambda: None  # what the test leaves behind, gone


def _postgres(tmp: Path) -> Backend:
    schema = Schema(tmp)
    return Backend(open=lambda: open_store(schema.url), persistent=True, drop=schema.drop)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp: Backend(open=MemoryStore, persistent=False),
    "sqlite": lambda tmp: Backend(open=lambda: SqliteStore(tmp / "store.db"), persistent=True),
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.drop()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


# --- helpers ------------------------------------------------------------------------------


def run(run_id: str = "r1", *, project: str = "proj", entity: str = "team") -> RunRef:
    return RunRef(source="wandb", id=run_id, name=f"name-{run_id}", project=project, entity=entity)


def alert(
    fp: str = "fp1",
    *,
    rule: str = "loss_nan",
    ref: RunRef | None = None,
    status: AlertStatus = AlertStatus.INACTIVE,
    **changes: Any,
) -> AlertState:
    return AlertState(
        fingerprint=fp,
        rule=rule,
        run=ref or run(),
        severity=Severity.WARNING,
        status=status,
        **changes,
    )


def full_alert() -> AlertState:
    return AlertState(
        fingerprint="0123456789abcdef",
        rule="loss_spike",
        run=RunRef(
            source="local",
            id="3x9k2",
            name="lr-sweep-7",
            project="llm",
            entity="lab",
            location="/runs/wandb/run-20240101_000000-3x9k2",
        ),
        severity=Severity.CRITICAL,
        status=AlertStatus.FIRING,
        active_since=T0 - 120.5,
        since_step=1_000,
        fired_at=T0 - 60.25,
        resolved_at=None,
        first_seen=T0 - 3600.0,
        last_seen=T0,
        metric="train/loss",
        value=math.nan,
        step=1_234,
        summary="loss is NaN at step 1234 — “quoted”, ünïcode",
        labels={"team": "research", "gpu": "a100", "empty": ""},
        memory={
            "window": [1.5, math.inf, -math.inf, math.nan, 0.0, -0.0, 1e308],
            "nested": {"deep": {"deeper": [None, True, False, "x", 2**53 + 1]}},
            "count": 3,
            "note": 'with "quotes" and \n newline',
            "$float": "not a tag when not alone",
        },
        run_state="crashed",
    )


def commit(
    store: Store,
    *alerts: AlertState,
    cursors: dict[str, str] | None = None,
    source: str = "wandb",
    now: float = T0,
) -> None:
    store.commit_tick(source=source, alerts=alerts, cursors=cursors or {}, now=now)


class Unserialisable:
    pass


# --- alerts -------------------------------------------------------------------------------


def test_alert_round_trips_every_field(store: Store) -> None:
    original = full_alert()
    commit(store, original)
    loaded = store.load_alerts()
    assert list(loaded) == [original.fingerprint]
    got = loaded[original.fingerprint]
    assert canon(got) == canon(original)
    assert math.isnan(got.value)
    assert isinstance(got.severity, Severity) and isinstance(got.status, AlertStatus)
    assert got.run.path == "lab/llm/3x9k2"


def test_alert_with_defaults_round_trips_none_fields(store: Store) -> None:
    original = AlertState(
        fingerprint="f", rule="r", run=RunRef(source="s", id="i"), severity=Severity.INFO
    )
    commit(store, original)
    assert store.load_alerts()["f"] == original


@pytest.mark.parametrize("value", [math.inf, -math.inf, 0.1 + 0.2, -0.0, 1e-300, 42.0])
def test_alert_value_round_trips_exactly(store: Store, value: float) -> None:
    commit(store, alert(value=value))
    got = store.load_alerts()["fp1"].value
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


def test_memory_comes_back_as_json_data(store: Store) -> None:
    commit(store, alert(memory={"pair": (1, 2), "scalar": None}))
    assert store.load_alerts()["fp1"].memory == {"pair": [1, 2], "scalar": None}
    commit(store, alert(memory=[math.nan]))
    (value,) = store.load_alerts()["fp1"].memory
    assert math.isnan(value)


def test_loaded_state_is_a_copy(store: Store) -> None:
    commit(store, alert(memory={"window": [1.0]}, labels={"a": "1"}))
    loaded = store.load_alerts()["fp1"]
    loaded.memory["window"].append(2.0)
    loaded.labels["b"] = "2"  # type: ignore[index]
    again = store.load_alerts()["fp1"]
    assert again.memory == {"window": [1.0]} and again.labels == {"a": "1"}


def test_upsert_replaces_the_whole_state(store: Store) -> None:
    commit(store, full_alert())
    changed = replace(
        full_alert(),
        status=AlertStatus.RESOLVED,
        resolved_at=T0 + 5,
        value=None,
        memory=None,
        labels={},
        summary="",
    )
    commit(store, changed, now=T0 + 5)
    assert store.load_alerts() == {changed.fingerprint: changed}


def test_load_alerts_by_fingerprint(store: Store) -> None:
    commit(store, alert("a"), alert("b"), alert("c"))
    assert set(store.load_alerts(["a", "c", "unknown"])) == {"a", "c"}
    assert set(store.load_alerts(fp for fp in ("b",))) == {"b"}
    assert store.load_alerts([]) == {}


def test_load_alerts_many_fingerprints(store: Store) -> None:
    many = [alert(f"fp{i:05d}", ref=run(f"r{i}")) for i in range(1_250)]
    commit(store, *many)
    wanted = [a.fingerprint for a in many[::2]] + ["missing"]
    loaded = store.load_alerts(wanted)
    assert sorted(loaded) == sorted(wanted[:-1])
    assert loaded["fp00010"] == many[10]


def test_alerts_filters(store: Store) -> None:
    firing = alert("f1", status=AlertStatus.FIRING, ref=run("r1"))
    pending = alert("p1", status=AlertStatus.PENDING, ref=run("r2"), rule="stalled")
    resolved = alert("x1", status=AlertStatus.RESOLVED, ref=run("r1", project="other"))
    local = alert(
        "l1", status=AlertStatus.FIRING, ref=RunRef(source="local", id="r9", location="/runs/r9")
    )
    commit(store, firing, pending, resolved, local)

    assert store.alerts(status=AlertStatus.FIRING) == [local, firing]  # ordered by run path
    assert store.alerts(status=[AlertStatus.FIRING, AlertStatus.PENDING]) == [
        local,
        firing,
        pending,
    ]
    assert store.alerts(status=[]) == []
    assert store.alerts(run_path="team/proj/r1") == [firing]
    assert store.alerts(run_path="/runs/r9") == [local]
    assert store.alerts(project="other") == [resolved]
    assert store.alerts(rule="stalled") == [pending]
    assert store.alerts(status=AlertStatus.FIRING, project="proj") == [firing]
    assert store.alerts(status=AlertStatus.INACTIVE) == []
    assert len(store.alerts()) == 4


def test_alerts_by_how_they_resolved(store: Store) -> None:
    ended = replace(alert("e1", status=AlertStatus.RESOLVED), resolution="run ended: crashed")
    cleared = replace(alert("c1", status=AlertStatus.RESOLVED, ref=run("r2")),
                      resolution="condition cleared")
    odd = replace(alert("o1", status=AlertStatus.RESOLVED, ref=run("r3")),
                  resolution="run ended_%")  # a LIKE wildcard is compared as itself
    commit(store, ended, cleared, odd)
    assert store.alerts(resolution="run ended") == [ended, odd]
    assert store.alerts(resolution="run ended_%") == [odd]
    assert store.alerts(resolution="run ended_x") == []
    assert store.alerts(status=AlertStatus.RESOLVED, resolution="condition") == [cleared]


# --- cursors and the tick -----------------------------------------------------------------


def test_cursors_are_per_source(store: Store) -> None:
    commit(store, cursors={"r1": '{"offset": 10}', "r2": "{}"}, source="wandb")
    commit(store, cursors={"r1": '{"offset": 99}'}, source="local")
    assert store.load_cursors("wandb") == {"r1": '{"offset": 10}', "r2": "{}"}
    assert store.load_cursors("local") == {"r1": '{"offset": 99}'}
    assert store.load_cursors("nobody") == {}

    commit(store, cursors={"r2": '{"offset": 5}'}, source="wandb", now=T0 + 1)
    assert store.load_cursors("wandb") == {"r1": '{"offset": 10}', "r2": '{"offset": 5}'}


def test_commit_tick_writes_alerts_and_cursors_together(store: Store) -> None:
    commit(store, alert("a"), cursors={"r1": "1"})
    assert set(store.load_alerts()) == {"a"}
    assert store.load_cursors("wandb") == {"r1": "1"}


def test_commit_tick_is_all_or_nothing_on_an_unstorable_alert(store: Store) -> None:
    commit(store, alert("a", summary="before"), cursors={"r1": "old"})
    with pytest.raises(StoreError) as caught:
        commit(
            store,
            alert("a", summary="after"),
            alert("b"),
            alert("bad", memory={"window": Unserialisable()}),
            cursors={"r1": "new", "r2": "new"},
            now=T0 + 10,
        )
    assert caught.value.temporary is False
    assert "bad" in str(caught.value)  # names the alert it could not store
    assert "\n" not in str(caught.value)
    assert store.load_cursors("wandb") == {"r1": "old"}
    assert {fp: a.summary for fp, a in store.load_alerts().items()} == {"a": "before"}


def test_commit_tick_is_all_or_nothing_when_the_alerts_iterable_fails(store: Store) -> None:
    def states() -> Iterator[AlertState]:
        yield alert("a")
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError, match="engine bug"):
        store.commit_tick(source="wandb", alerts=states(), cursors={"r1": "x"}, now=T0)
    assert store.load_alerts() == {}
    assert store.load_cursors("wandb") == {}


def test_commit_tick_refuses_a_nan_time(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        commit(store, alert("a", last_seen=math.nan), cursors={"r1": "x"})
    assert not caught.value.temporary
    assert store.load_cursors("wandb") == {}


def test_commit_tick_refuses_a_step_no_backend_can_hold(store: Store) -> None:
    """A step past 64 bits (a run counting in tokens, gone wrong): one StoreError that is
    not worth retrying, on every backend, and nothing written."""
    with pytest.raises(StoreError, match="out of the 64-bit range") as caught:
        commit(store, alert("a", step=2**63), cursors={"r1": "x"})
    assert not caught.value.temporary
    commit(store, alert("a", step=2**63 - 1), cursors={"r1": "x"})
    assert store.load_alerts()["a"].step == 2**63 - 1


def test_commit_tick_refuses_a_cursor_that_is_not_text(store: Store) -> None:
    with pytest.raises(StoreError):
        store.commit_tick(
            source="wandb",
            alerts=[alert("a")],
            cursors={"r1": 5},  # type: ignore[dict-item]
            now=T0,
        )
    assert store.load_alerts() == {}


def test_commit_tick_from_several_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                commit(store, alert(f"t{n}-{i}"), cursors={f"r{n}": str(i)}, now=T0 + i)
                store.load_alerts([f"t{n}-{i}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.load_alerts()) == 120
    assert store.load_cursors("wandb") == {f"r{n}": "19" for n in range(6)}


# --- notification log ---------------------------------------------------------------------


def record(
    receiver: str = "slack",
    *,
    sent_at: float = T0,
    firing: set[str] | None = None,
    ttl: float = DAY,
) -> NotificationRecord:
    return NotificationRecord(
        group_key="{}:{alertname=loss_nan}",
        receiver=receiver,
        firing=frozenset(firing if firing is not None else {"a", "b"}),
        resolved=frozenset({"c"}),
        sent_at=sent_at,
        expires_at=sent_at + ttl,
    )


def test_notification_log_round_trips(store: Store) -> None:
    assert store.last_notification("{}:{alertname=loss_nan}", "slack") is None
    store.record_notification(record())
    assert store.last_notification("{}:{alertname=loss_nan}", "slack") == record()
    assert store.last_notification("{}:{alertname=loss_nan}", "email") is None
    assert store.last_notification("other", "slack") is None


def test_notification_log_latest_wins(store: Store) -> None:
    store.record_notification(record(firing={"a"}))
    later = record(sent_at=T0 + 60, firing={"a", "b", "c"})
    store.record_notification(later)
    assert store.last_notification(later.group_key, "slack") == later
    # A slower replica writing an older record does not roll the log back.
    store.record_notification(record(sent_at=T0 + 30, firing=set()))
    assert store.last_notification(later.group_key, "slack") == later


def test_notification_log_is_per_receiver(store: Store) -> None:
    slack, email = record("slack", firing={"a"}), record("email", firing={"b"})
    store.record_notification(slack)
    store.record_notification(email)
    assert store.last_notification(slack.group_key, "slack") == slack
    assert store.last_notification(slack.group_key, "email") == email


def test_expired_notification_records_are_collected(store: Store) -> None:
    short, long = record("slack", ttl=HOUR), record("email", ttl=DAY)
    store.record_notification(short)
    store.record_notification(long)
    assert short.expired(T0 + HOUR) and not long.expired(T0 + HOUR)
    collected = store.collect_garbage(T0 + HOUR, resolved_retention=DAY, cursor_retention=DAY)
    assert collected.notifications == 1
    assert store.last_notification(short.group_key, "slack") is None
    assert store.last_notification(long.group_key, "email") == long


# --- silences -----------------------------------------------------------------------------

TEAM = Matcher(name="team", op=MatchOp.EQUAL, value="research")


def test_silence_add_and_list(store: Store) -> None:
    silence = store.add_silence(
        matchers=[TEAM, Matcher.parse("rule=~loss_.*")],
        ends_at=T0 + HOUR,
        now=T0,
        created_by="ana",
        comment="maintenance",
    )
    assert len(silence.id) == 16 and int(silence.id, 16) >= 0
    assert silence.starts_at == T0 and silence.created_at == T0 and silence.ends_at == T0 + HOUR
    assert silence.matchers == (TEAM, Matcher(name="rule", op=MatchOp.REGEX, value="loss_.*"))
    assert (silence.created_by, silence.comment) == ("ana", "maintenance")
    assert store.silences(T0) == [silence]
    assert silence.active(T0) and silence.matches({"team": "research", "rule": "loss_nan"})

    other = store.add_silence(matchers=[TEAM], ends_at=T0 + DAY, now=T0 + 1)
    assert other.id != silence.id
    assert store.silences(T0 + 1) == [silence, other]


def test_pending_silence_is_listed(store: Store) -> None:
    pending = store.add_silence(matchers=[TEAM], starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR, now=T0)
    assert pending.pending(T0) and not pending.active(T0)
    assert store.silences(T0) == [pending]


def test_silence_expires_by_time(store: Store) -> None:
    silence = store.add_silence(matchers=[TEAM], ends_at=T0 + HOUR, now=T0)
    assert store.silences(T0 + HOUR - 1) == [silence]
    assert store.silences(T0 + HOUR) == []
    assert store.silences(T0 + HOUR, include_expired=True) == [silence]


def test_expire_silence(store: Store) -> None:
    silence = store.add_silence(matchers=[TEAM], ends_at=T0 + DAY, now=T0)
    assert store.expire_silence(silence.id, T0 + 60) is True
    assert store.silences(T0 + 60) == []
    (expired,) = store.silences(T0 + 60, include_expired=True)
    assert expired == replace(silence, ends_at=T0 + 60)
    assert expired.expired(T0 + 60)

    # Expiring again changes nothing; an unknown id says so.
    assert store.expire_silence(silence.id, T0 + 120) is True
    assert store.silences(T0 + 120, include_expired=True) == [expired]
    assert store.expire_silence("0000000000000000", T0) is False


def test_expire_pending_silence(store: Store) -> None:
    pending = store.add_silence(matchers=[TEAM], starts_at=T0 + HOUR, ends_at=T0 + DAY, now=T0)
    assert store.expire_silence(pending.id, T0)
    (expired,) = store.silences(T0, include_expired=True)
    assert (expired.starts_at, expired.ends_at) == (T0, T0)
    assert store.silences(T0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matchers": []}, "at least one matcher"),
        ({"matchers": [Matcher.parse("team=~.*")]}, "mute everything"),
        ({"ends_at": T0 - 1}, "end after it starts"),
        ({"starts_at": T0 - 2 * HOUR, "ends_at": T0 - HOUR}, "in the future"),
    ],
)
def test_invalid_silence_is_refused(store: Store, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"matchers": [TEAM], "ends_at": T0 + HOUR, "now": T0} | kwargs
    with pytest.raises(ValueError, match=message):
        store.add_silence(**args)
    assert store.silences(T0, include_expired=True) == []


# --- outbox and delivery refs -------------------------------------------------------------


def entry(
    entry_id: str = "m1",
    *,
    group: str = "{}:{rule=\"loss_nan\"}",
    receiver: str = "slack",
    at: float = T0,
    firing: frozenset[str] = frozenset({"fp1"}),
    **changes: Any,
) -> OutboxEntry:
    changes.setdefault("next_attempt_at", at)
    return OutboxEntry(
        id=entry_id, group_key=group, receiver=receiver, firing=firing,
        resolved=frozenset({"fp0"}), payload='{"v":1,"text":"ünïcode \\u2028"}',
        created_at=at, expires_at=at + DAY, **changes,
    )


def test_outbox_round_trips(store: Store) -> None:
    assert store.enqueue([entry()]) == 0
    assert store.outbox() == [entry()]
    assert store.outbox(receiver="email") == []
    assert store.outbox(group_key=entry().group_key, receiver="slack") == [entry()]


def test_outbox_ids_are_unique_and_a_refused_batch_changes_nothing(store: Store) -> None:
    store.enqueue([entry("m1")])
    with pytest.raises(ValueError, match="m1"):
        store.enqueue([entry("m2", receiver="email"), entry("m1", at=T0 + 1)])
    assert [e.id for e in store.outbox()] == ["m1"]


def test_enqueue_supersedes_pending_entries_of_the_group(store: Store) -> None:
    store.enqueue([entry("old"), entry("other", receiver="email")])
    (claimed,) = store.claim_outbox(T0, claimant="x", lease=60, receivers=["email"])
    store.enqueue([entry("in-flight", receiver="email", at=T0 + 1)])
    assert store.enqueue([entry("new", at=T0 + 1)]) == 1
    assert [e.id for e in store.outbox()] == ["other", "in-flight", "new"]  # a claim is kept
    assert claimed.id == "other"


def test_an_older_decision_written_late_does_not_supersede_a_newer_one(store: Store) -> None:
    store.enqueue([entry("newer", at=T0 + 5)])
    assert store.enqueue([entry("older", at=T0)]) == 0
    assert [e.id for e in store.outbox()] == ["older", "newer"]


def test_outbox_depth_counts_what_waits_to_be_sent(store: Store) -> None:
    assert store.outbox_depth() == 0
    store.enqueue([entry("a"), entry("b", group="g2"), entry("c", group="g3")])
    store.claim_outbox(T0, claimant="x", lease=60, limit=1)
    assert store.outbox_depth() == 3  # a claimed entry still waits
    assert store.fail_outbox("a", claimant="x", error="channel_not_found", now=T0)
    assert store.outbox_depth() == 2 == len(store.outbox(include_failed=False))


def test_enqueue_keeps_failed_entries(store: Store) -> None:
    store.enqueue([entry("old")])
    assert len(store.claim_outbox(T0, claimant="x", lease=60)) == 1
    assert store.fail_outbox("old", claimant="x", error="channel_not_found", now=T0)
    assert store.enqueue([entry("new", at=T0 + 1)]) == 0
    assert [(e.id, e.failed) for e in store.outbox()] == [("old", True), ("new", False)]
    assert [e.id for e in store.outbox(include_failed=False)] == ["new"]


def test_claims_are_exclusive_until_the_lease_runs_out(store: Store) -> None:
    store.enqueue([entry("m1"), entry("m2", group="g2", at=T0 + 1)])
    first = store.claim_outbox(T0 + 5, claimant="a", lease=60, limit=1)
    assert [(e.id, e.claimed_by, e.claimed_until, e.attempts) for e in first] == [
        ("m1", "a", T0 + 65, 1)]
    assert [e.id for e in store.claim_outbox(T0 + 5, claimant="b", lease=60)] == ["m2"]
    assert store.claim_outbox(T0 + 64, claimant="c", lease=60) == []
    (again,) = store.claim_outbox(T0 + 65, claimant="c", lease=60, limit=1)  # a crashed "a"
    assert (again.id, again.claimed_by, again.attempts) == ("m1", "c", 2)
    assert not store.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0 + DAY)


def test_an_entry_taken_from_a_claim_that_ran_out_is_uncertain(store: Store) -> None:
    store.enqueue([entry("m1"), entry("m2", group="g2")])
    store.claim_outbox(T0, claimant="a", lease=60)  # "a" dies holding both
    assert store.retry_outbox("m2", claimant="a", next_attempt_at=T0 + 1, error="429")
    taken = {e.id: e for e in store.claim_outbox(T0 + 61, claimant="b", lease=60)}
    assert (taken["m1"].uncertain, taken["m2"].uncertain) == (True, False)  # m2 was settled
    assert [e.uncertain for e in store.outbox()] == [True, False]
    # A retry that may have reached the receiver says so, and a later plain retry keeps it.
    assert store.retry_outbox("m2", claimant="b", next_attempt_at=T0 + 62, error="timed out",
                              uncertain=True)
    store.claim_outbox(T0 + 62, claimant="c", lease=60)
    assert store.retry_outbox("m2", claimant="c", next_attempt_at=T0 + 63, error="429")
    assert {e.id: e.uncertain for e in store.outbox()} == {"m1": True, "m2": True}


def test_followups_come_with_a_delivery_and_are_not_news(store: Store) -> None:
    store.enqueue([entry("m1")])
    store.claim_outbox(T0, claimant="a", lease=60)
    charts = entry("m1-charts", at=T0 + 1, firing=frozenset(), followup=True)
    assert store.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0 + DAY,
                                 followups=[charts])
    assert store.outbox() == [charts]
    record = store.last_notification(entry().group_key, "slack")
    # Newer news about the group does not supersede the follow-up …
    assert store.enqueue([entry("m2", at=T0 + 2)]) == 0
    assert [e.id for e in store.outbox()] == ["m1-charts", "m2"]
    # … and delivering it writes no notification record.
    store.claim_outbox(T0 + 3, claimant="a", lease=60, limit=1)
    assert store.complete_outbox("m1-charts", claimant="a", refs={}, refs_expire_at=T0 + DAY)
    assert store.last_notification(entry().group_key, "slack") == record
    assert [e.id for e in store.outbox()] == ["m2"]


def test_claim_takes_due_entries_of_the_given_receivers_oldest_first(store: Store) -> None:
    store.enqueue([entry("late", at=T0 + 2), entry("early", group="g2", at=T0 + 1),
                   entry("mail", group="g3", receiver="email"),
                   entry("future", group="g4", next_attempt_at=T0 + 100)])
    taken = store.claim_outbox(T0 + 10, claimant="a", lease=60, receivers={"slack"})
    assert [e.id for e in taken] == ["early", "late"]
    assert store.claim_outbox(T0 + 10, claimant="a", lease=60, receivers=[]) == []


def test_complete_records_the_notification_and_refs_and_deletes(store: Store) -> None:
    store.enqueue([entry()])
    store.claim_outbox(T0 + 5, claimant="a", lease=60)
    assert store.complete_outbox("m1", claimant="a", refs={"thread:e/p/r": "123.4"},
                                 refs_expire_at=T0 + DAY)
    assert store.outbox() == []
    assert store.last_notification(entry().group_key, "slack") == entry().record()
    assert store.load_refs("slack", ["thread:e/p/r", "message:x"], T0) == {
        "thread:e/p/r": "123.4"}
    assert store.load_refs("email", ["thread:e/p/r"], T0) == {}
    assert store.load_refs("slack", ["thread:e/p/r"], T0 + DAY) == {}  # expired
    assert not store.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0)


def test_each_delivery_is_logged_by_its_alerts_until_collected(store: Store) -> None:
    from runwatch.store.base import Delivery

    store.enqueue([entry("m1", firing=frozenset({"fp1", "fp2"})),
                   entry("m2", group="g2", firing=frozenset(), at=T0 + 1),
                   entry("m3", group="g3", firing=frozenset({"fp9"}), at=T0 + 2)])
    store.claim_outbox(T0 + 5, claimant="a", lease=60)
    assert store.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0,
                                 sent_at=T0 + 6)
    store.complete_outbox("m3", claimant="a", refs={}, refs_expire_at=T0)  # dropped unsent
    assert store.deliveries(["fp2", "fp9", "nothing"]) == [Delivery(
        id="m1", group_key=entry().group_key, receiver="slack",
        firing=frozenset({"fp1", "fp2"}), resolved=frozenset({"fp0"}), decided_at=T0,
        sent_at=T0 + 6)]
    assert store.deliveries([]) == []
    kept = store.collect_garbage(T0 + 6 + DAY - 1, resolved_retention=DAY,
                                 cursor_retention=DAY)
    assert kept.deliveries == 0 and len(store.deliveries(["fp1"])) == 1
    gone = store.collect_garbage(T0 + 7 + DAY, resolved_retention=DAY, cursor_retention=DAY)
    assert gone.deliveries == 1 and store.deliveries(["fp1", "fp2"]) == []


def test_complete_does_not_overwrite_a_newer_record(store: Store) -> None:
    newer = record(sent_at=T0 + 10)
    store.record_notification(replace(newer, group_key=entry().group_key))
    store.enqueue([entry()])
    store.claim_outbox(T0 + 20, claimant="a", lease=60)
    store.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0)
    assert store.last_notification(entry().group_key, "slack").sent_at == T0 + 10


def test_retry_releases_the_claim_until_the_next_attempt(store: Store) -> None:
    store.enqueue([entry()])
    store.claim_outbox(T0, claimant="a", lease=60)
    assert not store.retry_outbox("m1", claimant="b", next_attempt_at=T0 + 30, error="x")
    assert store.retry_outbox("m1", claimant="a", next_attempt_at=T0 + 30,
                              error="HTTP 503\nbusy")
    (waiting,) = store.outbox()
    assert (waiting.attempts, waiting.next_attempt_at, waiting.last_error) == (
        1, T0 + 30, "HTTP 503 busy")
    assert (waiting.claimed_by, waiting.claimed_until) == ("", None)
    assert store.claim_outbox(T0 + 29, claimant="a", lease=60) == []
    assert [e.attempts for e in store.claim_outbox(T0 + 30, claimant="a", lease=60)] == [2]


def test_failed_entries_are_never_claimed_and_collected_after_retention(store: Store) -> None:
    store.enqueue([entry("m1"), entry("m2", group="g2")])
    store.claim_outbox(T0, claimant="a", lease=60, limit=1)
    assert store.fail_outbox("m1", claimant="a", error="invalid_auth", now=T0)
    assert store.fail_outbox("m2", claimant=None, error="receiver removed", now=T0 + 1)
    assert not store.fail_outbox("m2", claimant=None, error="again", now=T0 + 2)
    assert store.claim_outbox(T0 + DAY, claimant="a", lease=60) == []
    assert [(e.id, e.failed_at, e.last_error) for e in store.outbox()] == [
        ("m1", T0, "invalid_auth"), ("m2", T0 + 1, "receiver removed")]
    kept = store.collect_garbage(T0 + HOUR, resolved_retention=DAY, cursor_retention=DAY)
    assert kept.outbox == 0
    gone = store.collect_garbage(T0 + HOUR, resolved_retention=DAY, cursor_retention=DAY,
                                 outbox_retention=HOUR - 2)
    assert gone.outbox == 2 and store.outbox() == []


def test_pending_entries_are_never_collected_and_refs_expire(store: Store) -> None:
    store.enqueue([entry("m1"), entry("m2", group="g2")])
    store.claim_outbox(T0, claimant="a", lease=60, limit=1)
    store.complete_outbox("m1", claimant="a", refs={"thread:x": "1"}, refs_expire_at=T0 + HOUR)
    collected = store.collect_garbage(T0 + 30 * DAY, resolved_retention=DAY,
                                      cursor_retention=DAY)
    assert (collected.outbox, collected.refs) == (0, 1)
    assert [e.id for e in store.outbox()] == ["m2"]


def test_claims_from_several_threads_take_each_entry_once(store: Store) -> None:
    store.enqueue([entry(f"m{i:02}", group=f"g{i}") for i in range(40)])
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while got := store.claim_outbox(T0, claimant=name, lease=60, limit=3):
            with lock:
                taken.extend(e.id for e in got)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [f"m{i:02}" for i in range(40)]


# --- garbage collection -------------------------------------------------------------------


def test_collect_garbage(store: Store) -> None:
    now = T0 + 10 * DAY
    commit(
        store,
        alert("firing-old", status=AlertStatus.FIRING, last_seen=T0),
        alert("pending-old", status=AlertStatus.PENDING, last_seen=T0),
        alert("resolved-old", status=AlertStatus.RESOLVED, resolved_at=T0, last_seen=T0),
        alert(
            "resolved-new",
            status=AlertStatus.RESOLVED,
            resolved_at=now - HOUR,
            last_seen=now - HOUR,
        ),
        alert("inactive-old", last_seen=T0),
        alert("inactive-still-evaluated", last_seen=now - 60),  # written long ago, seen lately
        alert("inactive-never-seen"),  # falls back to when it was written: T0
        cursors={"gone": "1"},
        now=T0,
    )
    commit(store, cursors={"fresh": "2"}, now=now - HOUR)
    store.record_notification(record("slack", sent_at=T0, ttl=DAY))
    store.record_notification(record("email", sent_at=now - HOUR, ttl=DAY))
    ended = store.add_silence(matchers=[TEAM], ends_at=T0 + HOUR, now=T0)
    recent = store.add_silence(matchers=[TEAM], ends_at=now - HOUR, now=T0)
    live = store.add_silence(matchers=[TEAM], ends_at=now + DAY, now=T0)

    collected = store.collect_garbage(now, resolved_retention=2 * DAY, cursor_retention=DAY)

    assert collected == Collected(notifications=1, alerts=3, cursors=1, silences=1)
    assert collected.total == 6
    assert set(store.load_alerts()) == {
        "firing-old",
        "pending-old",
        "resolved-new",
        "inactive-still-evaluated",
    }
    assert store.load_cursors("wandb") == {"fresh": "2"}
    assert store.last_notification(record().group_key, "slack") is None
    assert store.last_notification(record().group_key, "email") is not None
    assert {s.id for s in store.silences(now, include_expired=True)} == {recent.id, live.id}
    assert ended.id not in {s.id for s in store.silences(now, include_expired=True)}

    again = store.collect_garbage(now, resolved_retention=2 * DAY, cursor_retention=DAY)
    assert again == Collected()


def test_collect_garbage_silence_retention(store: Store) -> None:
    silence = store.add_silence(matchers=[TEAM], ends_at=T0 + HOUR, now=T0)
    kept = store.collect_garbage(
        T0 + 3 * HOUR, resolved_retention=HOUR, cursor_retention=HOUR, silence_retention=DAY
    )
    assert kept.silences == 0
    assert store.silences(T0, include_expired=True) == [silence]
    gone = store.collect_garbage(T0 + 3 * HOUR, resolved_retention=HOUR, cursor_retention=HOUR)
    assert gone.silences == 1


# --- lifecycle ----------------------------------------------------------------------------


def test_source_status_is_replaced_per_source(store: Store) -> None:
    assert store.load_status() == {}
    store.save_status("wandb:team", {"last_tick": T0, "errors": ["x"], "ok": False}, T0)
    store.save_status("rundir", {"last_tick": T0, "runs": 3}, T0)
    store.save_status("wandb:team", {"last_tick": T0 + 60, "errors": [], "ok": True}, T0 + 60)
    assert store.load_status() == {
        "rundir": {"last_tick": T0, "runs": 3},
        "wandb:team": {"last_tick": T0 + 60, "errors": [], "ok": True},
    }


def test_source_status_that_is_not_strict_json_is_refused(store: Store) -> None:
    for status in ({"duration": math.nan}, {"when": object()}):
        with pytest.raises(StoreError, match="cannot store status of source 'rundir'") as err:
            store.save_status("rundir", status, T0)
        assert not err.value.temporary
    assert store.load_status() == {}


def test_the_run_board_is_saved_per_run_and_forgotten_when_unseen(store: Store) -> None:
    assert store.load_board() == []
    rows = [BoardEntry(path=f"t/p/r{i}", source="wandb", seen=T0 + i, body=f"{{\"n\": {i}}}")
            for i in range(3)]
    store.save_board(rows, forget_before=0)
    store.save_board([replace(rows[1], body="again", seen=T0 + 50)], forget_before=0)
    assert store.load_board() == [rows[0], replace(rows[1], body="again", seen=T0 + 50),
                                  rows[2]]
    store.save_board([], forget_before=T0 + 2)  # r0 goes; r1 was seen again since
    assert [e.path for e in store.load_board()] == ["t/p/r1", "t/p/r2"]
    text = "run \u2603 <b>" * 1000  # any text, however long
    store.save_board([replace(rows[2], body=text)], forget_before=0)
    assert store.load_board()[-1].body == text


def test_ping(store: Store) -> None:
    store.ping()


def test_closed_store_refuses_calls(backend: Backend) -> None:
    opened = backend.open()
    opened.close()
    opened.close()  # harmless
    for call in (
        opened.ping,
        opened.load_alerts,
        lambda: opened.load_cursors("wandb"),
        lambda: commit(opened, alert("a")),
    ):
        with pytest.raises(StoreError, match="closed") as caught:
            call()
        assert caught.value.temporary is False


def test_reopen_keeps_everything(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip("lives in one process only")
    first = backend.open()
    commit(first, full_alert(), cursors={"r1": "c1"})
    first.record_notification(record())
    silence = first.add_silence(matchers=[TEAM], ends_at=T0 + HOUR, now=T0)
    first.enqueue([entry()])
    first.close()

    second = backend.open()
    try:
        assert canon(second.load_alerts()) == canon({full_alert().fingerprint: full_alert()})
        assert second.load_cursors("wandb") == {"r1": "c1"}
        assert second.last_notification(record().group_key, "slack") == record()
        assert second.silences(T0) == [silence]
        assert second.outbox() == [entry()]
    finally:
        second.close()


def test_two_handles_see_each_other(backend: Backend) -> None:
    """No in-process caching: two processes sharing one store agree."""
    if not backend.persistent:
        pytest.skip("lives in one process only")
    one, two = backend.open(), backend.open()
    try:
        commit(one, alert("a"), cursors={"r1": "1"})
        assert set(two.load_alerts()) == {"a"}
        commit(two, alert("a", status=AlertStatus.FIRING), cursors={"r1": "2"}, now=T0 + 1)
        assert one.load_alerts()["a"].status is AlertStatus.FIRING
        assert one.load_cursors("wandb") == {"r1": "2"}
        silence = one.add_silence(matchers=[TEAM], ends_at=T0 + HOUR, now=T0)
        assert two.expire_silence(silence.id, T0 + 1)
        assert one.silences(T0 + 1) == []
        two.record_notification(record())
        assert one.last_notification(record().group_key, "slack") == record()
    finally:
        one.close()
        two.close()
