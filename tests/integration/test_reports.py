"""Health reports over real runs: run directories written by the real SDK, the same runs
served by the fake W&B server through the real client, and the CLI commands on both.

The one promise checked over every fixture run: a report's verdict and the alerts the
rules raise never disagree."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from runwatch.analysis import Health, characterize, report_keys
from runwatch.cli import main
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertStatus
from runwatch.reports import WandbAccess, load_run, parse_run
from runwatch.sources.rundir import RundirSource
from runwatch.sources.rundir_reports import read_run
from runwatch.store.memory import MemoryStore
from runwatch.tick import run_tick

pytestmark = pytest.mark.sdk

RULES = load_rules([default_rules_path()], Path(".")).rules
KEYS = report_keys(RULES, DEFAULT_ALIASES)
KEY = "k" * 40
RANK = {"info": 0, "warning": 1, "critical": 2}


def fired(run_dir: Path, now: float) -> dict[str, str]:
    """The rules that fire on the run's first tick in the daemon: rule -> severity."""
    report = run_tick(sources=[RundirSource("fixtures", [run_dir])], rules=RULES,
                      aliases=DEFAULT_ALIASES, store=MemoryStore(), now=now)
    return {t.alert.rule: str(t.alert.severity) for t in report.transitions
            if t.status == AlertStatus.FIRING}


def fixture_now(root: Path) -> float:
    """A minute after the fixture runs' newest record: what they look like just after they
    were written, however long ago the cached fixtures were (a hung run silent for more
    than 2 h would be taken as crashed)."""
    poll = RundirSource("probe", [root]).poll({}, frozenset(), 0.0)
    return max(s.heartbeat for s in poll.snapshots if s.heartbeat is not None) + 60


def test_the_verdict_and_the_default_rules_agree_on_every_fixture_run(wandb_runs):
    now = fixture_now(wandb_runs.root)
    verdicts = {}
    for scenario, run_dir in sorted(wandb_runs.runs.items()):
        alerts = fired(run_dir, now)
        snap, errors = read_run(run_dir, KEYS)
        report = characterize(snap, rules=RULES, aliases=DEFAULT_ALIASES, now=now)
        assert not errors
        by_rules = {r.rule: str(r.severity) for r in report.reasons if r.rule}
        assert by_rules == alerts, scenario
        trend_only = [r for r in report.reasons if r.rule is None]
        worst = max([RANK[s] for s in alerts.values()] + [1] * len(trend_only), default=0)
        assert report.health.rank == worst, scenario
        verdicts[scenario] = report.health
    assert verdicts["healthy"] == Health.HEALTHY
    assert verdicts["diverging"] == Health.WARNING  # no alert fires, and yet
    assert verdicts["exploding"] == verdicts["nan_loss"] == verdicts["crashed"] == (
        Health.CRITICAL)


def test_a_slowly_diverging_real_run_is_a_warning(wandb_runs):
    snap, _ = read_run(wandb_runs.runs["diverging"], KEYS)
    report = characterize(snap, rules=RULES, aliases=DEFAULT_ALIASES, now=time.time())
    assert report.alerts == ()
    [reason] = report.reasons
    assert reason.text.startswith("train/loss diverging") and report.health == Health.WARNING
    assert report.pace.total == 1000 and report.pace.step == 199
    assert report.config == {"lr": 0.03, "batch_size": 64, "seed": 7, "max_steps": 1000}


@pytest.mark.parametrize("scenario", ["healthy", "diverging", "exploding", "nan_loss",
                                      "crashed", "alias-2"])
def test_a_wandb_run_reads_and_judges_as_its_run_directory(wandb_server, wandb_runs,
                                                           scenario):
    path = wandb_server.load_rundir(wandb_runs.runs[scenario], entity="team", project="proj")
    now = time.time()
    access = WandbAccess(base_url=wandb_server.url, api_key=KEY)
    try:
        remote = load_run(parse_run(path), KEYS, access=access)
        requests = access.requests()
    finally:
        access.close()
    local, _ = read_run(wandb_runs.runs[scenario], KEYS)
    a = characterize(remote, rules=RULES, aliases=DEFAULT_ALIASES, now=now)
    b = characterize(local, rules=RULES, aliases=DEFAULT_ALIASES, now=now)
    assert requests <= 3  # the connection's Viewer, the run, its history
    assert (a.health, [r.text for r in a.reasons]) == (b.health, [r.text for r in b.reasons])
    assert repr(a.loss) == repr(b.loss) and a.pace.step == b.pace.step  # NaN != NaN
    assert [e.key for e in a.evals] == [e.key for e in b.evals]


# --- the commands -------------------------------------------------------------------------


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_characterize_command_on_a_run_directory(wandb_runs, capsys):
    data = run_json(capsys, "characterize", str(wandb_runs.runs["exploding"]))
    assert data["version"] == 1 and data["health"] == "critical"
    assert [r["rule"] for r in data["reasons"]] == ["grad-norm-exploding", "grad-norm-spiky"]
    assert data["grad_norm"]["holding"] == ["grad-norm-exploding", "grad-norm-spiky"]
    assert data["run"]["name"] == "exploding-grads" and data["state"] == "finished"
    assert data["pace"]["step"] == 39 and data["pace"]["eta_s"] is None


def test_characterize_prints_a_table_on_a_terminal_too(wandb_runs, capsys):
    assert main(["characterize", str(wandb_runs.runs["nan_loss"])]) == 0
    out = capsys.readouterr().out
    assert "critical" in out and "loss is nan at step 20" in out and "×" in out


