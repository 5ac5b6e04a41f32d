"""Planning and draining over the real stores (memory and SQLite) and a recording notifier:
stored before sent, recorded after success, retried with backoff, failed for good, crashes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from fixtures.recorder import RecordingNotifier
from runwatch.config import Config
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify import outbox
from runwatch.notify.base import Chart, Delivery, Message, Reason
from runwatch.notify.pipeline import drain_only, notify_after_tick, plan
from runwatch.store import open_store
from runwatch.store.base import Matcher, Store

T0 = 1_700_000_000.0
HOUR = 3600.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = open_store("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def config(tmp_path: Path | None = None, **settings: Any) -> Config:
    data: dict[str, Any] = {
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "slack", "webhook": {"url": "https://example.com/slack"}},
                      {"name": "mail", "webhook": {"url": "https://example.com/mail"}}],
        "routes": [{"match": {"severity": "critical"}, "receivers": ["slack", "mail"]},
                   {"receivers": ["slack"]}],
        "inhibit": [],  # the outbox's business here, not the default inhibition's
    }
    data.update(settings)
    return Config.model_validate(data, context={"base_dir": tmp_path or Path("/tmp")})


def alert(rule="run-crashed", run="r1", *, status=AlertStatus.FIRING, severity="critical",
          at=T0, **changes) -> AlertState:
    ref = RunRef(source="rundir", id=run, name=f"name-{run}", project="p", entity="e")
    resolved = at if status == AlertStatus.RESOLVED else None
    return AlertState(fingerprint=fingerprint(rule, ref), rule=rule, run=ref,
                      severity=Severity(severity), status=status, fired_at=changes.pop(
                          "fired_at", at), resolved_at=resolved, summary=f"{rule} on {run}",
                      **changes)


def commit(store: Store, *alerts: AlertState, now: float = T0) -> None:
    store.commit_tick(source="test", alerts=alerts, cursors={}, now=now)


def notifiers(*names: str) -> dict[str, RecordingNotifier]:
    return {name: RecordingNotifier(name) for name in names or ("slack", "mail")}


# --- the stored form ----------------------------------------------------------------------


def test_a_message_round_trips_through_its_payload():
    firing = alert(value=math.nan, step=12, metric="loss", labels={"team": "ü"},
                   memory={"window": [1, 2]})
    message = Message(id="m1", receiver="slack", group_key="g", group_labels={"rule": "x"},
                      firing=(firing,), resolved=(alert("run-slow", status=AlertStatus.RESOLVED),),
                      reason=Reason.CHANGED, created_at=T0,
                      charts={firing.fingerprint: Chart(metric="loss", steps=(1, 2),
                                                        values=(0.5, math.inf), threshold=1.0)})
    entry = outbox.new_entry(message, expires_at=T0 + HOUR)
    back = outbox.decode_message(entry, {"thread:e/p/r1": "1.2"})
    assert back.refs == {"thread:e/p/r1": "1.2"}
    assert back.firing[0].memory is None  # the check's memory stays out of messages
    assert math.isnan(back.firing[0].value)
    expected = dataclasses.replace(message, firing=(dataclasses.replace(
        firing, memory=None, value=back.firing[0].value),), refs=back.refs)
    assert back == expected
    assert entry.firing == {firing.fingerprint}
    assert entry.resolved == {message.resolved[0].fingerprint}


@pytest.mark.parametrize(("attempts", "retry_after", "delay"), [
    (1, None, 30), (2, None, 60), (3, None, 120), (7, None, 1800), (30, None, 1800),
    (1, 90.0, 90), (3, 5.0, 5), (1, 86400.0, 3600),  # Retry-After, as asked (capped)
])
def test_backoff(attempts, retry_after, delay):
    assert outbox.backoff(attempts, retry_after) == delay


# --- plan and drain -----------------------------------------------------------------------


def test_first_message_is_stored_before_it_is_sent_and_recorded_after(store):
    commit(store, alert())
    seen: list[Any] = []

    class Inspecting(RecordingNotifier):
        def send(self, message):
            seen.append((store.outbox(), store.last_notification(message.group_key, self.name)))
            return super().send(message)

    slack = Inspecting("slack")
    report = notify_after_tick(store, config(), {"slack": slack, "mail": RecordingNotifier("m")},
                               T0)
    ((queued, record),) = seen[:1]  # while the receiver is being told:
    assert slack.sent[0].id in {e.id for e in queued}  # the message is stored,
    assert record is None  # and not yet recorded as sent
    assert (report.queued, report.sent, report.pending) == (2, 2, 0)
    message = slack.sent[0]
    assert message.reason is Reason.FIRST and message.group_labels == {"rule": "run-crashed"}
    assert store.outbox() == []
    record = store.last_notification(message.group_key, "slack")
    assert record.firing == {alert().fingerprint} and record.sent_at == T0


def test_nothing_twice_then_repeat_then_resolved(store):
    cfg, sent = config(), notifiers()
    commit(store, alert())
    notify_after_tick(store, cfg, sent, T0)
    for minutes in (1, 60, 239):
        assert notify_after_tick(store, cfg, sent, T0 + minutes * 60).queued == 0
    notify_after_tick(store, cfg, sent, T0 + 4 * HOUR)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST, Reason.REPEAT]
    commit(store, alert(status=AlertStatus.RESOLVED, at=T0 + 5 * HOUR, fired_at=T0),
           now=T0 + 5 * HOUR)  # (it fired at T0, as the engine keeps it)
    notify_after_tick(store, cfg, sent, T0 + 5 * HOUR)
    notify_after_tick(store, cfg, sent, T0 + 6 * HOUR)
    last = sent["slack"].sent[-1]
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST, Reason.REPEAT,
                                                     Reason.RESOLVED]
    assert (last.firing, [a.fingerprint for a in last.resolved]) == ((), [alert().fingerprint])


def test_a_resolved_alert_that_never_fired_is_not_announced(store):
    commit(store, alert(status=AlertStatus.RESOLVED, fired_at=None))  # pending, then cleared
    sent = notifiers()
    assert notify_after_tick(store, config(), sent, T0).queued == 0
    assert sent["slack"].attempts == []


@pytest.mark.parametrize("send_resolved", [True, False])
def test_an_alert_that_fired_and_resolved_unannounced_is_told_once(store, send_resolved):
    """A NaN on a run's final rows fires and resolves in one tick: nobody must miss it."""
    cfg, sent = config(send_resolved=send_resolved), notifiers("slack")
    commit(store, alert(status=AlertStatus.RESOLVED))
    notify_after_tick(store, cfg, sent, T0)
    [message] = sent["slack"].sent
    assert message.reason is Reason.FIRST and message.firing == ()
    assert [a.fingerprint for a in message.resolved] == [alert().fingerprint]
    notify_after_tick(store, cfg, sent, T0 + 60)
    notify_after_tick(store, cfg, sent, T0 + 86400)
    assert len(sent["slack"].sent) == 1


