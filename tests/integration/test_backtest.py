"""`runwatch backtest` over run directories the real SDK wrote: each alert fires at the
step where its condition first held, within one interval of that point's time; what
resolves, resolves where it should; a healthy run costs nothing; notifications follow
repeat_interval and send_resolved."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from runwatch.backtest import Label, Options, backtest_run, score, summarize
from runwatch.cli import main
from runwatch.config import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.model import RunState
from runwatch.ruletests import RunSpec, synthetic_run
from runwatch.sources.rundir_reports import read_run
from runwatch.tick import wanted_keys

pytestmark = pytest.mark.sdk
INTERVAL = 0.05  # the fixture runs log a step every few milliseconds


def backtest(capsys, *runs, interval=INTERVAL, extra=()):
    code = main(["backtest", "--interval", f"{interval}s", "--delay", "0s", "--json",
                 *extra, *map(str, runs)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def first_step(path, key, condition):
    """The step and time (since the first row) of the first point where ``condition``."""
    rules = load_rules([default_rules_path()], path)
    snapshot, _ = read_run(path, wanted_keys(rules.rules, rules.aliases))
    series = snapshot.history[key]
    start = snapshot.history["_timestamp"].times[0]
    for step, when, value in zip(series.steps, series.times, series.values, strict=True):
        if condition(value):
            return step, when - start
    raise AssertionError("no such point")


def test_alerts_fire_at_their_step_within_one_interval(wandb_runs, capsys):
    exploding, nan_loss = wandb_runs.runs["exploding"], wandb_runs.runs["nan_loss"]
    report = backtest(capsys, exploding, nan_loss)
    by_run = {r["name"]: {a["rule"]: a for a in r["alerts"]} for r in report["runs"]}
    cases = [
        ("exploding-grads", "grad-norm-exploding", exploding, "train/grad_norm",
         lambda v: v > 10),
        ("exploding-grads", "grad-norm-spiky", exploding, "train/grad_norm", lambda v: v > 5),
        ("nan-loss", "loss-nonfinite", nan_loss, "train/loss", lambda v: not math.isfinite(v)),
    ]
    for name, rule, path, key, condition in cases:
        step, when = first_step(path, key, condition)
        alert = by_run[name][rule]
        assert alert["fired_step"] == step, (rule, alert)
        assert when <= alert["fired_at"] <= when + INTERVAL + 1e-6, (rule, alert, when)
        # These runs finished right after: the alert resolves with the run, and costs its
        # firing message and its resolved one — but the spiky warning is muted while the
        # exploding alert fires on its run (the shipped inhibit rules), as in the daemon:
        # told only if it fired a tick before the exploding one did.
        assert alert["resolution"] == "run ended: finished"
        told_first = rule == "grad-norm-spiky" and alert["fired_at"] < by_run[name][
            "grad-norm-exploding"]["fired_at"]
        muted = rule == "grad-norm-spiky" and not told_first
        # Fired and resolved in one tick (the run ended within it): one message says both.
        flash = alert["fired_at"] == alert["resolved_at"]
        assert alert["notifications"] == (0 if muted else 1 if flash else 2), rule
    assert set(by_run["exploding-grads"]) == {"grad-norm-exploding", "grad-norm-spiky"}


def test_a_healthy_run_costs_nothing(wandb_runs, capsys):
    report = backtest(capsys, wandb_runs.runs["healthy"])
    (run,) = report["runs"]
    assert run["alerts"] == [] and run["notifications"] == 0 and run["steps"] >= 50
    assert all(rule["notifications"] == 0 for rule in report["rules"])


def test_a_crash_and_a_silent_death(wandb_runs, capsys):
    report = backtest(capsys, wandb_runs.runs["crashed"], wandb_runs.runs["killed"],
                      interval=1, extra=("--tail", "40m"))
    crashed, killed = ({a["rule"]: a for a in r["alerts"]} for r in report["runs"])
    assert set(crashed) == {"run-crashed"}
    assert crashed["run-crashed"]["resolved_at"] is None  # a state rule keeps firing
    assert crashed["run-crashed"]["notifications"] == 1
    assert set(killed) == {"run-slow", "run-stalled"}  # not progress-stalled: it is dead
    last = report["runs"][1]["hours"] * 3600  # its last record, since its first row
    for rule, older_than in (("run-slow", 600), ("run-stalled", 1800)):
        assert last + older_than < killed[rule]["fired_at"] <= last + older_than + 1, rule


def test_the_summary_ranks_the_noisy_rules(wandb_runs, capsys):
    report = backtest(capsys, wandb_runs.runs["exploding"], wandb_runs.runs["healthy"])
    ranked = [r["rule"] for r in report["rules"]]
    assert ranked[:2] == ["grad-norm-exploding", "grad-norm-spiky"]
    top = report["rules"][0]
    hours = sum(r["hours"] for r in report["runs"])
    assert top["runs_fired"] == 1 and top["runs"] == 2 and top["alerts"] == 1
    assert top["notifications_per_100_run_hours"] == pytest.approx(
        100 * top["notifications"] / hours, rel=1e-3)


def test_reminders_follow_repeat_interval_and_send_resolved():
    rules = load_rules([default_rules_path()], Path(".")).rules
    run = synthetic_run(RunSpec.model_validate({
        "interval": "1m", "series": {"train/grad_norm": "1x10 50x540 1x10"}}))
    aliases = {"grad_norm": ("train/grad_norm",)}
    result = backtest_run(run, rules, aliases, Options(interval=60))
    alert = next(e for e in result.episodes if e.rule == "grad-norm-exploding")
    # firing for 9 h: the message, reminders at 4 h and 8 h, the resolved message
    assert alert.resolved_at is not None and 9 * 3600 - 120 < alert.resolved_at - (
        alert.fired_at) <= 9 * 3600 + 60
    assert alert.notifications == 4
    quiet = backtest_run(run, rules, aliases,
                         Options(interval=60, send_resolved=False, repeat_interval=math.inf))
    assert next(e for e in quiet.episodes if e.rule == "grad-norm-exploding").notifications == 1
    assert summarize([result], rules)[0].rule in ("grad-norm-exploding", "grad-norm-spiky")


@pytest.mark.parametrize(("argv", "message"), [
    (["/no/such/run"], "/no/such/run: not a wandb run directory"),
    (["--interval", "soon", "."], "invalid duration 'soon'"),
    (["--interval", "0s", "."], "--interval 0s: must be more than zero"),
])
def test_bad_arguments_are_one_line(capsys, argv, message):
    assert main(["backtest", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_labelled_runs_score_each_rule():
    rules = load_rules([default_rules_path()], Path(".")).rules
    aliases = {"grad_norm": ("train/grad_norm",), "loss": ("train/loss",)}
    bad = synthetic_run(RunSpec.model_validate({
        "id": "bad1", "series": {"train/grad_norm": "1x100 50x5 1x100"}}))
    good = synthetic_run(RunSpec.model_validate({
        "id": "good1", "series": {"train/grad_norm": "1x30 12x2 1x200"}}))  # a false alarm
    bad, good = (dataclasses.replace(run, delay=15) for run in (bad, good))  # seen 15 s late
    options = Options(interval=60)
    results = [backtest_run(run, rules, aliases, options) for run in (bad, good)]
    scores = {s.rule: s for s in score(results, [Label.parse("run=bad1:bad@100"),
                                                 Label.parse("run=good1:good")], rules)}
    exploding = scores["grad-norm-exploding"]
    assert (exploding.bad_runs, exploding.detected, exploding.missed) == (1, 1, 0)
    assert exploding.false_alerts == 1
    hours = sum(r.hours for r in results)
    assert exploding.false_per_100_run_hours == pytest.approx(100 / hours)
    # the bad point is logged at 1000 s and seen 15 s later: the next tick (1020 s) fires
    assert 15 <= exploding.median_time_to_detect <= 15 + 60
    vanishing = scores["grad-norm-vanishing"]
    assert (vanishing.detected, vanishing.missed, vanishing.false_alerts) == (0, 1, 0)
    assert vanishing.median_time_to_detect is None
    ranked = list(scores.values())  # most detections first, then the fewest false alerts
    assert ranked == sorted(ranked, key=lambda s: (-s.detected, s.false_per_100_run_hours))


@pytest.mark.parametrize(("label", "message"), [
    ("run=x:bad", "invalid label 'run=x:bad'"),
    ("x=bad@3", "invalid label 'x=bad@3'"),
])
def test_bad_labels_are_refused(label, message):
    with pytest.raises(ValueError, match=message):
        Label.parse(label)


def test_a_label_for_a_run_not_replayed_is_one_line(wandb_runs, capsys):
    code = main(["backtest", "--label", "run=nosuch:good", str(wandb_runs.runs["healthy"])])
    assert code == 2
    assert "label 'nosuch': no such run among those replayed" in capsys.readouterr().err


def test_a_long_replay_reports_its_progress():
    rules = load_rules([default_rules_path()], Path(".")).rules
    run = synthetic_run(RunSpec.model_validate({
        "interval": "1m", "series": {"train/loss": "2-0.001x600"},
        "end": {"at": "10h", "state": "finished"}}))
    told: list[tuple[float, float]] = []
    result = backtest_run(run, rules, {}, Options(interval=60),
                          progress=lambda done, total: told.append((done, total)))
    assert len(told) == result.ticks // 100 >= 5
    assert [done for done, _ in told] == sorted(done for done, _ in told)
    assert all(done <= total == told[0][1] for done, total in told)


def test_a_run_name_is_shown_as_text_not_markup(tmp_path, capsys):
    from fixtures import logwriter as lw

    run_dir = tmp_path / "offline-run-20260101_000000-mark0001"
    run_dir.mkdir()
    payloads = [lw.run(1, run_id="mark0001", name="[/]evil [bold]x")]
    for i in range(5):
        payloads += lw.step(2 + 3 * i, i, {"train/loss": 1.0}, time=1_800_000_000.0 + i)
    lw.write(run_dir / "run-mark0001.wandb", payloads)
    assert main(["backtest", str(run_dir)]) == 0
    assert "[/]evil [bold]x" in capsys.readouterr().out


def _daemon_cycle(run, rules, aliases, options):
    """The replay as the daemon does it, every tick: ``run_tick`` over a source of the run
    into a store, then the whole notification pipeline (``notify_after_tick``) into
    receivers that keep what they are sent."""
    from runwatch.backtest import Tally
    from runwatch.notify.pipeline import notify_after_tick
    from runwatch.replay import ReplaySource
    from runwatch.store.memory import MemoryStore
    from runwatch.tick import run_tick

    source, store, sent = ReplaySource([run]), MemoryStore(), []
    receivers = {r.name: Tally(r.name, sent) for r in options.config.receivers}
    start = run.first_time + run.delay
    told = []
    for tick in range(1, 10_000):
        now = start + tick * options.interval
        report = run_tick(sources=[source], rules=rules, aliases=aliases, store=store, now=now)
        before = len(sent)
        notify_after_tick(store, options.config, receivers, now)
        told += [(round(now - run.first_time), m.receiver, sorted(a.rule for a in m.firing),
                  sorted(a.rule for a in m.resolved)) for m in sent[before:]]
        if source.all_ended and not store.outbox(include_failed=False) and not (
                report.transitions):
            break
    return told


def test_notifications_are_the_daemon_s_own_pipeline(tmp_path):
    """What a backtest counts is what the daemon's cycle sends, message for message, with
    routes, grouping by run, group_wait, a repeat interval, inhibit rules and two receivers
    (the slow pace of one route's alerts is told once per group)."""
    from runwatch.config import Config

    config = Config.model_validate({
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "slack", "webhook": {"url": "https://example.com/s"}},
                      {"name": "mail", "webhook": {"url": "https://example.com/m"}}],
        "routes": [{"match": {"severity": "critical"}, "receivers": ["slack", "mail"],
                    "group_by": ["run"], "group_wait": "3m", "repeat_interval": "1h"},
                   {"receivers": ["slack"], "send_resolved": False}],
    }, context={"base_dir": tmp_path})
    rules = load_rules([default_rules_path()], Path(".")).rules
    aliases = {"grad_norm": ("train/grad_norm",), "loss": ("train/loss",)}
    run = synthetic_run(RunSpec.model_validate({
        "interval": "1m",
        "series": {"train/grad_norm": "1x30 7x20 50x200 1x30 6x10 1x20",
                   "train/loss": "2x150 NaN 2x159"},
        "end": {"at": "320m", "state": "crashed"}}))
    options = Options(interval=60, config=config)
    result = backtest_run(run, rules, aliases, options)

    told = sorted((round(m.at), m.receiver, sorted(m.firing), sorted(m.resolved))
                  for m in result.messages)
    assert told == sorted(_daemon_cycle(run, rules, aliases, options))
    assert result.notifications == len(told) >= 6
    assert {receiver for _, receiver, _, _ in told} == {"slack", "mail"}
    crashed = [e for e in result.episodes if e.rule == "run-crashed"]
    assert crashed and crashed[0].notifications >= 2  # both receivers of its route


