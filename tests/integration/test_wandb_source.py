"""The W&B source through the real ``wandb.Api`` (and so the real wandb-core) against the
local fake W&B server: incremental reads, batching, outages, and the same verdicts as the
run-directory source on the same runs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from runwatch.checks import RULE_ADAPTER
from runwatch.cli import main
from runwatch.config.sources import WandbSource as WandbSpec
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertStatus
from runwatch.sources.wandb_api import STATE_KEY, WandbApiSource
from runwatch.sources.wandb_cursor import RunCursor
from runwatch.store.memory import MemoryStore
from runwatch.tick import keys_for_run, run_tick, wanted_keys
from runwatch.window import Window

T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z
KEY = "k" * 40


def spec(url: str, projects=("p",), **extra) -> WandbSpec:
    return WandbSpec.model_validate({"type": "wandb", "entity": "team",
                                     "projects": list(projects), "api_key": KEY,
                                     "base_url": url, **extra})


def rows(first: int, count: int, *, t: float = T0, **values) -> list[dict]:
    """``count`` rows from step ``first``, one a second ending at ``t``."""
    out = []
    for step in range(first, first + count):
        row = {"_step": step, "_timestamp": t - (first + count - 1 - step), "loss": 1.0,
               "train/grad_norm": 1.0, "lr": 0.1, "acc": 0.5}
        row.update({k: v(step) if callable(v) else v for k, v in values.items()})
        out.append(row)
    return out


RULES = [RULE_ADAPTER.validate_python(r) for r in (
    {"name": "grad-high", "kind": "threshold", "metric": "grad_norm", "op": ">", "value": 10,
     "severity": "critical"},
    {"name": "loss-nan", "kind": "nonfinite", "metric": "loss", "severity": "critical"},
    {"name": "crashed", "kind": "state", "states": ["crashed", "failed"],
     "severity": "critical"},
    {"name": "stalled", "kind": "heartbeat", "older_than": "30m", "severity": "critical"},
)]


class Ticker:
    """Polls one source the way the tick does, carrying cursors between polls."""

    def __init__(self, source: WandbApiSource, rules=RULES):
        self.source = source
        self.rules = rules
        self.cursors: dict[str, str] = {}

    def poll(self, now: float):
        poll = self.source.poll(self.cursors, wanted_keys(self.rules, DEFAULT_ALIASES), now,
                                keys_for=keys_for_run(self.rules, DEFAULT_ALIASES),
                                needs_config=any(r.match.config for r in self.rules))
        self.cursors.update(poll.cursors)
        return poll


def history_specs(server) -> list[tuple[str, dict]]:
    """(run id, spec) of every history read the server answered, in order; a run's specs
    folded into one, its ``keys`` the keys read (besides ``_step`` and ``_timestamp``),
    ``specs`` how many specs asked them."""
    out = []
    for got in server.received:
        if got.op != "RunwatchHistory":
            continue
        i = 0
        while f"n{i}" in got.variables:
            specs = [json.loads(s) for s in got.variables[f"s{i}"]]
            assert all(s["keys"][:2] == ["_step", "_timestamp"] for s in specs)
            assert len({(s["minStep"], s["maxStep"], s["samples"]) for s in specs}) == 1
            out.append((got.variables[f"n{i}"], {**specs[0], "specs": len(specs),
                                                 "keys": [k for s in specs
                                                          for k in s["keys"][2:]]}))
            i += 1
    return out


def test_each_step_is_read_exactly_once_across_ticks(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 100, t=T0))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    first = ticker.poll(T0 + 10)
    assert first.errors == ()
    [snap] = first.snapshots
    assert snap.ref.path == "team/p/r1"
    assert snap.ref.location == f"{wandb_server.url}/team/p/runs/r1"
    assert snap.history["train/grad_norm"].steps == tuple(range(100))

    wandb_server.append_rows(path, rows(100, 50, t=T0 + 60))
    second = ticker.poll(T0 + 70)
    assert second.snapshots[0].history["loss"].steps == tuple(range(100, 150))
    third = ticker.poll(T0 + 80)  # nothing new: evaluated, but no history read
    assert third.snapshots[0].history == {}

    reads = [(s["minStep"], s["maxStep"], s["samples"]) for _, s in history_specs(wandb_server)]
    assert reads == [(0, 99, 100), (100, 149, 50)]


def test_only_the_keys_the_matching_rules_need_are_fetched(wandb_server):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 5, **{f"k{i}": 1.0 for i in range(10)}))
    Ticker(WandbApiSource(spec(wandb_server.url))).poll(T0 + 10)
    [(_, got)] = history_specs(wandb_server)
    assert got["keys"] == ["loss", "train/grad_norm"]


def test_runs_without_new_rows_cost_no_history_request(wandb_server):
    for i in range(3):
        wandb_server.add_run("team", "p", f"r{i}", rows=rows(0, 10))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    ticker.poll(T0 + 10)
    assert wandb_server.counters.requests["RunwatchHistory"] == 1  # three runs, one request
    wandb_server.append_rows("team/p/r1", rows(10, 5, t=T0 + 30))
    ticker.poll(T0 + 40)
    assert [run for run, _ in history_specs(wandb_server)][3:] == ["r1"]
    ticker.poll(T0 + 50)
    assert wandb_server.counters.requests["RunwatchHistory"] == 2
    # One listing per tick, and one query on the second tick for the runs' configs.
    assert wandb_server.counters.requests["RunwatchListing"] == 3
    assert wandb_server.counters.requests["RunwatchRuns"] == 1


def test_one_request_lists_ten_projects_each_paged_on_its_own(wandb_server):
    """A tick lists its projects ten a request, not one each; a project with more runs than
    a page has its next page asked alone; an unknown project is said so and the others are
    read."""
    projects = [f"q{i:02d}" for i in range(12)]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    for i in range(1, 150):  # q03: two pages
        wandb_server.add_run("team", "q03", f"r{i:03d}", rows=rows(0, 5))
    source = WandbApiSource(spec(wandb_server.url, projects=(*projects, "nope")))
    poll = Ticker(source).poll(T0 + 10)
    assert poll.errors == ("source wandb:team: project team/nope: unknown project team/nope",)
    assert len(poll.snapshots) == 12 + 149
    assert {s.ref.project for s in poll.snapshots} == set(projects)
    listings = wandb_server.requests_of("RunwatchListing")
    asked = [[v for k, v in r.variables.items() if k[0] == "p" and k[1:].isdigit()]
             for r in listings]
    assert asked == [projects[:10], ["q03"], [*projects[10:], "nope"]]
    assert listings[1].variables["c0"]  # the second page of q03, from its cursor
    assert wandb_server.counters.requests["RunwatchRuns"] == 0


def test_a_failed_listing_fails_only_its_projects_for_the_tick(wandb_server):
    projects = [f"q{i:02d}" for i in range(12)]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    source = WandbApiSource(spec(wandb_server.url, projects=projects, request_retries=1))
    wandb_server.fail_next(2, status=503, op="RunwatchListing")  # the try and its retry
    poll = Ticker(source).poll(T0 + 10)
    [error] = poll.errors  # a server error: the same for every project, said once
    assert error.startswith("source wandb:team: projects team/q00, team/q01, ")
    assert "team/q09: W&B unavailable (HTTP 503)" in error and "q10" not in error
    assert sorted(s.ref.project for s in poll.snapshots) == ["q10", "q11"]
    assert poll.reachable  # W&B answered the other listing
    # A refusal that may be one project's (here a 400) has each project asked alone.
    wandb_server.fail_next(1, status=400, op="RunwatchListing")
    poll = Ticker(source).poll(T0 + 70)
    assert poll.errors == ()
    assert sorted(s.ref.project for s in poll.snapshots) == projects
    assert len(wandb_server.requests_of("RunwatchListing")) == 2 + 1 + (1 + 10 + 1)


def test_one_project_w_and_b_cannot_list_fails_alone(wandb_server):
    """W&B answers an error on one project's alias as the whole request's: the projects of
    that request are then listed one at a time, so only the broken one fails, and the
    source still counts as answering."""
    projects = ["a", "b", "bad", "c"]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    wandb_server.break_runs("team", "bad", "internal error reading runs")
    ticker = Ticker(WandbApiSource(spec(wandb_server.url, projects=projects)))
    for n in range(2):
        poll = ticker.poll(T0 + 10 + 60 * n)
        assert sorted({s.ref.project for s in poll.snapshots}) == ["a", "b", "c"]
        [error] = poll.errors
        assert error.startswith("source wandb:team: project team/bad: ")
        assert "internal error reading runs" in error
        assert poll.reachable
    wandb_server.break_runs("team", "bad", None)
    assert ticker.poll(T0 + 130).errors == ()
    assert len(wandb_server.requests_of("RunwatchListing")) == 2 * (1 + 4) + 1


def test_a_budget_spent_listing_still_reads_the_first_ten_projects(wandb_server):
    """Ten projects are listed and read before the next ten are listed: a slow W&B that
    spends the tick's budget still has the first ten read and the tick counts as answered;
    the ten whose listing timed out are said once, the rest named as waiting."""
    projects = [f"q{i:02d}" for i in range(25)]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url, projects=projects,
                                        tick_timeout="3s", request_timeout="2s")))
    ticker.poll(T0)  # connected, cursors set
    ticker.poll(T0 + 30)  # every run's config read (from a second tick on)
    wandb_server.hang_next(1, seconds=1.7, op="RunwatchListing")  # answered, late
    wandb_server.hang_next(5, seconds=30, op="RunwatchListing")  # not within the budget
    poll = ticker.poll(T0 + 60)  # the third tick starts at the third project
    assert sorted({s.ref.project for s in poll.snapshots}) == projects[2:12]
    assert poll.reachable
    late = ", ".join(f"team/{p}" for p in projects[12:22])
    assert poll.errors[0].startswith(f"source wandb:team: projects {late}: W&B request timed"
                                     " out")
    assert poll.errors[1:] == ("source wandb:team: tick budget of 3 s spent; q22, q23, q24,"
                               " q00, q01 wait for the next tick",)


def test_a_listing_w_and_b_is_too_slow_to_answer_is_asked_again_in_halves(wandb_server):
    """W&B may answer each aliased project in turn: a listing of ten that timed out is
    asked again five at a time, in the same tick, and the source lists five a request for
    an hour (no project skipped as the size changes under way), then ten again."""
    projects = [f"q{i:02d}" for i in range(25)]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url, projects=projects,
                                        request_timeout="2s")))
    wandb_server.hang_next(1, seconds=30, op="RunwatchListing")
    poll = ticker.poll(T0 + 10)
    assert sorted(s.ref.project for s in poll.snapshots) == projects
    assert poll.errors == ("source wandb:team: W&B did not list 10 projects in one request"
                           " within 2 s; listing 5 a request for the next 1h",)
    assert poll.reachable

    def sizes(since: int) -> list[int]:
        return [sum(1 for k in r.variables if k[0] == "p" and k[1:].isdigit())
                for r in wandb_server.requests_of("RunwatchListing")[since:]]

    assert sizes(0) == [10, 5, 5, 5, 5, 5]
    first = len(wandb_server.requests_of("RunwatchListing"))
    assert ticker.poll(T0 + 70).errors == ()
    assert sizes(first) == [5, 5, 5, 5, 5]
    first = len(wandb_server.requests_of("RunwatchListing"))
    assert ticker.poll(T0 + 10 + 3600).errors == ()
    assert sizes(first) == [10, 10, 5]


def test_a_timeout_on_a_later_page_halves_the_listing_not_more(wandb_server):
    projects = [f"q{i:02d}" for i in range(10)]
    for project in projects:
        wandb_server.add_run("team", project, "r0", rows=rows(0, 5))
    for i in range(1, 150):  # two pages each for q03 and q07
        wandb_server.add_run("team", "q03", f"r{i:03d}", rows=rows(0, 5))
        wandb_server.add_run("team", "q07", f"r{i:03d}", rows=rows(0, 5))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url, projects=projects,
                                        request_timeout="2s")))
    wandb_server.hang_next(1, seconds=1.5, op="RunwatchListing")  # the first page: in time
    wandb_server.hang_next(1, seconds=30, op="RunwatchListing")  # the second: not
    poll = ticker.poll(T0 + 10)
    assert len(poll.snapshots) == 10 + 2 * 149
    assert len({s.ref.path for s in poll.snapshots}) == len(poll.snapshots)
    assert poll.errors == ("source wandb:team: W&B did not list 2 projects in one request"
                           " within 2 s; listing 5 a request for the next 1h",)


def test_configs_left_out_of_the_listing_are_read_once_per_run_from_the_second_tick(
        wandb_server):
    """No rule matches on config, so runs are listed without it; the status pages still
    want it (a run's total steps): read once per run, a hundred runs a tick."""
    for i in range(150):
        wandb_server.add_run("team", "p", f"r{i:03d}", rows=rows(0, 5),
                             config={"trainer": {"max_steps": 1000 + i}, "blob": "x" * 100})
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))

    def configs(poll) -> dict[str, int]:
        return {s.ref.id: s.config["trainer"]["max_steps"] for s in poll.snapshots
                if s.config}

    def listed_with_config() -> list[bool]:
        return [got.variables["withConfig"] for got in wandb_server.received
                if got.op == "RunwatchRuns"]

    asked = []
    for n in range(4):
        before = len(listed_with_config())
        asked.append((configs(ticker.poll(T0 + 10 * (n + 1))),
                      listed_with_config()[before:].count(True)))
    assert asked[0] == ({}, 0)  # the first tick asks no more than it must
    assert len(asked[1][0]) == 100 and asked[1][0]["r000"] == 1000 and asked[1][1] == 1
    assert sorted(asked[2][0]) == [f"r{i:03d}" for i in range(100, 150)]
    assert asked[2][0]["r149"] == 1149 and asked[2][1] == 1
    assert asked[3] == ({}, 0)  # every run's read once: no more
    listings = wandb_server.requests_of("RunwatchListing")
    assert len(listings) == 4 * 2 and not any(r.variables["withConfig"] for r in listings)