def test_an_alert_that_flashes_again_after_it_was_told_is_told_again(store):
    """What the training code raises is told once and closed; the same title raised again
    after its wait fires (and closes) again: news again, told once again."""
    cfg, sent = config(send_resolved=False), notifiers("slack")
    commit(store, alert(status=AlertStatus.RESOLVED, resolution="told once"))
    notify_after_tick(store, cfg, sent, T0)
    notify_after_tick(store, cfg, sent, T0 + 60)
    assert len(sent["slack"].sent) == 1
    commit(store, alert(status=AlertStatus.RESOLVED, at=T0 + 600, resolution="told once"),
           now=T0 + 600)
    notify_after_tick(store, cfg, sent, T0 + 600)
    notify_after_tick(store, cfg, sent, T0 + 660)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST, Reason.CHANGED]
    assert [a.fired_at for a in sent["slack"].sent[1].resolved] == [T0 + 600]


def test_send_resolved_off(store):
    cfg, sent = config(send_resolved=False), notifiers()
    commit(store, alert())
    notify_after_tick(store, cfg, sent, T0)
    commit(store, alert(status=AlertStatus.RESOLVED, at=T0 + 60, fired_at=T0), now=T0 + 60)
    notify_after_tick(store, cfg, sent, T0 + 60)
    assert len(sent["slack"].sent) == 1
    commit(store, alert(at=T0 + 120), now=T0 + 120)  # fires again: news, not a repeat
    notify_after_tick(store, cfg, sent, T0 + 120)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST, Reason.CHANGED]


def test_routes_pick_receivers(store):
    commit(store, alert(), alert("grad-norm-spiky", severity="warning"))
    sent = notifiers()
    notify_after_tick(store, config(), sent, T0)
    assert sorted(m.group_labels["rule"] for m in sent["slack"].sent) == [
        "grad-norm-spiky", "run-crashed"]
    assert [m.group_labels["rule"] for m in sent["mail"].sent] == ["run-crashed"]


def test_no_receivers_nothing_planned(store):
    commit(store, alert())
    cfg = config(receivers=[], routes=[])
    assert notify_after_tick(store, cfg, {}, T0).queued == 0
    assert store.outbox() == []


