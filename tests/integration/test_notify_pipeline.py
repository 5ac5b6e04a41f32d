"""The notification pipeline behind real ticks: the engine over a hand-built source, the
stores, and the real Slack notifier against the fake Slack Web API."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import T0, rule, series, snapshot
from fixtures.fakeslack import FakeSlack
from fixtures.recorder import RecordingNotifier
from runwatch.config import Config
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import RunState
from runwatch.notify.base import Reason
from runwatch.notify.pipeline import notify_after_tick
from runwatch.notify.slack import SlackNotifier
from runwatch.sources.base import Poll
from runwatch.store import open_store
from runwatch.tick import run_tick

MINUTE = 60.0


class ScriptedSource:
    """One run whose grad norm at tick ``i`` is ``values[i]``: one new point per tick."""

    name = "scripted"

    def __init__(self, values, run_id="abc123"):
        self.values = values
        self.run_id = run_id
        self.tick = 0

    def poll(self, cursors, wanted, now, **kw):
        i = self.tick
        self.tick += 1
        history = {"grad_norm": series([self.values[i]], start_step=i, start_time=now)}
        return Poll(snapshots=(snapshot(history, heartbeat=now, run_id=self.run_id),),
                    cursors={self.run_id: str(i)})


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = open_store("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def config(**settings) -> Config:
    data = {"sources": [{"type": "rundir", "path": "runs"}],
            "receivers": [{"name": "slack", "webhook": {"url": "https://example.com/x"}}]}
    data.update(settings)
    return Config.model_validate(data, context={"base_dir": Path("/tmp")})


def test_a_flapping_metric_over_100_ticks_is_a_few_messages(store):
    high, low = 50.0, 1.0
    values = (
        [high] * 10  # ticks 0-9: holds 3 min, fires at tick 3
        + [low] * 5  # ticks 10-14: resolves
        + [high, low] * 20  # ticks 15-54: flaps every minute, never holds 3 min
        + [high] * 45  # ticks 55-99: fires again at 58, repeats every 30 min
    )
    rules = [rule(name="grad-high", kind="threshold", metric="grad_norm", op=">", value=10,
                  severity="critical", **{"for": "3m"})]
    source = ScriptedSource(values)
    cfg = config(repeat_interval="30m")
    slack = RecordingNotifier("slack")
    sent_at = []
    for i in range(100):
        now = T0 + i * MINUTE
        run_tick(sources=[source], rules=rules, aliases=DEFAULT_ALIASES, store=store, now=now)
        before = len(slack.sent)
        notify_after_tick(store, cfg, {"slack": slack}, now)
        sent_at += [(i, m.reason) for m in slack.sent[before:]]
    assert sent_at == [(3, Reason.FIRST), (10, Reason.RESOLVED), (58, Reason.CHANGED),
                       (88, Reason.REPEAT)]


def test_three_hundred_crashes_in_one_tick_through_the_engine(store):
    crashed = [snapshot(run_id=f"run{i:03}", name=f"job-{i}", state=RunState.CRASHED, heartbeat=T0)
               for i in range(300)]

    class Outage:
        name = "cluster"

        def poll(self, cursors, wanted, now, **kw):
            return Poll(snapshots=tuple(crashed))

    rules = [rule(name="run-crashed", kind="state", states=["crashed"], severity="critical")]
    report = run_tick(sources=[Outage()], rules=rules, aliases=DEFAULT_ALIASES, store=store,
                      now=T0)
    assert len(report.transitions) == 300
    slack = RecordingNotifier("slack")
    notified = notify_after_tick(store, config(), {"slack": slack}, T0)
    assert (notified.queued, notified.sent) == (1, 1)
    (message,) = slack.sent
    assert sorted(a.run.name for a in message.firing) == sorted(f"job-{i}" for i in range(300))


@pytest.fixture
def fake_slack():
    fake = FakeSlack()
    yield fake
    fake.close()


def test_the_real_slack_notifier_threads_follow_ups_and_retries(store, fake_slack):
    """Per-run groups: the second alert about a run lands in the first one's thread, and a
    429 with Retry-After is retried by the outbox, not lost."""
    cfg = config(receivers=[{"name": "slack", "slack": {"token": "xoxb-test",
                                                        "channel": "#alerts"}}],
                 routes=[{"receivers": ["slack"], "group_by": ["run", "rule"]}])
    notifier = SlackNotifier("slack", token="xoxb-test", channel="#alerts",
                             base_url=fake_slack.api_url, retries=0)
    rules = [rule(name="grad-high", kind="threshold", metric="grad_norm", op=">", value=10,
                  severity="critical"),
             rule(name="grad-very-high", kind="threshold", metric="grad_norm", op=">",
                  value=100, severity="critical")]
    source = ScriptedSource([50.0, 500.0, 500.0, 500.0])
    try:
        run_tick(sources=[source], rules=rules, aliases=DEFAULT_ALIASES, store=store, now=T0)
        assert notify_after_tick(store, cfg, {"slack": notifier}, T0).sent == 1
        fake_slack.fail("chat.postMessage", status=429, retry_after=120)
        run_tick(sources=[source], rules=rules, aliases=DEFAULT_ALIASES, store=store,
                 now=T0 + MINUTE)
        report = notify_after_tick(store, cfg, {"slack": notifier}, T0 + MINUTE)
        assert (report.sent, report.retrying) == (0, 1)
        assert store.outbox()[0].next_attempt_at == T0 + MINUTE + 120
        run_tick(sources=[source], rules=rules, aliases=DEFAULT_ALIASES, store=store,
                 now=T0 + 3 * MINUTE)
        report = notify_after_tick(store, cfg, {"slack": notifier}, T0 + 3 * MINUTE)
        assert (report.queued, report.sent, report.pending) == (0, 1, 0)
    finally:
        notifier.close()
    first, second = fake_slack.calls_to("chat.postMessage")
    assert first.thread_ts is None and second.thread_ts == first.ts