def test_a_nan_loss_read_through_wandb_reaches_the_nonfinite_check(wandb_server):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 10, loss=lambda s: float("nan")
                                                      if s == 7 else 1.0))
    store = MemoryStore()
    report = run_tick(sources=[WandbApiSource(spec(wandb_server.url))], rules=RULES,
                      aliases=DEFAULT_ALIASES, store=store, now=T0 + 10)
    assert [(t.alert.rule, t.status, t.alert.step) for t in report.transitions] == [
        ("loss-nan", AlertStatus.FIRING, 7)]
    assert report.transitions[0].alert.run.path == "team/p/r1"


def test_a_run_that_crashes_between_two_ticks_alerts_once(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url))
    store = MemoryStore()

    def tick(now):
        report = run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES, store=store,
                          now=now)
        assert report.errors == ()
        return [(t.alert.rule, t.status) for t in report.transitions]

    assert tick(T0 + 10) == []
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60))
    wandb_server.set_state(path, "crashed", heartbeat_at=T0 + 61)
    assert tick(T0 + 120) == [("crashed", AlertStatus.FIRING)]
    before = wandb_server.counters.requests["RunwatchHistory"]
    assert tick(T0 + 240) == []
    assert tick(T0 + 360) == []
    assert wandb_server.counters.requests["RunwatchHistory"] == before