KEY = "k" * 40


def _comparable(run):
    """What a report says of a run, apart from where it was read."""
    return {"steps": run["steps"], "notifications": run["notifications"],
            "alerts": [{k: a[k] for k in ("rule", "fired_step", "resolution", "notifications")}
                       for a in run["alerts"]]}


def test_the_same_backtest_through_w_and_b_gives_the_same_report(wandb_server, wandb_runs,
                                                                  capsys, monkeypatch):
    """The SDK's run directories, loaded into the fake W&B server: a backtest of the W&B
    runs (each read once, in pages) reports what the backtest of the directories does;
    --project with --state and --limit picks the project's runs."""
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    scenarios = ("exploding", "nan_loss", "healthy")
    paths = [wandb_server.load_rundir(wandb_runs.runs[s], entity="team", project="proj")
             for s in scenarios]
    local = backtest(capsys, *(wandb_runs.runs[s] for s in scenarios))
    before = len(wandb_server.requests_of("RunwatchHistory"))
    remote = backtest(capsys, *paths)
    assert [_comparable(r) for r in remote["runs"]] == [_comparable(r) for r in local["runs"]]
    assert [r["run"] for r in remote["runs"]] == paths
    assert [(r["rule"], r["alerts"], r["notifications"]) for r in remote["rules"]] == [
        (r["rule"], r["alerts"], r["notifications"]) for r in local["rules"]]
    # One history request per run (each is under one page), every row read.
    assert len(wandb_server.requests_of("RunwatchHistory")) - before == len(scenarios)
    assert all(r["steps"] >= 20 for r in remote["runs"])

    picked = backtest(capsys, "--project", "team/proj", "--state", "finished", "--limit", "2")
    assert len(picked["runs"]) == 2 and set(r["run"] for r in picked["runs"]) <= set(paths)