def test_three_hundred_crashed_runs_are_a_handful_of_messages(store):
    crashed = [alert("run-crashed", f"r{i:03}") for i in range(300)]
    stalled = [alert("run-stalled", f"r{i:03}") for i in range(300)]
    slow = [alert("run-slow", f"s{i:03}", severity="warning") for i in range(300)]
    commit(store, *crashed, *stalled, *slow)
    sent = notifiers()
    cfg = config(inhibit=[{"source": {"rule": "run-crashed"},
                           "target": {"rule": ["run-stalled*", "run-slow"]}, "equal": ["run"]}])
    report = notify_after_tick(store, cfg, sent, T0)
    assert report.muted == 300  # every stalled run had crashed; the slow ones had not
    by_rule = {m.group_labels["rule"]: m for m in sent["slack"].sent}
    assert sorted(by_rule) == ["run-crashed", "run-slow"]
    assert {a.run.id for a in by_rule["run-crashed"].firing} == {f"r{i:03}" for i in range(300)}
    assert len(by_rule["run-slow"].firing) == 300
    assert len(sent["mail"].sent) == 1


def test_group_by_everything_in_one_message(store):
    commit(store, alert(), alert("run-slow", severity="warning"))
    sent = notifiers("slack")
    notify_after_tick(store, config(routes=[{"receivers": ["slack"], "group_by": []}],
                                    receivers=[{"name": "slack",
                                                "webhook": {"url": "https://e.com"}}]),
                      sent, T0)
    (message,) = sent["slack"].sent
    assert len(message.firing) == 2 and message.group_labels == {}


def test_group_wait_holds_a_new_group(store):
    cfg = config(routes=[{"receivers": ["slack"], "group_wait": "2m"}])
    sent = notifiers()
    commit(store, alert(at=T0))
    notify_after_tick(store, cfg, sent, T0)
    commit(store, alert("run-crashed", "r2", at=T0 + 60), now=T0 + 60)
    notify_after_tick(store, cfg, sent, T0 + 60)
    assert sent["slack"].sent == []
    notify_after_tick(store, cfg, sent, T0 + 120)
    (message,) = sent["slack"].sent
    assert len(message.firing) == 2


def test_silence_mutes_without_changing_state_and_notifies_when_it_ends(store):
    commit(store, alert())
    store.add_silence(matchers=[Matcher.parse("run=e/p/r1")], ends_at=T0 + HOUR, now=T0)
    sent = notifiers()
    assert notify_after_tick(store, config(), sent, T0).muted == 1
    assert sent["slack"].attempts == []
    assert store.alerts(status=AlertStatus.FIRING) == [alert()]
    notify_after_tick(store, config(), sent, T0 + HOUR)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST]


def test_charts_travel_with_the_message(store):
    commit(store, alert())
    chart = Chart(metric="grad_norm", steps=(1, 2), values=(3.0, 12.0), threshold=10.0,
                  firing_step=2)
    sent = notifiers()
    notify_after_tick(store, config(), sent, T0, charts={alert().fingerprint: chart, "x": chart})
    assert dict(sent["slack"].sent[0].charts) == {alert().fingerprint: chart}


# --- failures -----------------------------------------------------------------------------


def test_temporary_failure_backs_off_then_succeeds_and_is_never_queued_twice(store):
    cfg, sent = config(), notifiers()
    sent["slack"].fail_temporarily(2, detail="HTTP 503")
    commit(store, alert())
    first = notify_after_tick(store, cfg, sent, T0)
    assert (first.sent, first.retrying, first.pending) == (1, 1, 1)  # mail went out
    assert first.errors[0].startswith("receiver slack: message ")
    (waiting,) = store.outbox()
    assert (waiting.attempts, waiting.next_attempt_at, waiting.last_error) == (
        1, T0 + 30, "HTTP 503")
    assert notify_after_tick(store, cfg, sent, T0 + 29).queued == 0  # not due, not duplicated
    assert len(sent["slack"].attempts) == 1
    notify_after_tick(store, cfg, sent, T0 + 30)
    assert store.outbox()[0].next_attempt_at == T0 + 30 + 60
    report = notify_after_tick(store, cfg, sent, T0 + 90)
    assert (report.queued, report.sent, report.pending) == (0, 1, 0)
    ids = {m.id for m in sent["slack"].attempts}
    assert len(sent["slack"].attempts) == 3 and len(ids) == 1  # one message, three tries
    record = store.last_notification(sent["slack"].sent[0].group_key, "slack")
    assert record.sent_at == T0  # the state it announced was decided at T0