def test_wandb_down_for_ten_ticks_is_one_unreachable_alert_and_no_stalled_run(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10), heartbeat_at=T0)
    source = WandbApiSource(spec(wandb_server.url, request_retries=1, request_timeout="20s",
                                 unreachable_after="10m", interval="5m"))
    store = MemoryStore()
    seen = []
    for i in range(13):
        now = T0 + i * 300
        if i == 1:
            wandb_server.down()
        if i == 11:
            wandb_server.up()
        if i >= 11:
            wandb_server.touch(path, heartbeat_at=now - 5)  # it was alive all along
        report = run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES, store=store,
                          now=now)
        seen += [(i, t.alert.rule, t.status) for t in report.transitions]
        if 1 <= i <= 10:
            assert report.errors and report.runs_checked == 0
    # Backing off, W&B is asked at ticks 1, 2, 4, 6, 8 and 10 of the outage (the wait doubles
    # up to its 10 min cap), each request tried twice (request_retries: 1), then at 12,
    # where it answers again (and is asked the run's config, which the first tick left out).
    assert seen == [(3, "source-unreachable", AlertStatus.FIRING),
                    (12, "source-unreachable", AlertStatus.RESOLVED)]
    assert wandb_server.counters.requests["RunwatchListing"] == 1 + 2 * 6 + 1
    assert wandb_server.counters.requests["RunwatchRuns"] == 1  # (the config)