def _read_whole(server, run_id, rows, *, page, pages_per_request):
    """A synthetic W&B run of ``rows`` rows read whole: its history, and the progress told."""
    from runwatch.sources.wandb_client import WandbClient
    from runwatch.sources.wandb_reports import read_whole, run_node

    path = server.add_synthetic_run("team", "p", run_id, rows=rows,
                                    created_at=1_795_420_800.0, keys=("loss",))
    client = WandbClient(base_url=server.url, api_key=KEY, timeout=20.0, retry_max=1)
    told = []
    try:
        node = run_node(client, entity="team", project="p", run_id=run_id, source="wandb",
                        app_url="https://wandb.example")
        read = read_whole(client, entity="team", project="p", nodes=[node], page=page,
                          pages_per_request=pages_per_request,
                          keys=lambda s: ["loss", "_timestamp"],
                          progress=lambda done, total: told.append((done, total)))
    finally:
        client.close()
    return read[path].history, told


def test_a_long_w_and_b_run_is_read_in_pages_and_whole(wandb_server):
    history, told = _read_whole(wandb_server, "long", 25_000, page=10_000,
                                pages_per_request=2)
    assert history["loss"].steps == tuple(range(25_000))  # every row, none thinned
    assert history["_timestamp"].steps == tuple(range(25_000))
    assert told == [(2, 3), (3, 3)]  # three pages, two requests
    assert len(wandb_server.requests_of("RunwatchHistory")) == 2