def test_retry_after_is_honoured(store):
    sent = notifiers("slack", "mail")
    sent["slack"].fail_temporarily(retry_after=300, detail="HTTP 429 ratelimited")
    commit(store, alert())
    notify_after_tick(store, config(), sent, T0)
    assert [e.next_attempt_at for e in store.outbox()] == [T0 + 300]


def test_a_failing_receiver_is_not_retried_within_one_drain(store):
    sent = notifiers()
    sent["slack"].fail_temporarily(1)
    commit(store, alert(), alert("run-slow", severity="warning"))
    report = notify_after_tick(store, config(), sent, T0)
    assert len(sent["slack"].attempts) == 1 and report.pending == 2


def test_permanent_failure_is_kept_failed_and_not_retried(store, caplog):
    cfg, sent = config(), notifiers()
    sent["slack"].fail_permanently("channel_not_found")
    commit(store, alert())
    with caplog.at_level("ERROR", logger="runwatch.notify"):
        report = notify_after_tick(store, cfg, sent, T0)
    assert report.failed == 1 and report.pending == 0
    (failed,) = store.outbox()
    assert failed.failed_at == T0 and "receiver slack" in failed.last_error
    assert "channel_not_found" in failed.last_error
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("receiver slack: message ") and line.endswith("(not retried)")
    for minutes in (1, 10, 100):
        assert notify_after_tick(store, cfg, sent, T0 + minutes * 60).queued == 0
    assert len(sent["slack"].attempts) == 1
    # After the repeat interval a still-firing alert is tried again: the config may be fixed.
    notify_after_tick(store, cfg, sent, T0 + 4 * HOUR)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST]


def test_an_undeliverable_message_is_given_up_after_a_day(store):
    sent = notifiers()
    commit(store, alert())
    sent["slack"].fail_temporarily(100)
    notify_after_tick(store, config(), sent, T0)
    report = drain_only(store, sent, T0 + outbox.GIVE_UP_AFTER)
    assert report.failed == 1
    assert "gave up after 2 attempts" in store.outbox()[0].last_error


def test_a_raising_notifier_is_a_temporary_failure(store):
    class Broken(RecordingNotifier):
        def send(self, message):
            raise RuntimeError("bug")

    commit(store, alert())
    report = notify_after_tick(store, config(), {"slack": Broken("slack")}, T0)
    assert report.retrying == 1
    assert "unexpected RuntimeError: bug" in store.outbox(receiver="slack")[0].last_error


def test_entries_of_removed_receivers_are_failed(store):
    commit(store, alert())
    plan(store, config(), T0)
    report = notify_after_tick(store, config(receivers=[{"name": "slack", "webhook": {
        "url": "https://e.com"}}], routes=[]), notifiers("slack"), T0 + 1)
    assert report.failed == 1
    (gone,) = store.outbox(receiver="mail")
    assert gone.last_error == "receiver mail: not configured any more"


def test_a_newer_state_supersedes_a_queued_one(store):
    sent = notifiers()
    sent["slack"].fail_temporarily(1)
    commit(store, alert())
    notify_after_tick(store, config(), sent, T0)
    commit(store, alert("run-crashed", "r2", at=T0 + 10), now=T0 + 10)
    report = notify_after_tick(store, config(), sent, T0 + 60)
    assert report.queued == 2  # slack and mail hear about r2
    (message,) = sent["slack"].sent  # one message to slack with both runs, not two
    assert {a.run.id for a in message.firing} == {"r1", "r2"}


# --- crashes ------------------------------------------------------------------------------


def test_crash_between_decision_and_send_sends_once_later(store):
    commit(store, alert())
    planned = plan(store, config(), T0)  # ... and the process died here
    assert len(planned.queued) == 2
    sent = notifiers()
    report = notify_after_tick(store, config(), sent, T0 + 60)  # the restart
    assert (report.queued, report.sent) == (0, 2)
    assert [m.id for m in sent["slack"].sent] == [planned.queued[0].id]
    notify_after_tick(store, config(), sent, T0 + 120)
    assert len(sent["slack"].sent) == 1