def test_a_tick_during_an_outage_ends_within_its_bound(wandb_server):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    wandb_server.add_run("team", "q", "r2", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url, projects=("p", "q"), request_retries=1,
                                 request_timeout="2s", tick_timeout="3s"))
    Ticker(source).poll(T0)  # connect first: the bound is the tick's, not start-up's
    wandb_server.hang_next(10, seconds=30)
    started = time.monotonic()
    poll = Ticker(source).poll(T0 + 120)
    took = time.monotonic() - started
    assert took < 10, took
    assert poll.errors and "W&B request timed out: no answer within " in poll.errors[0]
    assert "busy" not in poll.errors[0]  # wandb-core's words, not what happened


def test_a_rate_limit_is_waited_out_inside_the_request(wandb_server):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url))
    Ticker(source).poll(T0)
    wandb_server.rate_limit_next(1, retry_after=1, op="RunwatchListing")
    poll = Ticker(source).poll(T0 + 60)
    assert poll.errors == () and len(poll.snapshots) == 1
    runs = [r for r in wandb_server.received if r.op == "RunwatchListing"]
    assert [r.status for r in runs[-2:]] == [429, 200]
    assert runs[-1].at - runs[-2].at >= 1.0  # Retry-After honoured


def test_a_failed_history_read_is_retried_next_tick_and_judges_nothing(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url, request_retries=1)))
    ticker.poll(T0 + 10)
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60))
    wandb_server.fail_next(2, status=500, op="RunwatchHistory")  # the try and its retry
    failed = ticker.poll(T0 + 70)
    assert failed.snapshots == () and "history of 1 runs" in failed.errors[0]
    again = ticker.poll(T0 + 70 + 120)  # the next tick, an interval later
    assert again.snapshots[0].history["loss"].steps == tuple(range(10, 15))