def test_a_w_and_b_run_of_whole_pages_is_asked_each_page_once(wandb_server):
    """2,000 rows in pages of 1,000: no page comes back full (as if thinned), none is
    asked twice."""
    history, told = _read_whole(wandb_server, "even", 2_000, page=1_000,
                                pages_per_request=10)
    assert history["loss"].steps == tuple(range(2_000))
    assert told == [(3, 3)]  # three pages of about 667 rows, in one request
    assert len(wandb_server.requests_of("RunwatchHistory")) == 1


def test_runs_after_rule_files_are_runs(wandb_runs, capsys):
    """`--rules FILE... RUN...`: argparse gives the RUNs to --rules; they are runs."""
    report = backtest(capsys, extra=("--rules", str(default_rules_path()),
                                     str(wandb_runs.runs["healthy"])))
    assert [r["name"] for r in report["runs"]] == ["healthy"]


def test_a_w_and_b_run_that_counts_steps_in_tokens_costs_its_rows_not_its_steps(
        wandb_server):
    """Steps a million apart (a run logging by tokens), bunched unevenly: the whole read
    asks as many pages as the rows need, splits the one that came back full, and gets
    every row."""
    from runwatch.sources.wandb_client import WandbClient
    from runwatch.sources.wandb_reports import read_whole, run_node

    steps = [i * 1_000_000 for i in range(300)] + [300_000_000 + i for i in range(900)]
    rows = [{"_step": step, "_timestamp": 1_795_420_800.0 + i, "loss": 1.0 / (1 + i)}
            for i, step in enumerate(steps)]
    path = wandb_server.add_run("team", "p", "tokens", rows=rows, created_at=1_795_420_800.0)
    client = WandbClient(base_url=wandb_server.url, api_key=KEY, timeout=20.0, retry_max=1)
    try:
        node = run_node(client, entity="team", project="p", run_id="tokens", source="wandb",
                        app_url="https://wandb.example")
        read = read_whole(client, entity="team", project="p", nodes=[node], page=500,
                          pages_per_request=10, keys=lambda s: ["loss", "_timestamp"])
    finally:
        client.close()
    assert read[path].history["loss"].steps == tuple(steps)
    # 1,200 rows in pages of 500: 3 ranges, the bunched one (900 rows) split once — a few
    # requests, where ranges of 500 steps would have been 600,000 pages.
    assert len(wandb_server.requests_of("RunwatchHistory")) <= 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--state", "finished", "."], "--state narrows the runs of --project"),
    (["--project", "e/p", "--limit", "0"], "--limit 0: must be at least 1"),
    (["--project", "e/p", "--since", "lately"], "--since: invalid duration 'lately'"),
])
def test_project_options_are_checked_before_anything_is_read(capsys, argv, message):
    assert main(["backtest", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --- a replay asks only the rules whose answer could change, and tells the same ------------

EVERY_KIND = """
rules:
  - {name: hot, kind: threshold, metric: grad_norm, op: ">", value: 10, severity: critical}
  - {name: warm-held, kind: threshold, metric: grad_norm, op: ">=", value: 5, for: 3m,
     resolve_value: 3, severity: warning}
  - {name: cold, kind: threshold, metric: grad_norm, op: "<", value: 0.01, severity: info}
  - {name: low-last, kind: threshold, metric: loss, op: "<=", value: 0.5, mode: last,
     for: 4 steps, severity: info}
  - {name: mean-high, kind: threshold, metric: loss, op: ">", value: 3, mode: mean,
     window: 5, severity: warning}
  - {name: exactly-two, kind: threshold, metric: loss, op: "==", value: 2, severity: info}
  - {name: nan-loss, kind: nonfinite, metric: loss, severity: critical}
  - {name: nan-held, kind: nonfinite, metric: grad_norm, for: 2 steps, severity: warning}
  - {name: slow, kind: heartbeat, older_than: 10m, severity: warning}
  - {name: dead, kind: heartbeat, older_than: 30m, severity: critical}
  - {name: dead-held, kind: heartbeat, older_than: 5m, for: 10m, severity: info}
  - {name: crashed, kind: state, states: [crashed, failed], severity: critical}
  - {name: finished, kind: state, states: [finished], severity: info}
  - {name: stalled, kind: progress, older_than: 20m, factor: 5, severity: critical}
  - {name: stalled-held, kind: progress, older_than: 8m, window: 5, for: 5m,
     severity: warning}
  - {name: spiky, kind: spike, metric: grad_norm, k: 4, window: 20, min_points: 5,
     severity: warning}
  - {name: flat, kind: plateau, metric: loss, patience: 30 steps, min_delta: 0.01,
     severity: info}
  - {name: no-eval, kind: absent, metric: eval/loss, older_than: 15m, severity: warning}
  - {name: code, kind: code_alert}
"""

EXACT_RUNS = {
    "spikes, recoveries, NaN and a crash": {
        "interval": "10s",
        "series": {"train/grad_norm": "1+0.01x200 50x3 1x100 NaN 1x50 7x40 4x10 2x30 0.001x5"
                                      " 1x300 NaN NaN 1x30",
                   "train/loss": "2x20 3+0.1x30 0.4x10 1x200 NaN 0.5x5 1-0.001x400"},
        "end": {"at": "3h", "state": "crashed"}},
    "a slow logger that stalls, then dies silently": {
        "interval": "4m",
        "series": {"loss": "1-0.01x40", "eval/loss": "1x10 _x20 1x10"},
        "alive_until": "5h"},
    "a key it prefers comes later": {
        "interval": "30s",
        "series": {"grad_norm": "1x100 20x5 1x100", "train/grad_norm": "_x150 1x50 30x3 1x10",
                   "loss": "1x210"},
        "end": {"at": "2h", "state": "finished"}},
    "its code raises alerts": {
        "interval": "20s",
        "series": {"train/loss": "1x300"},
        "raised": [{"at": "5m", "title": "checkpoint", "level": "INFO"},
                   {"at": "5m30s", "title": "checkpoint", "level": "INFO", "wait": "1m"},
                   {"at": "40m", "title": "diverging", "level": "ERROR"}],
        "alive_until": "2h"},
}


def _asking_every_rule(run, rules, aliases, options, ticks):
    """The replay as the daemon does it: ``run_tick`` asks every rule at every tick, then
    the notification pipeline; its alerts as backtest episodes, its messages as Told."""
    from runwatch.backtest import RunResult, Tally, Told, _record
    from runwatch.notify.pipeline import notify_after_tick
    from runwatch.replay import ReplaySource
    from runwatch.store.memory import MemoryStore
    from runwatch.tick import run_tick

    source, store, sent = ReplaySource([run]), MemoryStore(), []
    config = options.config
    receivers = {r.name: Tally(r.name, sent) for r in config.receivers}
    out = RunResult(run=run.ref.path, id=run.ref.id, name="", hours=0, steps=0, ticks=0)
    episodes, first = {}, run.first_time
    for tick in range(1, ticks + 1):
        now = first + run.delay + tick * options.interval
        report = run_tick(sources=[source], rules=rules, aliases=aliases, store=store, now=now)
        _record(report.transitions, episodes, out, now - first)
        before = len(sent)
        notify_after_tick(store, config, receivers, now)
        out.messages += [Told(at=now - first, receiver=m.receiver,
                              firing=tuple(a.rule for a in m.firing),
                              resolved=tuple(a.rule for a in m.resolved)) for m in sent[before:]]
    return out


def _assert_same(result, every):
    """The same alerts (when, step, value, summary, resolution) and the same messages;
    messages of one tick to one receiver come in the store's order of their groups."""
    assert [e.as_json() | {"notifications": 0} for e in result.episodes] == [
        e.as_json() | {"notifications": 0}
        for e in sorted(every.episodes, key=lambda e: (e.fired_at, e.rule))]
    assert sorted(map(repr, result.messages)) == sorted(map(repr, every.messages))


@pytest.mark.parametrize("name", sorted(EXACT_RUNS))
@pytest.mark.parametrize("delay", [0.0, 15.0])
def test_a_replay_that_skips_quiet_rules_tells_what_asking_them_all_tells(
        tmp_path, name, delay):
    """A backtest asks a rule only when its answer could change (a point that might stir
    it, its heartbeat or row growing old, the run's end) and keeps no inactive alert up
    to date; the daemon's tick asks every rule every tick. Over runs that exercise every
    kind — crossings and recoveries, holds, hysteresis, NaN, a key preferred later, a
    slow logger stalling and dying, raised alerts, a crash — both tell the same alerts,
    at the same ticks, steps, values and summaries, in the same messages."""
    from runwatch.config import Config

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(EVERY_KIND)
    loaded = load_rules([rules_file], tmp_path)
    config = Config.model_validate({
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "chat", "webhook": {"url": "https://example.com/c"}}],
        "routes": [{"receivers": ["chat"], "group_by": ["rule"], "group_wait": "2m",
                    "repeat_interval": "30m"}],
    }, context={"base_dir": tmp_path})
    run = dataclasses.replace(synthetic_run(RunSpec.model_validate(EXACT_RUNS[name])),
                              delay=delay)
    options = Options(interval=60, config=config)
    result = backtest_run(run, loaded.rules, loaded.aliases, options)
    every = _asking_every_rule(run, loaded.rules, loaded.aliases, options, result.ticks)

    _assert_same(result, every)
    assert len(result.episodes) >= 4 and result.messages  # the runs are not quiet


