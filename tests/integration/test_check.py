"""`runwatch check` end to end: real SDK run directories, the default rules, SQLite, the
CLI's JSON — with time frozen at chosen moments instead of waited for."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from fixtures import logwriter as lw
from runwatch.cli import main
from runwatch.sources.rundir import RundirSource

pytestmark = pytest.mark.sdk


def at(seconds: float):
    return freeze_time(datetime.fromtimestamp(seconds, UTC))


def check(capsys, *args: str) -> dict:
    assert main(["check", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def fired(report: dict) -> set[tuple[str, str, str]]:
    return {(t["run"]["name"], t["rule"], t["status"]) for t in report["transitions"]}


@pytest.fixture
def runs(wandb_runs, tmp_path) -> Path:
    """A writable copy of every fixture run."""
    root = tmp_path / "runs"
    shutil.copytree(wandb_runs.root, root, symlinks=True)
    return root


def newest_record_time(root: Path) -> float:
    poll = RundirSource("probe", [root]).poll({}, frozenset(), 0.0)
    return max(s.heartbeat for s in poll.snapshots if s.heartbeat is not None)


def test_check_finds_what_needs_attention_once(runs, tmp_path, capsys):
    args = ["--rundir", str(runs), "--state-dir", str(tmp_path / "state")]
    t = newest_record_time(runs) + 60
    with at(t):
        first = check(capsys, *args)
    assert first["errors"] == []
    assert first["runs_checked"] == 17
    # Runs read for the first and last time: what fired on them resolves with them —
    # but a crash stays firing (state rules report the end itself).
    assert fired(first) == {
        ("exploding-grads", "grad-norm-exploding", "firing"),
        ("exploding-grads", "grad-norm-exploding", "resolved"),
        ("exploding-grads", "grad-norm-spiky", "firing"),
        ("exploding-grads", "grad-norm-spiky", "resolved"),
        ("nan-loss", "loss-nonfinite", "firing"),
        ("nan-loss", "loss-nonfinite", "resolved"),
        ("crashed", "run-crashed", "firing"),
        # (the run named as markup, to show it is text wherever it goes)
        ("<script>alert(1)</script>", "grad-norm-exploding", "firing"),
        ("<script>alert(1)</script>", "grad-norm-exploding", "resolved"),
        ("<script>alert(1)</script>", "grad-norm-spiky", "firing"),
        ("<script>alert(1)</script>", "grad-norm-spiky", "resolved"),
        # what the training code raised: told once a title
        ("code-alerts", "training-code-alert", "told"),
    }
    ended = next(x for x in first["transitions"]
                 if x["rule"] == "loss-nonfinite" and x["status"] == "resolved")
    assert ended["resolution"] == "run ended: finished"  # not "fixed"
    nan = next(x for x in first["transitions"] if x["rule"] == "loss-nonfinite")
    assert nan["value"] == "NaN" and nan["metric"] == "train/loss"
    assert nan["run"]["path"].endswith(nan["run"]["id"])  # the run dir: offline, no entity
    assert nan["summary"] == f"loss is nan at step {nan['step']}"

    with at(t + 60):  # a restart: same state file, nothing announced twice
        again = check(capsys, *args)
    assert again["transitions"] == [] and again["runs_checked"] == 2  # the two live ones

    with at(t + 11 * 60):  # the SIGKILLed processes never wrote again
        slow = check(capsys, *args)
    assert fired(slow) == {(name, "run-slow", "firing") for name in ("killed", "hung")}
    with at(t + 31 * 60):  # dead, not hung: the heartbeat rules say so, progress does not
        later = check(capsys, *args)
    assert fired(later) == {(name, "run-stalled", "firing") for name in ("killed", "hung")}


def test_dry_run_changes_nothing(runs, tmp_path, capsys):
    args = ["--rundir", str(runs), "--state-dir", str(tmp_path / "state")]
    with at(newest_record_time(runs) + 60):
        assert len(check(capsys, *args, "--dry-run")["transitions"]) == 14
        assert len(check(capsys, *args)["transitions"]) == 14


def live_run(root: Path, *, start: float, steps: int) -> tuple[Path, int]:
    """A run whose training loop logged ``steps`` rows, 10 s apart; returns (log, next num)."""
    run = root / "wandb" / "offline-run-20260101_000000-hung0001"
    run.mkdir(parents=True)
    log = run / "run-hung0001.wandb"
    records = [lw.run(1, run_id="hung0001", name="nccl-hang", project="pretrain", start=start)]
    num = 2
    for s in range(steps):
        records += lw.step(num, s, {"train/loss": 2.0, "train/grad_norm": 1.0},
                           time=start + 10 * s)
        num += 3
    lw.write(log, records)
    return log, num


def test_a_hung_loop_with_a_live_process_is_caught_by_progress(tmp_path, capsys):
    """wandb-core keeps writing system stats while the training loop is stuck: heartbeat
    fresh, progress stale. Only progress-stalled may fire — and resolve when rows return."""
    start = 1_800_000_000.0
    log, num = live_run(tmp_path / "runs", start=start, steps=30)
    last_row = start + 290
    beats = [lw.stats(num + i, time=last_row + 15 * (i + 1)) for i in range(160)]  # 40 min
    lw.append(log, beats)
    num += len(beats)
    args = ["--rundir", str(tmp_path / "runs"), "--state-dir", str(tmp_path / "state")]
    with at(last_row + 15 * 160 + 5):
        report = check(capsys, *args)
    assert fired(report) == {("nccl-hang", "progress-stalled", "firing")}
    (t,) = report["transitions"]
    assert t["step"] == 29 and t["summary"].startswith("no new step for 40m")

    lw.append(log, lw.step(num, 30, {"train/loss": 1.9, "train/grad_norm": 1.0},
                           time=last_row + 15 * 160 + 30))
    with at(last_row + 15 * 160 + 40):
        report = check(capsys, *args)
    assert fired(report) == {("nccl-hang", "progress-stalled", "resolved")}


def test_rows_appended_between_checks_are_evaluated_once(tmp_path, capsys):
    start = 1_800_000_000.0
    log, num = live_run(tmp_path / "runs", start=start, steps=10)
    args = ["--rundir", str(tmp_path / "runs"), "--state-dir", str(tmp_path / "state")]
    with at(start + 100):
        assert check(capsys, *args)["transitions"] == []
    lw.append(log, lw.step(num, 10, {"train/grad_norm": 50.0}, time=start + 100))
    num += 3
    with at(start + 110):
        report = check(capsys, *args)
    assert fired(report) == {("nccl-hang", "grad-norm-exploding", "firing"),
                             ("nccl-hang", "grad-norm-spiky", "firing")}
    # The spike is not read again: a calm row resolves both alerts.
    lw.append(log, lw.step(num, 11, {"train/grad_norm": 1.0}, time=start + 110))
    with at(start + 120):
        report = check(capsys, *args)
    assert fired(report) == {("nccl-hang", "grad-norm-exploding", "resolved"),
                             ("nccl-hang", "grad-norm-spiky", "resolved")}


def test_a_corrupt_log_is_one_warning_and_the_other_runs_are_checked(runs, tmp_path, capsys):
    log = next((runs / "crashed").rglob("run-*.wandb"))
    data = bytearray(log.read_bytes())
    data[200] ^= 0xFF  # inside the first records: a CRC mismatch
    log.write_bytes(bytes(data))
    args = ["--rundir", str(runs), "--state-dir", str(tmp_path / "state")]
    with at(newest_record_time(runs) + 60):
        report = check(capsys, *args)
    (error,) = report["errors"]
    assert str(log) in error and "offset" in error
    assert ("nan-loss", "loss-nonfinite", "firing") in fired(report)
    assert not any(t["run"]["name"] == "crashed" for t in report["transitions"])
    with at(newest_record_time(runs) + 120):
        assert check(capsys, *args)["errors"] == []  # reported once, not every tick


def test_check_on_a_postgresql_store_tells_each_change_once(runs, tmp_path, capsys):
    """The same check with its state in PostgreSQL: the first tells what fired, the
    second — a new process, the state read back from the server — tells nothing again."""
    from pgtest import Schema
    from runwatch.model import AlertStatus
    from runwatch.store.base import open_store

    schema = Schema(tmp_path)
    try:
        config = tmp_path / "runwatch.yaml"
        config.write_text(f"sources:\n  - {{type: rundir, path: {runs}}}\n"
                          f"store: {schema.url}\n")
        t = newest_record_time(runs) + 60
        with at(t):
            first = check(capsys, "--config", str(config))
        assert ("crashed", "run-crashed", "firing") in fired(first)
        with at(t + 60):
            second = check(capsys, "--config", str(config))
        assert fired(second) == set() and second["errors"] == []
        store = open_store(schema.url)
        try:
            firing = {a.rule for a in store.alerts(status=AlertStatus.FIRING)}
            cursors = store.load_cursors("rundir")
        finally:
            store.close()
        assert "run-crashed" in firing and len(cursors) == first["runs_checked"]
    finally:
        schema.drop()