def test_the_source_cursor_survives_in_the_store_between_source_objects(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    store = MemoryStore()
    for now in (T0 + 10, T0 + 70):
        if now > T0 + 10:
            wandb_server.append_rows(path, rows(10, 5, t=now - 5))
        run_tick(sources=[WandbApiSource(spec(wandb_server.url))], rules=RULES,
                 aliases=DEFAULT_ALIASES, store=store, now=now)
    assert [(s["minStep"], s["maxStep"]) for _, s in history_specs(wandb_server)] == [
        (0, 9), (10, 14)]
    assert STATE_KEY in store.load_cursors("wandb:team")


def _config(tmp_path, body: str):
    path = tmp_path / "runwatch.yaml"
    path.write_text(body)
    return path


def test_validate_online_names_a_rejected_key_and_an_unknown_project(wandb_server, tmp_path,
                                                                     capsys):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 3))
    good = _config(tmp_path, f"sources:\n  - type: wandb\n    entity: team\n"
                             f"    projects: [p, nope]\n    api_key: {KEY}\n"
                             f"    base_url: {wandb_server.url}\n    request_retries: 1\n")
    assert main(["validate", "--online", "--config", str(good)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"source wandb:team: unknown project team/nope at {wandb_server.url}")

    wandb_server.invalid_keys.add("b" * 40)
    bad = _config(tmp_path, f"sources:\n  - type: wandb\n    entity: team\n"
                            f"    projects: [p]\n    api_key: {'b' * 40}\n"
                            f"    base_url: {wandb_server.url}\n    request_retries: 1\n")
    assert main(["validate", "--online", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("source wandb:team: W&B rejected the API key")
    assert "\n" not in err and "b" * 40 not in err


@pytest.mark.sdk
def test_check_gives_the_same_transitions_through_wandb_as_from_the_run_directory(
        wandb_server, wandb_runs, tmp_path, capsys):
    scenarios = ("exploding", "nan_loss", "crashed", "healthy")
    for name in scenarios:
        wandb_server.load_rundir(wandb_runs.runs[name], entity="team", project="p",
                                 run_id=name)
    newest = max(wandb_server.run(f"team/p/{n}").heartbeat_at for n in scenarios)
    config = _config(tmp_path, f"sources:\n  - type: wandb\n    entity: team\n"
                               f"    projects: [p]\n    api_key: {KEY}\n"
                               f"    base_url: {wandb_server.url}\n"
                               f"state_dir: {tmp_path / 'w'}\n")
    on_disk = [arg for name in scenarios
               for arg in ("--rundir", str(wandb_runs.runs[name].parent.parent))]

    def verdicts(*args):
        with freeze_time(datetime.fromtimestamp(newest + 60, UTC)):
            assert main(["check", "--json", *args]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["errors"] == []
        return sorted((t["run"]["name"], t["rule"], t["status"], t["metric"], t["step"],
                       str(t["value"])) for t in report["transitions"])

    through_wandb = verdicts("--config", str(config))
    from_disk = verdicts(*on_disk, "--state-dir", str(tmp_path / "d"))
    assert through_wandb == from_disk
    assert {(r[0], r[1]) for r in through_wandb} >= {
        ("nan-loss", "loss-nonfinite"), ("crashed", "run-crashed"),
        ("exploding-grads", "grad-norm-exploding")}


def test_a_dead_run_marked_crashed_long_after_its_last_heartbeat_is_still_seen(wandb_server):
    """W&B marks a SIGKILLed run crashed minutes after its last heartbeat: the run is neither
    running nor recently beating, and only its open cursor brings it back."""
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10), heartbeat_at=T0)
    source = WandbApiSource(spec(wandb_server.url))
    store = MemoryStore()

    def tick(now):
        report = run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES,
                          store=store, now=now)
        return [(t.alert.rule, str(t.status)) for t in report.transitions]

    assert tick(T0 + 60) == []
    assert ("stalled", "firing") in tick(T0 + 3600)
    wandb_server.set_state(path, "crashed")  # the heartbeat stays at T0
    assert sorted(tick(T0 + 7200)) == [("crashed", "firing"), ("stalled", "resolved")]
    assert tick(T0 + 7320) == []
    names = [r.variables["filters"] for r in wandb_server.received
             if r.op == "RunwatchRuns" and not r.variables["withConfig"]]  # (not its config)
    assert '{"name": {"$in": ["r1"]}}' in names  # asked for by name, once it left "running"
    assert names.count('{"name": {"$in": ["r1"]}}') == 1


def test_a_run_that_ends_while_its_history_fails_gets_its_final_evaluation(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url, request_retries=1))
    store = MemoryStore()
    run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES, store=store, now=T0 + 10)
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60, loss=float("nan")))
    wandb_server.set_state(path, "crashed", heartbeat_at=T0 + 61)
    wandb_server.fail_next(6, status=500, op="RunwatchHistory")  # three ticks' worth
    seen = []
    for now in (T0 + 130, T0 + 250, T0 + 490, T0 + 970, T0 + 1930):
        report = run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES,
                          store=store, now=now)
        seen += [(t.alert.rule, str(t.status)) for t in report.transitions]
    assert ("crashed", "firing") in seen and ("loss-nan", "firing") in seen


