"""Alerts the training code raises itself (``run.alert``), from a real SDK run in offline
mode: the run-directory reader keeps each alert record once, and the daemon tells each to
a fake Slack once — at its level's severity, a title repeated within its wait_duration not
again, one repeated after it again — with the hostile title escaped; a silence on the rule
mutes them; neither a later tick nor a restart tells one twice."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from fixtures.runmaker import CODE_ALERT_WAIT
from runwatch.daemon import Daemon
from runwatch.sources.rundir import RundirSource
from runwatch.sources.wandbfile import ALERT, LogReader
from runwatch.store.base import Matcher

HOSTILE = "<!channel> checkpoint\nfailed"
RULE = "training-code-alert"


def copy_run(tmp_path: Path, wandb_runs) -> tuple[Path, bytes]:
    """The code-alerts run copied under ``tmp_path/runs``, its log cut just before the
    alert raised at step 11 (as a live run's log would stand then); the rest of the log."""
    source = wandb_runs.runs["code_alerts"]
    target = tmp_path / "runs" / "wandb" / source.name
    shutil.copytree(source, target, symlinks=True)
    [log] = target.glob("*.wandb")
    offsets = [record[6] for record in LogReader(str(log), kinds=frozenset({ALERT}))]
    assert len(offsets) == 5
    whole = log.read_bytes()
    log.write_bytes(whole[:offsets[2]])
    return log, whole[offsets[2]:]


def told(fake_slack) -> list[tuple[str, str]]:
    """(severity word, summary) of every alert the posts showed, in order."""
    shown = []
    for call in fake_slack.calls_to("chat.postMessage"):
        word = None
        for block in call.blocks:
            if block["type"] == "section" and "fields" in block:
                word = block["text"]["text"].split("*")[1]
            elif block["type"] == "context" and word is not None:
                shown.append((word, block["elements"][0]["text"]))
                word = None
    return shown


def test_the_reader_keeps_each_raised_alert_once(wandb_runs, tmp_path):
    log, rest = copy_run(tmp_path, wandb_runs)
    source = RundirSource("rundir", [tmp_path / "runs"])
    first = source.poll({}, frozenset({"train/loss"}), 2e9)
    [snap] = first.snapshots
    assert [(a.title, a.level, a.step, a.wait) for a in snap.code_alerts] == [
        ("warmup done", "INFO", 5, 60.0), ("data loader slow", "WARN", 10, CODE_ALERT_WAIT)]
    assert snap.code_alerts[0].text == "lr at its peak"
    with log.open("ab") as out:  # the SDK writes the rest
        out.write(rest)
    second = source.poll(first.cursors, frozenset({"train/loss"}), 2e9 + 60)
    [snap] = second.snapshots
    assert [(a.title, a.level, a.step) for a in snap.code_alerts] == [
        ("data loader slow", "WARN", 11), ("data loader slow", "WARN", 13),
        (HOSTILE, "ERROR", 15)]
    assert snap.code_alerts[1].time - snap.code_alerts[0].time >= CODE_ALERT_WAIT
    assert snap.code_alerts[2].text == "disk <b>full</b> & <@U1>"
    assert source.poll(second.cursors, frozenset({"train/loss"}), 2e9 + 120).snapshots == ()


@pytest.fixture
def daemon_over(tmp_path, wandb_runs, fake_slack):
    """A daemon over the cut run, its clock a minute after the run's last word, posting to
    the fake Slack; ``grow()`` writes the rest of the log."""
    log, rest = copy_run(tmp_path, wandb_runs)
    config = tmp_path / "runwatch.yaml"
    config.write_text("sources: [{type: rundir, path: runs}]\nstore: sqlite:///state.db\n"
                      "receivers:\n  - name: team-slack\n    slack: {token: xoxb-1-2-codetoken,"
                      f" channel: '#a', api_url: '{fake_slack.api_url}'}}\n")
    seen = RundirSource("probe", [tmp_path / "runs"]).poll({}, frozenset(), 0.0).snapshots
    start = max(s.heartbeat or 0.0 for s in seen) + 60

    def grow() -> None:
        with log.open("ab") as out:
            out.write(rest)

    yield config, start, grow


def test_each_raised_alert_reaches_slack_once_escaped_at_its_severity(daemon_over,
                                                                      fake_slack):
    config, start, grow = daemon_over
    daemon = Daemon(config)
    try:
        with freeze_time(datetime.fromtimestamp(start, UTC)) as clock:
            daemon.tick_source("rundir")
            assert told(fake_slack) == [("WARNING", "data loader slow: batch wait at step 10"),
                                        ("INFO", "warmup done: lr at its peak")]
            grow()
            clock.tick(60)
            daemon.tick_source("rundir")  # step 11: within its wait; step 13: after it
            assert told(fake_slack)[2:] == [
                ("CRITICAL", "<!channel> checkpoint failed: disk <b>full</b> & <@U1>"),
                ("WARNING", "data loader slow: batch wait at step 13")]
            clock.tick(60)
            daemon.tick_source("rundir")
    finally:
        daemon.runtime.close()
        daemon.store.close()
    again = Daemon(config)  # a restart reads on from the cursor: nothing told twice
    try:
        with freeze_time(datetime.fromtimestamp(start + 300, UTC)):
            again.tick_source("rundir")
        stored = again.store.alerts(rule=RULE)
    finally:
        again.runtime.close()
        again.store.close()
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(told(fake_slack)) == 4 and len(posts) == 2
    for post in posts:  # untrusted text: never a mention, a link or markup in Slack's eyes
        marked = [post.text or ""] + [b["text"]["text"] for b in post.blocks
                                      if b.get("text", {}).get("type") == "mrkdwn"]
        assert not any("<!channel>" in t or "<@U1>" in t for t in marked)
    assert "&lt;!channel&gt;" in posts[1].text
    assert {(a.labels["title"], a.resolution) for a in stored} == {
        ("warmup done", "told once"), ("data loader slow", "told once"), (HOSTILE, "told once")}


def test_a_silence_on_the_rule_mutes_them(daemon_over, fake_slack):
    config, start, grow = daemon_over
    grow()
    daemon = Daemon(config)
    try:
        daemon.store.add_silence(matchers=[Matcher.parse(f"rule={RULE}")],
                                 ends_at=start + 3600, now=start - 60, created_by="ana",
                                 comment="we read them in the logs")
        with freeze_time(datetime.fromtimestamp(start, UTC)) as clock:
            daemon.tick_source("rundir")
            assert len(daemon.store.alerts(rule=RULE)) == 3  # judged, stored, not told
            clock.tick(3700)  # the silence has ended: what it muted stays untold
            daemon.tick_source("rundir")
    finally:
        daemon.runtime.close()
        daemon.store.close()
    assert fake_slack.calls_to("chat.postMessage") == []


def test_check_the_digest_and_the_pages_show_them(daemon_over, fake_slack, capsys):
    import json

    from runwatch.cli import main
    from runwatch.metrics import HttpServer, health_app

    config, start, grow = daemon_over
    grow()
    with freeze_time(datetime.fromtimestamp(start, UTC)):
        assert main(["check", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted((t["status"], t["severity"], t["summary"]) for t in shown["transitions"]
                  if t["rule"] == RULE) == [
        ("told", "critical", "<!channel> checkpoint\nfailed: disk <b>full</b> & <@U1>"),
        ("told", "info", "warmup done: lr at its peak"),
        ("told", "warning", "data loader slow: batch wait at step 13 (raised 2 times since"
                            " the last tick)")]
    with freeze_time(datetime.fromtimestamp(start + 3600, UTC)):
        assert main(["digest", "--config", str(config), "--dry-run", "--json"]) == 0
    digest = capsys.readouterr().out
    assert "data loader slow" in digest and RULE in digest

    daemon = Daemon(config)
    server = HttpServer("127.0.0.1", 0, health_app(daemon.metrics, daemon.ready,
                                                   pages=daemon.pages()))
    server.start()
    try:
        import urllib.request

        with freeze_time(datetime.fromtimestamp(start + 60, UTC)):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/v1/alerts") as r:
                alerts = json.loads(r.read())
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/alerts") as r:
                page = r.read().decode()
    finally:
        server.stop()
        daemon.runtime.close()
        daemon.store.close()
    assert sorted(a["labels"]["title"] for a in alerts["told"]) == [
        HOSTILE, "data loader slow", "warmup done"]
    assert "raised by the training code" in page and "&lt;!channel&gt;" in page


def test_a_raised_alert_s_time_the_titles_kept_and_online_runs(tmp_path):
    """An alert record has no time: it takes the log's (the newest row, stats record or
    the run's start before it); a title raised every step crowds out no other; an online
    run's alerts are W&B's to deliver."""
    from fixtures import logwriter as lw

    t0 = 1_796_000_000.0
    records = [lw.run(1, run_id="ab12cd34", name="r", start=t0),
               lw.alert(2, "started", level="INFO")]  # before any row: the run's start
    num = 3
    for s in range(3):
        records += lw.step(num, s, {"train/loss": 1.0}, time=t0 + 10 + s)
        num += 3
    records += [lw.stats(num, time=t0 + 600), lw.alert(num + 1, "hung?")]  # rows stopped
    num += 2
    for _ in range(2000):  # a loop raising one title every iteration
        records.append(lw.alert(num, "slow", wait=30))
        num += 1
    records.append(lw.alert(num, "loss is NaN", level="ERROR"))
    found = {}
    for prefix in ("offline-run", "run"):
        log = tmp_path / prefix / "wandb" / f"{prefix}-20261203_000000-ab12cd34" / (
            "run-ab12cd34.wandb")
        log.parent.mkdir(parents=True)
        lw.write(log, records)
        [snap] = RundirSource(prefix, [tmp_path / prefix]).poll(
            {}, frozenset({"train/loss"}), t0 + 700).snapshots
        found[prefix] = snap.code_alerts
    raised = found["offline-run"]
    assert [(a.title, a.time, a.step) for a in raised[:2]] == [
        ("started", t0, None), ("hung?", t0 + 600, 2)]
    titles = [a.title for a in raised]
    assert titles.count("slow") == 10 and titles[-1] == "loss is NaN"
    assert found["run"] == ()
