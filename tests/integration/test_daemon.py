"""The daemon in-process: the same cycle as `runwatch check`, driven tick by tick with
freezegun, against run directories and the fake Slack server; reload, readiness, metrics,
cron weekdays, and secrets kept out of every log line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from fixtures import logwriter as lw
from runwatch import logs
from runwatch.daemon import Daemon
from runwatch.metrics import HttpServer, health_app
from runwatch.model import AlertStatus
from runwatch.schedule import cron_trigger

START = 1_800_000_000.0
TOKEN = "xoxb-1111-2222-daemontokensecret"


def at(seconds: float):
    return freeze_time(datetime.fromtimestamp(seconds, UTC))


class LiveRun:
    """A run directory whose training loop we drive record by record."""

    def __init__(self, root: Path, run_id: str = "live0001", name: str = "llama-7b"):
        run = root / "wandb" / f"offline-run-20260101_000000-{run_id}"
        run.mkdir(parents=True)
        self.log = run / f"run-{run_id}.wandb"
        lw.write(self.log, [lw.run(1, run_id=run_id, name=name, project="pretrain",
                                   start=START)])
        self.num = 2
        self.step_ = 0

    def step(self, t: float, **values: float) -> None:
        records = lw.step(self.num, self.step_, {"train/loss": 2.0, "train/grad_norm": 1.0,
                                                  **values}, time=t)
        self.num += len(records)
        self.step_ += 1
        lw.append(self.log, records)


def write_config(tmp_path: Path, slack_url: str, *, rules: str | None = None,
                 extra: str = "") -> Path:
    rules_line = ""
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(rules)
        rules_line = "rules: [rules.yaml]\n"
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        "sources:\n"
        f"  - {{type: rundir, path: {tmp_path / 'runs'}, interval: 60s}}\n"
        f"store: sqlite:///state.db\n{rules_line}"
        "receivers:\n"
        f"  - name: team-slack\n    slack: {{token: {TOKEN}, channel: '#alerts',"
        f" api_url: '{slack_url}'}}\n"
        "repeat_interval: 1h\n"
        "inhibit:\n"
        "  - {source: {rule: grad-norm-exploding}, target: {rule: grad-norm-spiky},"
        " equal: [run]}\n" + extra)
    return config


RULES = """rules:
  - {name: grad-norm-exploding, kind: threshold, metric: grad_norm, op: ">", value: 10,
     severity: critical}
  - {name: grad-norm-spiky, kind: threshold, metric: grad_norm, op: ">", value: 5,
     severity: warning}