def test_a_metric_whose_summary_is_its_minimum_is_still_read(wandb_server):
    """``define_metric("loss", summary="min")`` leaves ``{"loss": {"min": …}}`` in the
    summary; the run's history keys still name ``loss``."""
    wandb_server.add_run("team", "p", "r1",
                         rows=rows(0, 10, loss=lambda s: float("nan") if s == 4 else 1.0),
                         summary={"loss": {"min": 0.8}})
    report = run_tick(sources=[WandbApiSource(spec(wandb_server.url))], rules=RULES,
                      aliases=DEFAULT_ALIASES, store=MemoryStore(), now=T0 + 10)
    assert [(t.alert.rule, t.alert.step) for t in report.transitions] == [("loss-nan", 4)]


# --- rows W&B answers oddly, runs the engine cannot judge, rate limits --------------------

def run_cursor(store: MemoryStore, path: str) -> RunCursor | None:
    return RunCursor.load(store.load_cursors("wandb:team").get(path))


def test_float_steps_from_wandb_are_judged(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", summary={"_step": 14.0}, rows=rows(0, 15, **{
        "train/grad_norm": lambda s: 50.0 if s == 12 else 1.0}))
    wandb_server.serve_steps(path, {s: float(s) for s in range(15)})  # 0.0 … 14.0
    store = MemoryStore()
    report = run_tick(sources=[WandbApiSource(spec(wandb_server.url))], rules=RULES,
                      aliases=DEFAULT_ALIASES, store=store, now=T0 + 10)
    assert report.errors == ()
    assert [(t.alert.rule, t.status, t.alert.step) for t in report.transitions] == [
        ("grad-high", AlertStatus.FIRING, 12)]
    assert run_cursor(store, path).step == 14