def test_a_run_that_cannot_be_found_is_one_line_and_exit_2(tmp_path, wandb_server, capsys,
                                                            monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    for argv, named in ((["characterize", str(tmp_path)], str(tmp_path)),
                        (["characterize", "team/proj/nope"], "team/proj/nope"),
                        (["characterize", "nothing-here"], "nothing-here"),
                        (["compare", "team/proj/a", str(tmp_path)], "team/proj/a")):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err


def test_characterize_a_wandb_run_by_path_and_by_url(wandb_server, wandb_runs, capsys,
                                                     monkeypatch):
    path = wandb_server.load_rundir(wandb_runs.runs["healthy"], entity="team", project="proj")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    by_path = run_json(capsys, "characterize", path)
    by_url = run_json(capsys, "characterize", f"{wandb_server.url}/team/proj/runs/"
                                              f"{path.rsplit('/', 1)[-1]}")
    assert by_path["health"] == by_url["health"] == "healthy"
    assert by_path["run"]["path"] == by_url["run"]["path"] == path
    assert [e["key"] for e in by_path["evals"]] == ["eval/loss", "eval/accuracy"]


def test_compare_command_names_config_differences_and_a_winner(wandb_runs, capsys):
    data = run_json(capsys, "compare", str(wandb_runs.runs["healthy"]),
                    str(wandb_runs.runs["diverging"]))
    assert data["config"][0] == {"key": "lr", "a": 0.001, "b": 0.03}
    assert [p["step"] for p in data["loss"]][-1] == 59  # the last step both reached
    assert data["winner"] == "a" and "diverging is warning" in data["reasons"][0]


def test_watch_command_over_run_directories(wandb_runs, capsys):
    when = datetime.fromtimestamp(fixture_now(wandb_runs.root), UTC)
    with freeze_time(when):
        data = run_json(capsys, "watch", "--rundir", str(wandb_runs.root), "--hours", "100000")
    running = {r["run"]["name"] for r in data["running"]}
    ended = [(r["run"]["name"], r["state"]) for r in data["ended"]]
    assert running == {"hung", "killed"}
    assert ("crashed", "failed") in ended and ("healthy", "finished") in ended
    states = [s for _, s in ended]
    assert states == sorted(states, key=["crashed", "failed", "killed", "preempted",
                                         "finished"].index)  # bad news first


def test_watch_command_over_a_wandb_entity(wandb_server, wandb_runs, capsys, monkeypatch):
    for scenario in ("healthy", "exploding", "killed"):
        wandb_server.load_rundir(wandb_runs.runs[scenario], entity="team", project="proj")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    data = run_json(capsys, "watch", "team", "--projects", "proj", "--hours", "100000")
    assert [r["run"]["name"] for r in data["running"]] == ["killed"]
    assert {r["run"]["name"]: r["health"] for r in data["ended"]} == {
        "exploding-grads": "critical", "healthy": "healthy"}


def test_watch_command_over_a_configs_sources(wandb_runs, tmp_path, capsys):
    config = tmp_path / "runwatch.yaml"
    healthy, crashed = wandb_runs.runs["healthy"], wandb_runs.runs["crashed"]
    config.write_text(f"sources:\n  - {{type: rundir, name: a, path: {healthy}}}\n"
                      f"  - {{type: rundir, name: b, path: {crashed}}}\n"
                      "store: sqlite:///state.db\n")
    data = run_json(capsys, "watch", "--config", str(config), "--hours", "100000")
    assert [(r["run"]["name"], r["health"]) for r in data["ended"]] == [
        ("crashed", "critical"), ("healthy", "healthy")]


def test_with_a_config_the_daemons_firing_alerts_count(wandb_runs, tmp_path, capsys):
    from runwatch.model import AlertState, Severity, fingerprint
    from runwatch.store.base import open_store

    run_dir = wandb_runs.runs["healthy"]
    config = tmp_path / "runwatch.yaml"
    config.write_text(f"sources:\n  - {{type: rundir, path: {run_dir}}}\n"
                      "store: sqlite:///state.db\n")
    snap, _ = read_run(run_dir, KEYS)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    told = AlertState(fingerprint=fingerprint("told", snap.ref), rule="told", run=snap.ref,
                      severity=Severity.WARNING, status=AlertStatus.FIRING,
                      summary="the channel was told")
    store.commit_tick(source="rundir", alerts=[told], cursors={}, now=time.time())
    store.close()
    data = run_json(capsys, "characterize", str(run_dir), "--config", str(config))
    assert data["health"] == "warning"
    assert [(r["rule"], r["text"]) for r in data["reasons"]] == [
        ("told", "the channel was told")]
    assert run_json(capsys, "characterize", str(run_dir))["health"] == "healthy"


def test_a_damaged_log_is_reported_not_hidden(wandb_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy" / "wandb" / wandb_runs.runs["healthy"].name
    shutil.copytree(wandb_runs.runs["healthy"], run, symlinks=True)
    next(run.glob("run-*.wandb")).write_bytes(b"garbage")
    # no latest-run link in this wandb/ folder: its newest run directory is the one
    capsys.readouterr()
    assert main(["characterize", str(tmp_path / "copy"), "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["run"]["id"] == run.name.rsplit("-", 1)[-1]
    assert "not a W&B transaction log (bad header) at offset 0" in err
    assert "its log holds no record runwatch can read" in err


def test_watch_an_unknown_entity_is_one_line_and_exit_2(wandb_server, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server.url)
    assert main(["watch", "nobody", "--all-projects"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "runwatch: entity nobody: no projects this API key can see (unknown entity?)"