"""


@pytest.fixture
def daemon(tmp_path, fake_slack):
    run = LiveRun(tmp_path / "runs")
    for i in range(5):
        run.step(START + 10 * i)
    d = Daemon(write_config(tmp_path, fake_slack.api_url, rules=RULES))
    d.live_run = run  # type: ignore[attr-defined]
    yield d
    d.runtime.close()
    d.store.close()


def get(server: HttpServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sample's value; None when the scrape has no such series (so `== 0` means 0)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_an_alert_arrives_once_repeats_after_the_interval_and_resolves_once(daemon,
                                                                           fake_slack):
    run = daemon.live_run
    with at(START + 60):
        daemon.tick_source("rundir")
    assert fake_slack.calls_to("chat.postMessage") == []

    run.step(START + 70, **{"train/grad_norm": 50.0})
    with at(START + 75):
        daemon.tick_source("rundir")
    [first] = fake_slack.calls_to("chat.postMessage")
    assert "grad-norm-exploding" in json.dumps(first.blocks)
    assert "grad-norm-spiky" not in json.dumps(first.blocks)  # inhibited
    firing = {sev: daemon.metrics.registry.get_sample_value(
        "runwatch_alerts", {"state": "firing", "severity": sev}) for sev in ("critical", "warning")}
    assert firing == {"critical": 1, "warning": 1}  # read from the store when scraped

    for minutes in (5, 30, 59):  # no new points: the alert keeps firing, quietly
        run.step(START + 75 + minutes * 60 - 5, **{"train/grad_norm": 40.0})
        with at(START + 75 + minutes * 60):
            daemon.tick_source("rundir")
    assert len(fake_slack.calls_to("chat.postMessage")) == 1

    run.step(START + 75 + 3600 + 55, **{"train/grad_norm": 40.0})
    with at(START + 75 + 3600 + 60):  # the repeat interval has elapsed
        daemon.tick_source("rundir")
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 2 and posts[1].thread_ts == first.ts

    run.step(START + 75 + 3600 + 100, **{"train/grad_norm": 1.0})
    with at(START + 75 + 3600 + 120):
        daemon.tick_source("rundir")
        daemon.tick_source("rundir")  # nothing twice
    # The announcement and the repeat both showed it firing: each is rewritten, once.
    updated = [u.params["ts"] for u in fake_slack.calls_to("chat.update")]
    assert sorted(updated) == sorted([first.ts, posts[1].ts])
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 3 and posts[2].thread_ts == first.ts

    server = HttpServer("127.0.0.1", 0, health_app(daemon.metrics, daemon.ready))
    server.start()
    try:
        with at(START + 75 + 3600 + 130):
            assert get(server, "/healthz") == (200, "ok\n")
            assert get(server, "/readyz") == (200, "ready\n")
        with at(START + 75 + 3600 + 120 + 4 * 60):  # three intervals without a tick
            daemon.leader.renew()  # (the lease heartbeat's, on its thread)
            status, body = get(server, "/readyz")
            assert status == 503 and "rundir" in body
        status, text = get(server, "/metrics")
    finally:
        server.stop()
    assert status == 200
    assert metric(text, "runwatch_ticks_total", source="rundir", outcome="ok") == 8
    assert metric(text, "runwatch_notifications_total", receiver="team-slack",
                  outcome="sent") == 3
    assert metric(text, "runwatch_runs_watched", source="rundir") == 1
    assert metric(text, "runwatch_outbox_depth") == 0
    assert metric(text, "runwatch_alerts", state="firing", severity="critical") == 0
    assert metric(text, "runwatch_tick_duration_seconds_count", source="rundir") == 8
    saved = daemon.store.load_status()["rundir"]
    assert saved["ok"] and saved["runs"] == 1


def test_a_broken_rule_file_on_reload_keeps_the_running_rules(daemon, tmp_path):
    before = [r.name for r in daemon.runtime.rule_set.rules]
    (tmp_path / "rules.yaml").write_text(RULES + "  - {name: oops, kind: thresold}\n")
    assert daemon.config_changed()
    assert daemon.reload() is False
    assert [r.name for r in daemon.runtime.rule_set.rules] == before
    assert not daemon.config_changed()  # judged once, not again every second

    (tmp_path / "rules.yaml").write_text(
        RULES + "  - {name: crashed, kind: state, severity: critical}\n")
    old_notifier = daemon.runtime.notifiers["team-slack"]
    assert daemon.reload() is True
    assert [r.name for r in daemon.runtime.rule_set.rules] == [*before, "crashed"]
    assert daemon.runtime.notifiers["team-slack"] is old_notifier  # unchanged: kept
    reloads = {s.labels["outcome"]: s.value for s in
               daemon.metrics.reloads.collect()[0].samples if s.name.endswith("_total")}
    assert reloads == {"failure": 1.0, "success": 1.0}


def test_a_configmap_symlink_swap_is_seen_as_a_change(tmp_path, fake_slack):
    """Kubernetes updates a mounted ConfigMap by pointing ``..data`` at a new directory."""
    mount = tmp_path / "etc"
    first = mount / "..2026_11_23_08_00_00.1"
    first.mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    body = write_config(tmp_path, fake_slack.api_url).read_text()
    (first / "runwatch.yaml").write_text(body)
    (mount / "..data").symlink_to(first.name)
    (mount / "runwatch.yaml").symlink_to("..data/runwatch.yaml")
    d = Daemon(mount / "runwatch.yaml")
    try:
        assert not d.config_changed()
        second = mount / "..2026_11_23_08_05_00.2"
        second.mkdir()
        (second / "runwatch.yaml").write_text(body.replace("repeat_interval: 1h",
                                                           "repeat_interval: 2h"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap kubelet does
        assert d.config_changed()
        assert d.reload() and d.config.repeat_interval == 7200
    finally:
        d.store.close()


@pytest.mark.parametrize(("cron", "days"), [
    ("0 8 * * 1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0 8 * * 0", ["Sun"]),
    ("0 8 * * 7", ["Sun"]),
    ("0 8 * * sat,sun", ["Sat", "Sun"]),
    ("0 8 * * */2", ["Sun", "Tue", "Thu", "Sat"]),
    ("0 8 * * 5-0", ["Fri", "Sat", "Sun"]),
    ("0 8 * * *", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
])
def test_digest_schedules_keep_crontab_weekdays(cron, days):
    trigger = cron_trigger(cron, "UTC")
    when = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
    seen = set()
    for _ in range(7):
        when = trigger.get_next_fire_time(None, when)
        if when is None or when > datetime(2026, 11, 30, tzinfo=UTC):
            break
        assert (when.hour, when.minute) == (8, 0)
        seen.add(when.strftime("%a"))
        when = when.replace(minute=1)
    assert sorted(seen) == sorted(days)


def test_no_secret_reaches_a_log_line(tmp_path, fake_slack):
    """Every secret kind the config holds, each used where its receiver fails loudly."""
    secrets = {
        "slack": TOKEN,
        "webhook_url": "http://127.0.0.1:9/services/T0/B0/webhookurlsecretpart",
        "password": "smtp-password-secret",
        "bearer": "bearer-token-secret-123",
        "hmac": "hmac-secret-0123456789",
        "api_key": "w" * 40,
    }
    (tmp_path / "runs").mkdir()
    LiveRun(tmp_path / "runs").step(START, **{"train/grad_norm": 99.0})
    (tmp_path / "pw").write_text(secrets["password"] + "\n")
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        "sources:\n"
        f"  - {{type: rundir, path: {tmp_path / 'runs'}}}\n"
        "  - {type: wandb, entity: team, projects: [p], api_key: " + secrets["api_key"]
        + ", base_url: 'http://127.0.0.1:9', request_retries: 1, request_timeout: 5s}\n"
        "store: sqlite:///state.db\n"
        "receivers:\n"
        f"  - {{name: bot, slack: {{token: {secrets['slack']}, channel: '#a',"
        f" api_url: '{fake_slack.api_url}'}}}}\n"
        f"  - {{name: hook, slack: {{webhook_url: '{secrets['webhook_url']}'}}}}\n"
        "  - {name: mail, email: {smtp: '127.0.0.1:9', username: u,"
        f" password_file: {tmp_path / 'pw'}, from: a@example.com, to: [b@example.com]}}}}\n"
        "  - {name: web, webhook: {url: 'http://127.0.0.1:9/hook', bearer_token: "
        f"{secrets['bearer']}, hmac_secret: {secrets['hmac']}}}}}\n")
    fake_slack.fail("chat.postMessage", error="invalid_auth")
    out = io.StringIO()
    logs.configure("json", stream=out)
    try:
        d = Daemon(config)
        try:
            with at(START + 30):
                d.tick_source("rundir")
                d.tick_source("wandb:team")
                d.flush_outbox()
            import logging
            logging.getLogger("runwatch.test").error("leak attempt: %s", " ".join(secrets.values()))
        finally:
            d.runtime.close()
            d.store.close()
    finally:
        logs.configure("console", stream=io.StringIO())
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any("invalid_auth" in json.dumps(x) for x in lines)  # the failures were logged
    assert any("W&B" in json.dumps(x) for x in lines)
    assert "leak attempt: ***" in text
    for kind, secret in secrets.items():
        assert secret not in text, kind


def test_a_taken_port_is_one_line_and_exit_2(tmp_path, fake_slack, capsys):
    import socket

    from runwatch.cli import main

    (tmp_path / "runs").mkdir()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = write_config(tmp_path, fake_slack.api_url,
                          extra=f"http: {{listen: '127.0.0.1:{port}'}}\n")
    try:
        assert main(["run", "--config", str(config), "--log-format", "json"]) == 2
    finally:
        taken.close()
        logs.configure("console", stream=io.StringIO())
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()
              if "cannot start" in x]
    assert line["detail"] == (f"{config}: http.listen 127.0.0.1:{port}: Address already in"
                              " use; free the port or change http.listen")


def test_removing_a_source_resolves_what_fired_on_its_runs(daemon, tmp_path):
    run = daemon.live_run
    run.step(START + 70, **{"train/grad_norm": 50.0})
    with at(START + 75):
        daemon.tick_source("rundir")
    assert {a.rule for a in daemon.store.alerts(status=AlertStatus.FIRING)} == {
        "grad-norm-exploding", "grad-norm-spiky"}
    other = tmp_path / "elsewhere"
    other.mkdir()
    config = tmp_path / "runwatch.yaml"
    config.write_text(config.read_text().replace(
        f"{{type: rundir, path: {tmp_path / 'runs'}, interval: 60s}}",
        f"{{type: rundir, path: {other}, name: other}}"))
    with at(START + 90):
        assert daemon.reload()
    assert daemon.store.alerts(status=AlertStatus.FIRING) == []
    assert {a.resolved_at for a in daemon.store.alerts(status=AlertStatus.RESOLVED)} == {
        START + 90}


def test_a_rate_limit_defers_in_the_outbox_and_the_worker_keeps_ticking(daemon, fake_slack):
    run = daemon.live_run
    fake_slack.fail(status=429, error="ratelimited", retry_after=120, times=100)
    run.step(START + 70, **{"train/grad_norm": 50.0})
    with at(START + 75):
        assert daemon.tick_source("rundir") is not None
    assert len(fake_slack.calls_to("chat.postMessage", ok=None)) == 1  # asked once, no sleep
    [entry] = daemon.store.outbox()
    assert entry.next_attempt_at == START + 75 + 120 and "ratelimited" in entry.last_error
    for seconds in (60, 119):  # ticks go on; the deferred message waits its Retry-After
        run.step(START + 75 + seconds - 5, **{"train/grad_norm": 50.0})
        with at(START + 75 + seconds):
            assert daemon.tick_source("rundir") is not None
    assert len(fake_slack.calls_to("chat.postMessage", ok=None)) == 1
    fake_slack.reset()
    with at(START + 75 + 121):
        daemon.flush_outbox()
    assert len(fake_slack.calls_to("chat.postMessage")) == 1 and daemon.store.outbox() == []


def test_a_token_without_the_history_scope_is_one_warning_at_start_up(daemon, fake_slack):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        daemon.check_receivers()
    assert [e for e in logs if e["log_level"] == "warning"] == []
    fake_slack.scopes -= {"channels:history", "groups:history"}
    with capture_logs() as logs:
        daemon.check_receivers()
    [warned] = [e for e in logs if e["log_level"] == "warning"]
    assert warned["receiver"] == "team-slack" and "at least once" in warned["detail"]


@contextlib.contextmanager
def held_worker(daemon, label: str) -> Iterator[list[float]]:
    """``daemon``'s worker held by the job ``label`` (blocked on an event, not a sleep)
    until the block ends; yields the daemon's clock, to move on by hand."""
    now = [START]
    daemon.clock = lambda: now[0]
    started, release = threading.Event(), threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(60)

    worker = threading.Thread(target=daemon._job, args=[label, blocked])
    worker.start()
    try:
        assert started.wait(10)
        yield now
    finally:
        release.set()
        worker.join(10)