def test_an_unreadable_row_is_one_error_and_the_cursor_stays_before_it(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url))
    store = MemoryStore()

    def tick(now):
        return run_tick(sources=[source], rules=RULES, aliases=DEFAULT_ALIASES, store=store,
                        now=now)

    assert tick(T0 + 10).errors == ()
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60, **{
        "train/grad_norm": lambda s: 50.0 if s == 13 else 1.0}))
    wandb_server.serve_steps(path, {12: "abc"})
    bad = 'run team/p/r1: the history row after step 11 has _step "abc", not a whole number'
    for now, then in ((T0 + 70, "judged up to step 11, the rest is"),  # 10 and 11 judged
                      (T0 + 190, "none of its new rows judged, they are")):  # each tick
        report = tick(now)
        assert report.errors == (f"{bad}; {then} read again next tick",)
        assert report.transitions == ()  # the spike at step 13 is not judged yet
        assert run_cursor(store, path).step == 11
    wandb_server.serve_steps(path, {12: 12})  # W&B answers it readably again
    report = tick(T0 + 310)
    assert report.errors == ()
    assert [(t.alert.rule, t.alert.step) for t in report.transitions] == [("grad-high", 13)]
    assert run_cursor(store, path).step == 14
    assert [(s["minStep"], s["maxStep"]) for _, s in history_specs(wandb_server)] == [
        (0, 9), (10, 14), (12, 14), (12, 14)]


def test_a_run_whose_evaluation_raises_keeps_its_cursor(wandb_server):
    """A mean over a window of huge (finite) losses overflows ``math.fsum``: the engine
    raises for that run, and its rows are read and tried again on the next tick."""
    mean = RULE_ADAPTER.validate_python({
        "name": "loss-mean-high", "kind": "threshold", "metric": "loss", "op": ">",
        "value": 100, "mode": "mean", "window": 5, "severity": "warning"})
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url))
    store = MemoryStore()

    def tick(now):
        return run_tick(sources=[source], rules=[*RULES, mean], aliases=DEFAULT_ALIASES,
                        store=store, now=now)

    assert tick(T0 + 10).errors == ()
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60, loss=1e308))
    line = ("run team/p/r1: evaluation failed on steps 10-14: OverflowError: intermediate"
            " overflow in fsum; its cursor stays, so it is read again next tick")
    for now in (T0 + 70, T0 + 190):
        assert tick(now).errors == (line,)
        assert run_cursor(store, path).step == 9
    assert [(s["minStep"], s["maxStep"]) for _, s in history_specs(wandb_server)] == [
        (0, 9), (10, 14), (10, 14)]


def test_a_rate_limit_says_so_and_when_it_is_tried_again(wandb_server):
    wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    source = WandbApiSource(spec(wandb_server.url, request_retries=1, interval="60s"))
    ticker = Ticker(source)
    ticker.poll(T0)
    wandb_server.rate_limit_next(2, retry_after=1, op="RunwatchListing")  # the try, its retry
    poll = ticker.poll(T0 + 60)
    assert poll.errors == (
        "source wandb:team: project team/p: rate limited by W&B (HTTP 429), retrying after"
        " 60 s",)
    assert [r.status for r in wandb_server.received if r.op == "RunwatchListing"][-2:] == [
        429, 429]
    wandb_server.rate_limit_next(2, retry_after=1, op="RunwatchListing")
    assert ticker.poll(T0 + 120).errors == (  # backing off: twice the interval
        "source wandb:team: project team/p: rate limited by W&B (HTTP 429), retrying after"
        " 120 s",)


def test_an_unreadable_first_row_judges_none_of_the_new_rows(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 10))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    ticker.poll(T0 + 10)
    wandb_server.append_rows(path, rows(10, 5, t=T0 + 60))
    wandb_server.serve_steps(path, {10: 10.5})
    poll = ticker.poll(T0 + 70)
    assert poll.errors == (
        "run team/p/r1: the history row after step 9 has _step 10.5, not a whole number;"
        " none of its new rows judged, they are read again next tick",)
    assert poll.snapshots[0].history == {}
    assert RunCursor.load(ticker.cursors[path]).step == 9