@pytest.mark.parametrize("stepped", ["grad_norm", "_timestamp"])
def test_the_same_when_the_clock_steps_back(tmp_path, stepped):
    """A run resumed on a host whose clock is behind: its times go back, so a point's
    time no longer says which tick sees it — a replay then asks the rules of that key at
    every tick (a spike before the step, a stall by the stepped row times)."""
    from runwatch.config import Config
    from runwatch.model import RunRef, Series
    from runwatch.replay import ROW_TIME, ReplayRun

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(EVERY_KIND + "  - {name: stall, kind: progress, older_than: 10m,"
                          " factor: 0, window: 3, severity: warning}\n")
    loaded = load_rules([rules_file], tmp_path)
    t0 = 1_767_225_600.0
    back, at = (600.0, 30) if stepped == "grad_norm" else (1500.0, 50)
    times = tuple(t0 + 60.0 * i - (back if i >= at else 0.0) for i in range(60))
    ordered = tuple(t0 + 60.0 * i for i in range(60))
    steps = tuple(range(60))
    grad = tuple(50.0 if i == 21 else 1.0 for i in range(60))
    row_times = times if stepped == "_timestamp" else ordered
    grad_times = times if stepped == "grad_norm" else ordered
    run = ReplayRun(
        ref=RunRef(source="test", id="r", name="r", project="p", entity="e",
                   location="test/r"),
        history={ROW_TIME: Series(steps=steps, times=row_times, values=row_times),
                 "train/grad_norm": Series(steps=steps, times=grad_times, values=grad)},
        end_at=t0 + 3600, end_state=RunState.FINISHED, alive_until=t0 + 3600)
    config = Config.model_validate({
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "chat", "webhook": {"url": "https://example.com/c"}}]},
        context={"base_dir": tmp_path})
    options = Options(interval=60, config=config)
    result = backtest_run(run, loaded.rules, loaded.aliases, options)
    every = _asking_every_rule(run, loaded.rules, loaded.aliases, options, result.ticks)
    _assert_same(result, every)
    assert {e.rule for e in result.episodes} >= (
        {"hot"} if stepped == "grad_norm" else {"stall"})


@pytest.mark.parametrize("scenario", ["exploding", "nan_loss", "crashed", "killed", "healthy"])
def test_the_same_over_runs_the_sdk_wrote(wandb_runs, scenario):
    """The same comparison over real SDK run directories and the shipped rules."""
    from runwatch.backtest import replay_of
    from runwatch.config import Config

    loaded = load_rules([default_rules_path()], Path("."))
    snapshot, _ = read_run(wandb_runs.runs[scenario],
                           wanted_keys(loaded.rules, loaded.aliases) | {"_timestamp"})
    run = replay_of(snapshot, 0.0)
    config = Config.model_validate({
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "chat", "webhook": {"url": "https://example.com/c"}}]},
        context={"base_dir": Path(".")})
    # (the killed run dies silently: its heartbeat rules fire half an hour later)
    options = Options(interval=1.0, config=config, tail=2400) if scenario == "killed" else (
        Options(interval=INTERVAL, config=config, tail=60))
    result = backtest_run(run, loaded.rules, loaded.aliases, options)
    every = _asking_every_rule(run, loaded.rules, loaded.aliases, options, result.ticks)
    _assert_same(result, every)