def test_a_stuck_worker_turns_healthz_503_and_stops_the_watchdog(daemon):
    """A job that holds the worker beyond the bound (here: blocked on an event, the clock
    moved on by hand): /healthz 503 naming it, one log line per stall, no watchdog ping;
    when it moves again, all is well."""
    from structlog.testing import capture_logs

    daemon.clock = lambda: START
    daemon.tick_source("rundir")  # the first tick is done: later ones are bounded
    assert daemon.stuck_after() == 600  # the floor: the source ticks every 60 s
    server = HttpServer("127.0.0.1", 0, health_app(daemon.metrics, daemon.ready, daemon.alive))
    server.start()
    try:
        with held_worker(daemon, "tick rundir") as now:
            assert get(server, "/healthz") == (200, "ok\n")
            now[0] += 600
            assert get(server, "/healthz")[0] == 200  # at the bound: still fine
            now[0] += 1
            code, body = get(server, "/healthz")
            assert code == 503
            assert body == "worker stuck: tick rundir running for 10m1s (more than 10m)\n"
            with capture_logs() as logs_seen:
                assert daemon._watch_worker() is False  # no ping
                now[0] += 30
                assert daemon._watch_worker() is False
            [said] = [e for e in logs_seen if e["log_level"] == "error"]
            assert (said["job"], said["running_for"]) == ("tick rundir", 601)
    finally:
        server.stop()
    assert daemon.alive() == (True, "ok") and daemon._watch_worker() is True


