"""SIGKILL at each step of a Slack send, with real `runwatch check` processes (time frozen
inside each with freezegun) on one SQLite store, a run directory whose training loop the
test drives, and the fake Slack server holding the step's request open while the process
is killed — then serving it, as Slack finishes a request whose client has gone.

Afterwards: no post twice, nothing lost, no chart twice, and every Slack message that ever
showed an alert shows it in its current state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import logwriter as lw
from fixtures.fakeslack import FakeSlack
from runwatch.notify.outbox import DEFAULT_LEASE

pytestmark = pytest.mark.sdk

T0 = 1_800_000_000.0
TOKEN = "xoxb-kill-0000-secret"
FROZEN_MAIN = """
import sys
from datetime import UTC, datetime
from freezegun import freeze_time
from runwatch.cli import main
with freeze_time(datetime.fromtimestamp(float(sys.argv[1]), UTC)):
    sys.exit(main(sys.argv[2:]))
"""
RULE_NAMES = ("grad-norm-exploding", "loss-high")
RULES = """rules:
  - {name: grad-norm-exploding, kind: threshold, metric: grad_norm, op: ">", value: 10,
     severity: critical}
  - {name: loss-high, kind: threshold, metric: loss, op: ">", value: 5, severity: warning}
"""


class Run:
    """A live run directory whose rows the test writes (the logwriter's real framing)."""

    def __init__(self, root: Path):
        run = root / "wandb" / "offline-run-20260101_000000-kill0001"
        run.mkdir(parents=True)
        self.log = run / "run-kill0001.wandb"
        lw.write(self.log, [lw.run(1, run_id="kill0001", name="llama-7b", project="pretrain",
                                   start=T0)])
        self.num, self.step_ = 2, 0

    def rows(self, t: float, n: int, **values: float) -> None:
        for i in range(n):
            records = lw.step(self.num, self.step_, {"train/loss": 2.0, "train/grad_norm": 1.0,
                                                      **values}, time=t + i)
            self.num += len(records)
            self.step_ += 1
            lw.append(self.log, records)


@pytest.fixture
def setup(tmp_path, fake_slack):
    fake_slack.epoch = T0  # Slack's clock agrees with the processes' (frozen) one
    run = Run(tmp_path / "runs")
    (tmp_path / "rules.yaml").write_text(RULES)
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        "sources: [{type: rundir, path: runs}]\nstore: sqlite:///state.db\n"
        "rules: [rules.yaml]\n"
        f"receivers:\n  - {{name: team-slack, slack: {{token: {TOKEN}, channel: '#alerts',"
        f" charts: true, api_url: '{fake_slack.api_url}'}}}}\n"
        "routes:\n  - receivers: [team-slack]\n    group_by: [run]\n")
    return run, config


def check(at: float, config: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", FROZEN_MAIN, str(at), "check", "--config",
                           str(config), "--json"], capture_output=True, text=True, timeout=120,
                          cwd=config.parent)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)["notifications"]


def killed_during(method: str, at: float, config: Path, slack: FakeSlack) -> None:
    """`check` at ``at``, SIGKILLed while Slack holds its first ``method`` request; then
    Slack serves that request (its effect happens, its answer goes nowhere)."""
    slack.hold(method)
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_MAIN, str(at), "check", "--config",
                             str(config), "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=config.parent)
    try:
        slack.wait_held(timeout=60)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9, err
    slack.release()


def posts(slack: FakeSlack) -> list:
    return slack.calls_to("chat.postMessage")


def shared_charts(slack: FakeSlack) -> list[str]:
    return sorted(u["filename"] for u in slack.uploads.values() if u.get("thread_ts"))


def assert_true_state(slack: FakeSlack, rules: tuple[str, ...]) -> None:
    """Every message that shows the alerts (all resolved now) shows each of them, once, as
    resolved: ✅ and no firing mark."""
    shown = [m for m in slack.messages.values() if m.get("blocks")]
    assert shown
    for message in shown:
        sections = [b for b in message["blocks"] if b["type"] == "section" and b.get("fields")]
        marks = {rule: [b["text"]["text"].split(" ", 1)[0] for b in sections
                        if {"type": "plain_text", "text": f"Rule: {rule}", "emoji": True}
                        in b["fields"]]
                 for rule in rules}
        text = json.dumps(message["blocks"], ensure_ascii=False)
        assert "🔴" not in text and "🟠" not in text, text[:300]
        for rule in rules:
            assert marks[rule] in ([], ["✅"]), (rule, sections)
        assert any(marks.values()), sections


