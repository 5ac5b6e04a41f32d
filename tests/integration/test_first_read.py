"""A run seen for the first time is read from its window of newest rows, plus its head.

Logs are framed as wandb-core frames them (fixtures/logwriter) and, for the real SDK's
own framing, the fixture run with a config over 64 KiB (its run record spans FIRST,
MIDDLE and LAST chunks).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from fixtures import logwriter as lw
from runwatch.checks import RULE_ADAPTER
from runwatch.model import AlertStatus, RunState
from runwatch.sources import firstread, rundir
from runwatch.sources.runlog import RunLog
from runwatch.sources.wandbfile import BLOCK_SIZE, HISTORY, LogReader, history_starts
from runwatch.store.memory import MemoryStore
from runwatch.tick import history_needed, run_tick
from runwatch.window import FULL, Window, parse_first_read

# Every test reads logs both ways: compiled and pure Python (conftest: reader_path).
pytestmark = pytest.mark.usefixtures("reader_path")

T0 = 1_800_000_000.0
WANTED = frozenset({"train/loss", "train/grad_norm"})


def write_run(root: Path, rows: int, *, spike_at: int | None = None, exit_code: int | None = 0
              ) -> Path:
    """A run directory whose log holds ``rows`` steps (one row a second from T0)."""
    run_dir = root / "wandb" / "offline-run-20260101_000000-firstrd"
    run_dir.mkdir(parents=True)
    records = [lw.run(1, run_id="firstrd", name="first-read", project="proj",
                      config={"lr": 0.1, "vocab": ["tok"] * 20_000})]
    num = 2
    for step in range(rows):
        loss = 1000.0 if step == spike_at else 1.0 + (step % 7) / 100
        records += lw.step(num, step, {"train/loss": loss, "train/grad_norm": 0.5},
                           time=T0 + step)
        num += 3
    if exit_code is not None:
        records.append(lw.exit_(num, exit_code))
    lw.write(run_dir / "run-firstrd.wandb", records)
    return run_dir


def read(run_dir: Path, window: Window):
    log = str(run_dir / "run-firstrd.wandb")
    return rundir.read_records(RunLog(key=str(run_dir), log=log), os.stat(log), WANTED,
                               window)[:4]  # (without the alerts the code raised)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("long"), 40_000, spike_at=100)


def test_a_log_is_joined_at_any_block(tmp_path):
    payloads = [lw.history(n, n, {"x": "v" * (n * 997 % 50_000)}, time=T0) for n in range(1, 60)]
    path = tmp_path / "log.wandb"
    lw.write(path, payloads)
    ends = lw.record_ends(payloads)
    starts = [len(lw.HEADER), *ends[:-1]]
    for block in range(0, path.stat().st_size, BLOCK_SIZE):
        joined = history_starts(str(path), block or len(lw.HEADER))
        assert joined == [s for s in starts if s >= block], block
        # ...and a reader started at the first of them reads exactly those records
        if joined:
            got = [at for *_, at in LogReader(str(path), joined[0], kinds=(HISTORY,))]
            assert got == joined


def test_a_long_log_is_read_from_its_window_plus_its_head(long_run):
    full_run, full, _, _ = read(long_run, FULL)
    run, history, errors, changed = read(long_run, Window(rows=1000))
    assert errors == [] and changed
    loss = history["train/loss"]
    assert loss.steps == full["train/loss"].steps[-1000:]  # exactly the newest 1,000 rows
    assert loss.values == full["train/loss"].values[-1000:]
    # the head: identity and config from the run record, which spans several chunks
    assert (run.run_id, run.name, run.project) == ("firstrd", "first-read", "proj")
    assert run.config == full_run.config and len(run.config["vocab"]) == 20_000
    assert run.started == full_run.started
    # the tail: state, progress, heartbeat, summary of the keys in the window
    assert run.state is RunState.FINISHED
    assert (run.last_step, run.progress, run.heartbeat) == (
        full_run.last_step, full_run.progress, full_run.heartbeat)
    assert run.summary_view() == full_run.summary_view()
    assert run.offset == full_run.offset  # the next read goes on from the same place


def test_the_window_goes_back_as_far_as_steps_and_seconds_need(long_run):
    _, full, _, _ = read(long_run, FULL)
    steps = full["train/loss"].steps
    _, by_steps, _, _ = read(long_run, Window(rows=10, steps=5000))
    assert by_steps["train/loss"].steps[0] == steps[-1] - 5000
    _, by_time, _, _ = read(long_run, parse_first_read("3h"))  # a row a second: 10,800 rows
    times = by_time["train/loss"].times
    assert times[-1] - times[0] == 3 * 3600
    _, everything, _, _ = read(long_run, Window(rows=10**9))  # more than the log: all of it
    assert everything["train/loss"].steps == steps


def test_a_short_log_is_read_whole(tmp_path):
    run_dir = write_run(tmp_path, 500)
    _, history, _, _ = read(run_dir, Window(rows=10))
    assert len(history["train/loss"].steps) == 500


def test_after_the_first_read_the_cursor_reads_only_new_rows(tmp_path):
    run_dir = write_run(tmp_path, 30_000, exit_code=None)
    source = rundir.RundirSource("local", [tmp_path], first_read=Window(rows=200),
                                 dead_after=math.inf)
    first = source.poll({}, WANTED, T0 + 40_000)
    [snap] = first.snapshots
    assert snap.history["train/loss"].steps == tuple(range(29_800, 30_000))
    assert snap.state is RunState.RUNNING
    log = run_dir / "run-firstrd.wandb"
    lw.append(log, [*lw.step(10**6, 30_000, {"train/loss": 2.0}, time=T0 + 30_000),
                    lw.exit_(10**6 + 3, 1)])
    [again] = source.poll(first.cursors, WANTED, T0 + 40_001).snapshots
    assert again.history["train/loss"].steps == (30_000,)
    assert again.state is RunState.FAILED and again.ref.name == "first-read"


def test_a_spike_that_recovered_before_the_window_is_not_announced(long_run, tmp_path):
    rules = [RULE_ADAPTER.validate_python({
        "name": "loss-spike", "kind": "spike", "metric": "train/loss", "severity": "warning",
        "resolve_on_end": False})]
    # The spike (step 100) is 39,900 rows back: outside the default 200-row window.
    quiet = run_tick(sources=[rundir.RundirSource("local", [long_run.parent.parent])],
                     rules=rules, aliases={}, store=MemoryStore(), now=T0 + 50_000)
    assert quiet.transitions == () and quiet.runs_checked == 1
    # Read whole (first_read: all), the same run announces it.
    loud = run_tick(sources=[rundir.RundirSource("local", [long_run.parent.parent],
                                                 first_read=FULL)],
                    rules=rules, aliases={}, store=MemoryStore(), now=T0 + 50_000)
    assert [t.status for t in loud.transitions] == [AlertStatus.FIRING]
    assert loud.transitions[0].alert.step == 100


def test_the_rules_widen_the_window():
    rules = [RULE_ADAPTER.validate_python(rule) for rule in (
        {"name": "s", "kind": "spike", "metric": "m", "severity": "warning", "window": 3000},
        {"name": "p", "kind": "plateau", "metric": "m", "severity": "info",
         "patience": "20000 steps"},
        {"name": "t", "kind": "threshold", "metric": "m", "op": ">", "value": 1,
         "severity": "info", "for": "2h"},
        {"name": "g", "kind": "progress", "older_than": "30m", "severity": "info",
         "window": 400},
        {"name": "h", "kind": "heartbeat", "older_than": "30m", "severity": "info"},
        {"name": "a", "kind": "absent", "metric": "eval/loss", "older_than": "90m",
         "severity": "info"},
    )]
    assert history_needed(rules) == Window(rows=3000, steps=20_000, seconds=7200.0)
    assert history_needed(rules[-1:]) == Window(seconds=5400.0)
    source = rundir.RundirSource("local", [])
    assert source.first_read | history_needed(rules) == Window(rows=3000, steps=20_000,
                                                               seconds=7200.0)
    assert source.first_read | history_needed(rules[-2:-1]) == Window(rows=200)


@pytest.mark.parametrize(("text", "window"), [
    (5000, Window(rows=5000)), ("5000 rows", Window(rows=5000)),
    ("50000 steps", Window(rows=1, steps=50_000)), ("6h", Window(rows=1, seconds=21_600.0)),
    ("all", FULL),
    ("5000", Window(rows=5000)),  # a number as text (${FIRST_READ:-5000}) is rows too
])
def test_first_read_values(text, window):
    assert parse_first_read(text) == window


@pytest.mark.parametrize("bad", [0, -5, True, "0s", "lots", 1.5, "0 steps", "0"])
def test_bad_first_read_values(bad):
    with pytest.raises(ValueError, match=r"first_read|duration"):
        parse_first_read(bad)


@pytest.mark.sdk
def test_a_real_sdk_log_joined_mid_way(wandb_runs, monkeypatch):
    """The SDK's own framing: the `long` run (2,000 steps, a run record over 64 KiB)
    read with a 100-row window, the thresholds scaled down to fit it."""
    monkeypatch.setattr(firstread, "WHOLE", 0)
    monkeypatch.setattr(firstread, "SEGMENT", BLOCK_SIZE)
    run_dir = wandb_runs.runs["long"]
    log = str(next(run_dir.glob("run-*.wandb")))
    key = str(run_dir)
    wanted = frozenset({"train/loss", "lr"})
    full_run, full, _, _, _ = rundir.read_records(RunLog(key=key, log=log), os.stat(log),
                                                  wanted)
    run, window, errors, _, _ = rundir.read_records(RunLog(key=key, log=log), os.stat(log),
                                                  wanted, Window(rows=100))
    assert errors == []
    assert window["train/loss"].steps == full["train/loss"].steps[-100:]
    assert window["lr"].values == full["lr"].values[-100:]
    assert run.config == full_run.config and len(run.config["vocab"]) == 8000
    assert (run.name, run.tags, run.state) == (full_run.name, full_run.tags, RunState.FINISHED)
    assert run.offset == full_run.offset


def test_first_read_in_the_config(tmp_path):
    from runwatch.config import ConfigError, load_config
    from runwatch.wiring import build_sources

    path = tmp_path / "runwatch.yaml"
    path.write_text("sources:\n  - type: rundir\n    path: runs\n    first_read: 2000 steps\n"
                    "rules: []\n")
    [source] = build_sources(load_config(path, env={}))
    assert source.first_read == Window(rows=1, steps=2000)
    path.write_text("sources:\n  - type: rundir\n    path: runs\n    first_read: lots\n"
                    "rules: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [line] = str(caught.value).splitlines()
    assert "runwatch.yaml" in line and "first_read" in line


def test_a_bad_header_stops_a_window_read_as_it_stops_a_whole_one(long_run, tmp_path):
    bad = tmp_path / "wandb" / long_run.name
    bad.mkdir(parents=True)
    raw = bytearray((long_run / "run-firstrd.wandb").read_bytes())
    raw[6] = 1  # log version 1: not one this reader knows
    (bad / "run-firstrd.wandb").write_bytes(bytes(raw))
    for window in (FULL, Window(rows=200)):
        run, history, errors, _ = read(bad, window)
        assert history == {} and run.offset == 0
        assert len(errors) == 1 and "unsupported log version 1 at offset 6" in errors[0]


def test_damage_just_past_the_head_is_left_to_the_window(long_run, tmp_path):
    """The head is read in windows of several blocks, so its reader may meet damage beyond
    the head's end (the first history row): that is not damage in the head, and the rows
    of the window, far from it, are all read."""
    damaged = tmp_path / "wandb" / long_run.name
    damaged.mkdir(parents=True)
    log = long_run / "run-firstrd.wandb"
    first_row = next(at for kind, *_, at in LogReader(str(log), kinds=(HISTORY,))
                     if kind == HISTORY)
    raw = bytearray(log.read_bytes())
    raw[first_row + 20_000] ^= 0xFF  # inside a record some 20 KB past the head
    (damaged / "run-firstrd.wandb").write_bytes(bytes(raw))
    _, whole, _, _ = read(long_run, Window(rows=200))
    run, history, errors, _ = read(damaged, Window(rows=200))
    assert history["train/loss"] == whole["train/loss"] and len(history["train/loss"]) == 200
    assert errors == [] and run.corrupt_at is None