def test_a_reload_of_a_file_that_is_not_text_keeps_the_running_config(daemon, tmp_path):
    config = tmp_path / "runwatch.yaml"
    good = config.read_text()
    config.write_bytes(b"\xff\xfe not yaml at all \x00")
    assert daemon.reload() is False
    assert daemon.config.sources[0].name == "rundir"
    config.write_text(good)
    assert daemon.reload() is True


def test_a_run_that_went_silent_is_crashed_after_dead_after_and_told_once(tmp_path, fake_slack):
    run = LiveRun(tmp_path / "runs")
    for i in range(5):
        run.step(START + 10 * i)
    rules = ("rules:\n"
             "  - {name: run-stalled, kind: heartbeat, older_than: 30m, severity: critical}\n"
             "  - {name: run-crashed, kind: state, states: [crashed], severity: critical}\n")
    d = Daemon(write_config(tmp_path, fake_slack.api_url, rules=rules))
    last = START + 40
    try:
        with at(last + 60):
            d.tick_source("rundir")
        with at(last + 1800 + 60):
            d.tick_source("rundir")
        assert ["run-stalled" in (p.text or "") for p in fake_slack.calls_to("chat.postMessage")
                ] == [True]
        with at(last + 7200 + 30):  # no record for 2h: the run is taken as crashed
            d.tick_source("rundir")
        [stalled] = [a for a in d.store.alerts(status=AlertStatus.RESOLVED)
                     if a.rule == "run-stalled"]
        assert stalled.resolution == "run ended: crashed (no record for 2h)"
        [crashed] = d.store.alerts(status=AlertStatus.FIRING)
        assert crashed.rule == "run-crashed"
        told = len(fake_slack.calls_to("chat.postMessage"))
        assert told == 3  # the crash, and the stall's resolution in its thread
        for hours in (1, 5, 24):  # never repeated: the run has ended
            with at(last + 7200 + hours * 3600):
                d.tick_source("rundir")
        assert len(fake_slack.calls_to("chat.postMessage")) == told
    finally:
        d.runtime.close()
        d.store.close()


def test_a_first_tick_may_take_long_and_a_stopped_scheduler_is_not_alive(daemon):
    """A first tick reads every run whole: not stuck, however long. A worker on which no
    job has finished for the bound (the scheduler died) is not alive either."""
    with held_worker(daemon, "tick rundir") as now:
        now[0] += 3 * 3600
        ok, detail = daemon.alive()
        assert ok and detail == "ok: tick rundir is the first, running for 3h"
    assert daemon.alive() == (True, "ok")
    now[0] += daemon.stuck_after() + 1
    assert daemon.alive() == (False, "worker idle: no job has finished for 10m1s")