def test_a_kill_during_a_chart_upload_uploads_each_chart_once(setup, fake_slack):
    """The post is recorded before its charts; the kill comes after Slack shared the first
    chart but before its answer: the next process finds it in the thread and uploads only
    the other, and posts nothing again."""
    run, config = setup
    run.rows(T0 + 10, 5)
    run.rows(T0 + 20, 3, **{"train/grad_norm": 50.0, "train/loss": 9.0})
    killed_during("files.completeUploadExternal", T0 + 60, config, fake_slack)
    [post] = posts(fake_slack)
    assert len(shared_charts(fake_slack)) == 1  # Slack shared it; the process never knew

    later = check(T0 + 60 + DEFAULT_LEASE + 1, config)
    assert (later["queued"], later["sent"], later["pending"], later["errors"]) == (0, 0, 0, [])
    assert len(posts(fake_slack)) == 1
    charts = shared_charts(fake_slack)
    assert len(charts) == 2 and len(set(charts)) == 2  # each chart once
    assert {u["thread_ts"] for u in fake_slack.uploads.values() if u.get("thread_ts")} == {
        post.ts}
    assert check(T0 + 60 + DEFAULT_LEASE + 60, config)["sent"] == 0
    assert len(shared_charts(fake_slack)) == 2


def test_a_kill_during_an_update_leaves_every_message_true_and_no_post_twice(
        setup, fake_slack):
    """Announced, shown again by a repeat in the thread, then resolved: the kill comes while
    Slack applies the first rewrite. The next process rewrites (again: the same content),
    looks for the resolve reply, finds none, posts it once."""
    run, config = setup
    run.rows(T0 + 10, 5)
    run.rows(T0 + 20, 3, **{"train/grad_norm": 50.0, "train/loss": 9.0})
    first = check(T0 + 60, config)
    assert first["sent"] == 1
    run.rows(T0 + 4 * 3600, 2, **{"train/grad_norm": 60.0, "train/loss": 9.5})
    repeat = check(T0 + 4 * 3600 + 60, config)  # the repeat interval (4h): into the thread
    assert repeat["sent"] == 1
    announcement, again = posts(fake_slack)
    assert again.thread_ts == announcement.ts

    run.rows(T0 + 5 * 3600, 5)  # calm: both alerts resolve
    killed_during("chat.update", T0 + 5 * 3600 + 60, config, fake_slack)
    assert len(posts(fake_slack)) == 2  # the resolve reply was not posted

    later = check(T0 + 5 * 3600 + 60 + DEFAULT_LEASE + 1, config)
    assert (later["queued"], later["sent"], later["pending"], later["errors"]) == (0, 1, 0, [])
    assert check(T0 + 5 * 3600 + 60 + DEFAULT_LEASE + 60, config)["sent"] == 0
    all_posts = posts(fake_slack)
    assert len(all_posts) == 3 and all_posts[2].thread_ts == announcement.ts
    outbox_ids = [p.metadata["event_payload"]["outbox_id"] for p in all_posts]
    assert len(set(outbox_ids)) == 3  # no post twice
    updated = {u.params["ts"] for u in fake_slack.calls_to("chat.update")}
    assert updated == {announcement.ts, again.ts}  # both messages that showed them firing
    assert_true_state(fake_slack, RULE_NAMES)


def test_a_kill_after_slack_took_the_resolve_reply_adopts_it(setup, fake_slack):
    """The kill comes after the rewrites, while Slack takes the resolve reply: the next
    process finds the reply in the thread by its outbox id and posts nothing."""
    run, config = setup
    run.rows(T0 + 10, 5)
    run.rows(T0 + 20, 3, **{"train/grad_norm": 50.0, "train/loss": 9.0})
    check(T0 + 60, config)
    run.rows(T0 + 3600, 5)
    fake_slack.epoch = T0 + 3600  # an hour on for Slack too
    killed_during("chat.postMessage", T0 + 3600 + 60, config, fake_slack)
    assert len(posts(fake_slack)) == 2
    later = check(T0 + 3600 + 60 + DEFAULT_LEASE + 1, config)
    assert (later["sent"], later["pending"]) == (1, 0)
    assert len(posts(fake_slack)) == 2
    assert len(fake_slack.calls_to("conversations.replies")) == 1
    assert_true_state(fake_slack, RULE_NAMES)