# --- first sight reads the window; each point is asked once -----------------------------------


def test_first_sight_of_a_long_run_reads_its_window_not_its_history(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 5_000, t=T0))
    source = WandbApiSource(spec(wandb_server.url, first_read="100 rows"))
    ticker = Ticker(source)
    poll = source.poll({}, wanted_keys(RULES, DEFAULT_ALIASES), T0 + 10,
                       keys_for=keys_for_run(RULES, DEFAULT_ALIASES), window=Window(rows=300))
    ticker.cursors.update(poll.cursors)
    assert poll.errors == ()
    assert poll.snapshots[0].history["loss"].steps == tuple(range(4_700, 5_000))
    wandb_server.append_rows(path, rows(5_000, 20, t=T0 + 30))
    later = ticker.poll(T0 + 40)
    assert later.snapshots[0].history["loss"].steps == tuple(range(5_000, 5_020))
    [(_, first), (_, second)] = history_specs(wandb_server)
    assert (first["minStep"], first["maxStep"]) == (4_700, 4_999)
    assert (second["minStep"], second["maxStep"]) == (5_000, 5_019)


def test_a_window_of_steps_starts_at_its_step(wandb_server):
    wandb_server.add_run("team", "p", "r1",
                         rows=[{**row, "_step": 10 * row["_step"]} for row in rows(0, 1_000)])
    Ticker(WandbApiSource(spec(wandb_server.url, first_read="2000 steps"))).poll(T0 + 10)
    [(_, got)] = history_specs(wandb_server)
    assert (got["minStep"], got["maxStep"]) == (9_990 - 2_000, 9_990)


def test_keys_logged_in_the_same_rows_are_asked_in_one_spec(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 50))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    ticker.poll(T0 + 10)
    wandb_server.append_rows(path, rows(50, 10, t=T0 + 30))
    second = ticker.poll(T0 + 40)
    assert [got["specs"] for _, got in history_specs(wandb_server)] == [1, 1]
    history = second.snapshots[0].history
    assert history["loss"].steps == history["train/grad_norm"].steps == tuple(range(50, 60))


def test_keys_logged_in_different_rows_lose_no_point(wandb_server):
    # As many rows of each, but never in the same row: a spec of both would answer none.
    def alternate(first: int, count: int, t: float) -> list[dict]:
        out = []
        for row in rows(first, count, t=t):
            del row["loss" if row["_step"] % 2 else "train/grad_norm"]
            out.append(row)
        return out

    path = wandb_server.add_run("team", "p", "r1", rows=alternate(0, 40, T0))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    first = ticker.poll(T0 + 10).snapshots[0].history
    assert first["loss"].steps == tuple(range(0, 40, 2))
    assert first["train/grad_norm"].steps == tuple(range(1, 40, 2))
    wandb_server.append_rows(path, alternate(40, 10, T0 + 30))
    later = ticker.poll(T0 + 40).snapshots[0].history
    assert later["loss"].steps == tuple(range(40, 50, 2))
    assert later["train/grad_norm"].steps == tuple(range(41, 50, 2))
    # Found out once, on the first read (asked together, then apart); apart from then on.
    assert [got["specs"] for _, got in history_specs(wandb_server)] == [1, 2, 2]


def test_keys_that_part_ways_later_are_found_out_and_read_again(wandb_server):
    path = wandb_server.add_run("team", "p", "r1", rows=rows(0, 20))
    ticker = Ticker(WandbApiSource(spec(wandb_server.url)))
    ticker.poll(T0 + 10)
    # Ten rows each, never together: the counts stay equal, the rows part.
    parted = rows(20, 20, t=T0 + 30)
    for row in parted:
        del row["loss" if row["_step"] % 2 else "train/grad_norm"]
    wandb_server.append_rows(path, parted)
    history = ticker.poll(T0 + 40).snapshots[0].history
    assert history["loss"].steps == tuple(range(20, 40, 2))
    assert history["train/grad_norm"].steps == tuple(range(21, 40, 2))
    assert RunCursor.load(ticker.cursors["team/p/r1"]).apart == {"loss", "train/grad_norm"}