class DiesAfterSending:
    """A store whose process dies between the receiver's answer and the recording commit."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def complete_outbox(self, *args, **kwargs):
        raise KeyboardInterrupt("killed")


def test_crash_between_send_and_record_resends_after_the_lease(store):
    """At least once: the receiver got it, the record did not; the same message id comes
    again once the dead process's claim has run out."""
    commit(store, alert())
    sent = notifiers("slack")
    cfg = config(routes=[{"receivers": ["slack"]}])
    with pytest.raises(KeyboardInterrupt):
        notify_after_tick(DiesAfterSending(store), cfg, sent, T0)
    assert len(sent["slack"].sent) == 1
    assert notify_after_tick(store, cfg, sent, T0 + 60).sent == 0  # still claimed
    assert notify_after_tick(store, cfg, sent, T0 + outbox.DEFAULT_LEASE).sent == 1
    first, second = sent["slack"].sent
    assert first.id == second.id  # an idempotency key for receivers that take one
    assert notify_after_tick(store, cfg, sent, T0 + HOUR).sent == 0


def test_refs_are_read_when_sending_so_a_late_message_lands_in_the_thread(store):
    sent = notifiers("slack")
    cfg = config(routes=[{"receivers": ["slack"], "group_by": ["run", "rule"]}])
    commit(store, alert("run-crashed"))
    plan(store, cfg, T0)
    commit(store, alert("loss-nonfinite", at=T0 + 1), now=T0 + 1)
    plan(store, cfg, T0 + 1)  # planned before the run's thread exists
    drain_only(store, sent, T0 + 2)
    first, second = sent["slack"].sent
    assert first.refs == {} and second.refs == {"thread:e/p/r1": "ts-1"}
    assert store.load_refs("slack", ["thread:e/p/r1"], T0) == {"thread:e/p/r1": "ts-1"}


def test_lost_claim_is_reported(store):
    commit(store, alert())
    plan(store, config(routes=[{"receivers": ["slack"]}]), T0)

    class Slow(RecordingNotifier):
        def send(self, message):  # meanwhile the lease ran out and another process sent it
            store.claim_outbox(T0 + outbox.DEFAULT_LEASE, claimant="other", lease=60)
            return Delivery(ok=True)

    report = outbox.drain(store, {"slack": Slow("slack")}, T0)
    assert (report.sent, report.lost) == (0, 1)


INHIBIT = [{"source": {"rule": "run-crashed"}, "target": {"rule": "run-stalled"},
            "equal": ["run"]}]


def test_an_announced_stall_is_closed_when_its_run_crashes_and_inhibits_it(store):
    cfg, sent = config(inhibit=INHIBIT, routes=[]), notifiers("slack")
    commit(store, alert("run-stalled"))
    notify_after_tick(store, cfg, sent, T0)
    commit(store, alert("run-stalled", status=AlertStatus.RESOLVED, at=T0 + 60),
           alert("run-crashed", at=T0 + 60), now=T0 + 60)
    notify_after_tick(store, cfg, sent, T0 + 60)
    told = sorted((m.group_labels["rule"], m.reason, len(m.firing), len(m.resolved))
                  for m in sent["slack"].sent)
    assert told == [("run-crashed", Reason.FIRST, 1, 0),
                    ("run-stalled", Reason.FIRST, 1, 0),
                    ("run-stalled", Reason.RESOLVED, 0, 1)]


def test_a_stall_that_fired_and_resolved_under_an_inhibition_stays_quiet(store):
    cfg, sent = config(inhibit=INHIBIT, routes=[]), notifiers("slack")
    commit(store, alert("run-crashed"), alert("run-stalled", status=AlertStatus.RESOLVED))
    notify_after_tick(store, cfg, sent, T0)
    assert [m.group_labels["rule"] for m in sent["slack"].sent] == ["run-crashed"]


def test_an_entry_older_than_what_was_sent_since_is_dropped_unsent(store):
    """A process claims a "firing" entry and dies; the next run sends "resolved". When the
    dead claim runs out, the old "firing" must not arrive after the newer news."""
    cfg = config(routes=[], receivers=[{"name": "slack",
                                         "webhook": {"url": "https://example.com/s"}}])
    sent = notifiers("slack")
    commit(store, alert())
    plan(store, cfg, T0)
    [stale] = store.claim_outbox(T0, claimant="dead", lease=300)
    commit(store, alert(status=AlertStatus.RESOLVED, at=T0 + 60), now=T0 + 60)
    notify_after_tick(store, cfg, sent, T0 + 60)
    assert [m.reason for m in sent["slack"].sent] == [Reason.FIRST]  # the flash, resolved
    report = notify_after_tick(store, cfg, sent, T0 + 400)  # the dead claim ran out
    assert len(sent["slack"].sent) == 1
    assert store.outbox() == [] and report.pending == 0
    assert stale.id not in {m.id for m in sent["slack"].sent}
