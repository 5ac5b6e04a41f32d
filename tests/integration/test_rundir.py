"""RundirSource over real run directories written by the wandb SDK (see fixtures/runmaker)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from fixtures import logwriter as lw
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import RunSnapshot, RunState
from runwatch.sources import rundir
from runwatch.sources.base import Poll, Source
from runwatch.sources.wandbfile import HISTORY, SUMMARY, LogReader

# Every test reads logs both ways: compiled and pure Python (conftest: reader_path).
pytestmark = [pytest.mark.sdk, pytest.mark.usefixtures("reader_path")]

LOSS, GRAD, EVAL_LOSS, EVAL_ACC, STEP = (
    DEFAULT_ALIASES[name] for name in ("loss", "grad_norm", "eval_loss", "eval_accuracy", "step")
)
WANTED = frozenset(LOSS + GRAD + EVAL_LOSS + EVAL_ACC + STEP)
NOW = 2_000_000_000.0  # every poll here comes long after the runs' records


def RundirSource(*args, **kwargs) -> rundir.RundirSource:
    """The source, with no run taken as dead for its silence: polls here come long after
    the fixture runs wrote (``dead_after`` has tests of its own)."""
    kwargs.setdefault("dead_after", math.inf)
    return rundir.RundirSource(*args, **kwargs)


def by_name(poll: Poll) -> dict[str, RunSnapshot]:
    return {s.ref.name: s for s in poll.snapshots}


@pytest.fixture(scope="module")
def first_poll(wandb_runs) -> tuple[RundirSource, Poll]:
    source = RundirSource("local", [wandb_runs.root])
    return source, source.poll({}, WANTED, NOW)


def test_is_a_source(first_poll):
    source, poll = first_poll
    as_source: Source = source  # what wiring.build_sources relies on
    assert as_source.name == "local" and isinstance(poll, Poll)
    assert poll.errors == ()


def test_finds_every_run_once(wandb_runs, first_poll):
    _, poll = first_poll
    # each wandb/ dir has a latest-run symlink to one of its runs: still one snapshot each
    assert all((run.parent / "latest-run").is_symlink() for run in wandb_runs.runs.values())
    locations = sorted(s.ref.location for s in poll.snapshots)
    assert locations == sorted(str(run.resolve()) for run in wandb_runs.runs.values())
    assert set(poll.cursors) == set(locations)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("healthy", RunState.FINISHED),
        ("exploding-grads", RunState.FINISHED),
        ("nan-loss", RunState.FINISHED),
        ("crashed", RunState.FAILED),  # uncaught exception: the SDK records exit code 1
        ("interrupted", RunState.KILLED),  # KeyboardInterrupt: exit code 255
        ("preempted", RunState.PREEMPTED),  # mark_preempting, then a non-zero exit
        ("killed", RunState.RUNNING),  # SIGKILL: no exit record, the heartbeat goes stale
        ("hung", RunState.RUNNING),
        ("long", RunState.FINISHED),
    ],
)
def test_states(first_poll, name, state):
    assert by_name(first_poll[1])[name].state is state


def test_identity_tags_group_config(first_poll):
    healthy = by_name(first_poll[1])["healthy"]
    assert healthy.ref.source == "local"
    assert healthy.ref.project == "runwatch-fixtures"
    assert healthy.ref.entity == ""  # offline runs have no entity
    assert len(healthy.ref.id) == 8 and healthy.ref.location.endswith(healthy.ref.id)
    assert healthy.tags == ("fixture", "healthy", "baseline")
    assert healthy.group == "fixtures"
    assert healthy.config == {
        "lr": 0.001, "batch_size": 32, "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
    }
    assert healthy.started is not None and healthy.started < healthy.progress
    assert healthy.summary["best_eval_accuracy"] == 0.93
    assert healthy.summary["train/global_step"] == 59
    assert not any(key.startswith("_wandb") for key in healthy.summary)


def test_history_steps_times_and_keys(first_poll):
    healthy = by_name(first_poll[1])["healthy"]
    loss = healthy.history["train/loss"]
    assert loss.steps == tuple(range(60))
    assert loss.values[0] == 2.0
    assert list(loss.times) == sorted(loss.times)
    assert healthy.history["_timestamp"].values == healthy.history["_timestamp"].times
    assert healthy.history["eval/loss"].steps == (19, 39, 59)
    assert healthy.last_step == 59
    assert healthy.progress == loss.times[-1]
    assert {"train/loss", "train/grad_norm", "eval/accuracy", "_step", "_runtime"} <= healthy.keys
    assert "train/lr" not in healthy.history  # only wanted keys (and _timestamp) come back


@pytest.mark.parametrize("n", range(4))
def test_each_alias_key_is_read(first_poll, n):
    snap = by_name(first_poll[1])[f"alias-{n}"]
    expected = {
        LOSS[n % 4]: 20, GRAD[n % 3]: 20, STEP[n % 3]: 20, EVAL_LOSS[n % 2]: 4,
        EVAL_ACC[n % 2]: 4,
    }
    for key, count in expected.items():
        assert key in snap.keys
        assert len(snap.history[key]) == count, key
    assert snap.history[STEP[n % 3]].values[-1] == 19 * 8
    assert snap.config["keys"]["loss"] == LOSS[n % 4]
    assert snap.group == "aliases"


def test_nan_and_infinity(first_poll):
    snap = by_name(first_poll[1])["nan-loss"]
    values = snap.history["train/loss"].values
    assert all(math.isnan(v) for v in values[20:30])
    assert values[-1] == math.inf
    assert snap.history["train/grad_norm"].values[-1] == -math.inf
    assert snap.summary["train/loss"] == math.inf


def test_exploding_gradients(first_poll):
    grads = by_name(first_poll[1])["exploding-grads"].history["train/grad_norm"]
    assert max(grads.values) > 10 and grads.values[0] == 1.0


def test_nested_keys_and_config_updates(first_poll):
    snap = by_name(first_poll[1])["nested-keys"]
    assert {"train.loss", "train.grad_norm", "flag", "note"} <= snap.keys
    assert snap.config["later"] == {"warmup": 100}
    assert snap.summary["final"] == {"loss": 0.1}
    assert snap.last_step == 90


def test_hung_run_heartbeat_is_newer_than_its_progress(first_poll):
    snap = by_name(first_poll[1])["hung"]
    assert snap.state is RunState.RUNNING
    assert snap.heartbeat - snap.progress > 0.3  # console output and stats kept coming
    killed = by_name(first_poll[1])["killed"]
    assert killed.heartbeat == pytest.approx(killed.progress, abs=1.0)


def test_ended_runs_are_not_reopened(wandb_runs, first_poll, monkeypatch):
    source, poll = first_poll
    opened = []

    class Spy(LogReader):
        def __init__(self, path, *args, **kwargs):
            opened.append(path)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(rundir, "LogReader", Spy)
    again = source.poll(poll.cursors, WANTED, NOW + 60)
    assert opened == []
    # live runs still come back each tick, from their cursors: ages keep being checked
    assert sorted(by_name(again)) == ["hung", "killed"]
    assert all(s.history == {} for s in again.snapshots)
    assert again.cursors == {} and again.errors == ()
    # a new process reading the stored cursors also has nothing to re-read
    fresh = RundirSource("local", [wandb_runs.root])
    restarted = fresh.poll(poll.cursors, WANTED, NOW + 60)
    assert opened == [] and sorted(by_name(restarted)) == ["hung", "killed"]
    assert by_name(restarted)["hung"] == by_name(again)["hung"]


def copy_run(wandb_runs, scenario: str, dest: Path) -> Path:
    """A writable copy of a fixture run under ``dest/wandb/``."""
    src = wandb_runs.runs[scenario]
    target = dest / "wandb" / src.name
    shutil.copytree(src, target, symlinks=True)
    return target


def test_depth_limit(wandb_runs, tmp_path):
    copy_run(wandb_runs, "healthy", tmp_path / "a")
    copy_run(wandb_runs, "crashed", tmp_path / "a" / "b" / "c")
    copy_run(wandb_runs, "exploding", tmp_path / "a" / "b" / "c" / "node_modules")
    copy_run(wandb_runs, "nan_loss", tmp_path / "a" / ".hidden")
    names = lambda depth: sorted(  # noqa: E731
        by_name(RundirSource("d", [tmp_path], depth=depth).poll({}, WANTED, NOW)))
    assert names(0) == []
    assert names(1) == ["healthy"]  # tmp/a/wandb
    assert names(2) == ["healthy"]
    assert names(3) == ["crashed", "healthy"]  # tmp/a/b/c/wandb
    assert names(10) == ["crashed", "healthy"]  # never node_modules or hidden dirs
    assert names(0) == [] and sorted(by_name(
        RundirSource("d", [tmp_path / "a"], depth=0).poll({}, WANTED, NOW))) == ["healthy"]


def test_paths_may_name_a_wandb_dir_or_a_run_dir(wandb_runs):
    run = wandb_runs.runs["healthy"]
    for path in (run, run.parent, run.parent / "latest-run"):
        poll = RundirSource("p", [path]).poll({}, WANTED, NOW)
        assert [s.ref.name for s in poll.snapshots] == ["healthy"]


def test_symlinked_trees_are_followed_once(wandb_runs, tmp_path):
    (tmp_path / "link1").symlink_to(wandb_runs.runs["healthy"].parent.parent)
    (tmp_path / "link2").symlink_to(wandb_runs.runs["healthy"].parent.parent)
    poll = RundirSource("s", [tmp_path]).poll({}, WANTED, NOW)
    assert [s.ref.name for s in poll.snapshots] == ["healthy"]


def test_new_runs_appear_without_a_full_rescan(wandb_runs, tmp_path):
    copy_run(wandb_runs, "healthy", tmp_path)
    source = RundirSource("n", [tmp_path], rescan=3600)
    first = source.poll({}, WANTED, NOW)
    copy_run(wandb_runs, "crashed", tmp_path)
    os.utime(tmp_path / "wandb", ns=(0, 10**18))  # make sure the directory mtime changed
    second = source.poll(first.cursors, WANTED, NOW + 1)
    assert sorted(by_name(second)) == ["crashed"]


def test_incremental_reads_each_step_exactly_once(wandb_runs, tmp_path):
    original = wandb_runs.log("long").read_bytes()
    run = copy_run(wandb_runs, "long", tmp_path)
    log = next(run.glob("*.wandb"))
    # A live run: the file grows in pieces that end anywhere, records and blocks included.
    cuts = [7, 5000, 40_000, 100_003, 2 * lw.BLOCK * 7, 500_001, len(original) - 10]
    source = RundirSource("inc", [tmp_path])
    cursors: dict[str, str] = {}
    steps: list[int] = []
    summary_steps: list[int] = []
    states = []
    for cut in [*cuts, len(original)]:
        log.write_bytes(original[:cut])
        poll = source.poll(cursors, WANTED, NOW)
        assert poll.errors == ()
        cursors.update(poll.cursors)
        (snap,) = poll.snapshots
        states.append(snap.state)
        if "train/loss" in snap.history:
            steps += snap.history["train/loss"].steps
            assert snap.history["_timestamp"].steps == snap.history["train/loss"].steps
        summary_steps.append(snap.summary.get("_step"))
    assert steps == list(range(2000))
    assert states[-1] is RunState.FINISHED and set(states[:-1]) == {RunState.RUNNING}
    assert summary_steps[-1] == 1999
    # the last poll saw the exit record: the run is done, and never reported again
    assert source.poll(cursors, WANTED, NOW).snapshots == ()


def test_incremental_appends_with_the_writer(tmp_path):
    T0 = 1_700_000_000.0
    run = tmp_path / "wandb" / "offline-run-20260101_000000-abcd1234"
    run.mkdir(parents=True)
    log = run / "run-abcd1234.wandb"
    lw.write(log, [lw.run(1, run_id="abcd1234", name="live", tags=("t",), config={"lr": 1},
                          start=T0 - 10)])
    source = RundirSource("w", [tmp_path])
    cursors: dict[str, str] = {}
    num = 2
    seen = []
    for tick in range(5):
        records = []
        for i in range(100):
            step = tick * 100 + i
            records += lw.step(num, step, {"loss": 1.0 / (step + 1)}, time=T0 + step)
            num += 3
        records.append(lw.stats(num, time=T0 + tick * 100 + 150))
        num += 1
        lw.append(log, records)
        poll = source.poll(cursors, WANTED, NOW)
        cursors.update(poll.cursors)
        (snap,) = poll.snapshots
        seen += snap.history["loss"].steps
        assert snap.last_step == tick * 100 + 99
        assert snap.heartbeat == pytest.approx(T0 + tick * 100 + 150, abs=1e-3)
        assert snap.progress == T0 + tick * 100 + 99
        assert snap.summary["loss"] == 1.0 / (tick * 100 + 100)
    assert seen == list(range(500))
    assert snap.config == {"lr": 1} and snap.tags == ("t",) and snap.ref.name == "live"


def test_a_failed_evaluation_gets_the_same_rows_again(wandb_runs, tmp_path):
    copy_run(wandb_runs, "healthy", tmp_path)
    source = RundirSource("r", [tmp_path])
    first = source.poll({}, WANTED, NOW)
    # the caller did not store the cursors: the next poll reads the same rows again
    again = source.poll({}, WANTED, NOW)
    assert by_name(again)["healthy"].history == by_name(first)["healthy"].history
    # and with a cursor from an older state, from where that cursor stands
    assert source.poll(first.cursors, WANTED, NOW).snapshots == ()


def test_corrupt_file_is_reported_once_and_other_runs_still_checked(wandb_runs, tmp_path):
    run = copy_run(wandb_runs, "long", tmp_path)
    copy_run(wandb_runs, "healthy", tmp_path)
    log = next(run.glob("*.wandb"))
    starts = [at for kind, *_, at in LogReader(str(log)) if kind == HISTORY]
    raw = bytearray(log.read_bytes())
    bad_at = starts[1000]  # a history record in the middle
    raw[bad_at + 12] ^= 0x55
    log.write_bytes(bytes(raw))
    source = RundirSource("c", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    assert poll.errors == (
        f"{log}: bad CRC at offset {bad_at}; records before it are used",
    )
    snaps = by_name(poll)
    assert snaps["healthy"].state is RunState.FINISHED
    long = snaps["long"]
    assert long.state is RunState.RUNNING  # the exit record is past the damage
    assert 0 < len(long.history["train/loss"]) < 2000
    # the same damage is not reported again, even when the file changes
    with open(log, "ab") as file:
        file.write(b"\x00")
    again = source.poll(poll.cursors, WANTED, NOW)
    assert again.errors == ()
    cursor = json.loads(again.cursors[long.ref.location])
    assert cursor["corrupt_at"] == bad_at


def test_not_a_wandb_log(tmp_path):
    run = tmp_path / "wandb" / "run-20260101_000000-zzzz0000"
    run.mkdir(parents=True)
    (run / "run-zzzz0000.wandb").write_bytes(b"garbage" * 10)
    poll = RundirSource("g", [tmp_path]).poll({}, WANTED, NOW)
    assert len(poll.errors) == 1 and "bad header" in poll.errors[0]
    assert "run-zzzz0000.wandb" in poll.errors[0]
    (snap,) = poll.snapshots
    assert snap.state is RunState.RUNNING and snap.ref.id == "zzzz0000"


def test_run_without_a_log_yet_and_empty_log(tmp_path):
    (tmp_path / "wandb" / "run-20260101_000000-aaaa0000").mkdir(parents=True)
    empty = tmp_path / "wandb" / "run-20260101_000000-bbbb0000"
    empty.mkdir()
    (empty / "run-bbbb0000.wandb").write_bytes(lw.HEADER)
    os.utime(empty / "run-bbbb0000.wandb", (1_700_000_000, 1_700_000_000))
    poll = RundirSource("e", [tmp_path]).poll({}, WANTED, NOW)
    assert poll.errors == ()
    (snap,) = poll.snapshots
    # nothing written yet but the header: the log's mtime is the only sign of life
    assert snap.ref.id == "bbbb0000" and snap.heartbeat == 1_700_000_000
    assert snap.state is RunState.RUNNING and snap.history == {}


def test_cursor_from_elsewhere_is_ignored(wandb_runs, tmp_path):
    run = copy_run(wandb_runs, "healthy", tmp_path)
    source = RundirSource("x", [tmp_path])
    poll = source.poll({str(run.resolve()): "not json"}, WANTED, NOW)
    assert len(by_name(poll)["healthy"].history["train/loss"]) == 60


def folded_summary(path: Path) -> dict:
    """The summary the slow way: every summary record parsed and applied in order."""
    fold: dict[str, str] = {}
    for _, data, start, end, _, _, _ in LogReader(str(path), kinds={SUMMARY}):
        record = pb.SummaryRecord.FromString(data[start:end])
        for item in record.update:
            fold[".".join(item.nested_key) or item.key] = item.value_json
        for item in record.remove:
            fold.pop(".".join(item.nested_key) or item.key, None)
    return {k: json.loads(v) for k, v in fold.items() if not k.startswith("_wandb")}


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe


def test_summary_equals_a_full_fold_on_real_runs(wandb_runs, first_poll):
    snaps = {s.ref.location: s for s in first_poll[1].snapshots}
    for scenario, run in wandb_runs.runs.items():
        expected = folded_summary(wandb_runs.log(scenario))
        expected.pop("_runtime", None)  # only in the runtime records, which are skipped
        got = dict(snaps[str(run.resolve())].summary)
        got.pop("_runtime", None)
        assert same(got, expected), scenario


@pytest.mark.parametrize("seed", range(6))
def test_summary_equals_a_full_fold_whatever_the_order(tmp_path, seed):
    # Rows with changing key sets, explicit summary updates and removals, metric
    # definitions, read in pieces: the deferred step summaries must fold like all of them.
    rng = random.Random(seed)
    run = tmp_path / "wandb" / "offline-run-20260101_000000-rand0000"
    run.mkdir(parents=True)
    log = run / "run-rand0000.wandb"
    records = [lw.run(1, run_id="rand0000", name="r")]
    num = 2
    for step in range(400):
        shape = rng.choice([("a",), ("a", "b"), ("a", "c"), ("b", "c"), ("d",)])
        values = {key: rng.random() for key in shape}
        records += lw.step(num, step, values, time=1e9 + step)
        num += 3
        roll = rng.random()
        if roll < 0.05:
            records.append(lw.summary(num, {rng.choice("abcde"): -step}))
        elif roll < 0.07:
            records.append(lw.summary_remove(num, rng.choice("abcd")))
        elif roll < 0.08:
            records.append(lw.metric(num, rng.choice("abcd")))
        elif roll < 0.10:
            records.append(lw.stats(num, time=1e9 + step))
        num += 1
    lw.write(log, records)
    full = log.read_bytes()
    source = RundirSource("f", [tmp_path])
    cursors: dict[str, str] = {}
    cuts = [*sorted(rng.sample(range(8, len(full)), 5)), len(full)]
    for cut in cuts:
        log.write_bytes(full[:cut])
        poll = source.poll(cursors, WANTED, NOW)
        cursors.update(poll.cursors)
        (snap,) = poll.snapshots
        expected = folded_summary(log)
        got = dict(snap.summary)
        got.pop("_runtime", None)
        expected.pop("_runtime", None)
        assert same(got, expected), cut


def test_preempting_without_exit_is_preempted(tmp_path):
    run = tmp_path / "wandb" / "run-20260101_000000-pre00000"
    run.mkdir(parents=True)
    log = run / "run-pre00000.wandb"
    lw.write(log, [lw.run(1, run_id="pre00000"), *lw.step(2, 0, {"loss": 1.0}, time=1e9),
                   lw.preempting(5)])
    (snap,) = RundirSource("p", [tmp_path]).poll({}, WANTED, NOW).snapshots
    assert snap.state is RunState.PREEMPTED
    lw.append(log, [lw.exit_(6, 0)])  # it checkpointed and finished after all
    (snap,) = RundirSource("p", [tmp_path]).poll({}, WANTED, NOW).snapshots
    assert snap.state is RunState.FINISHED


def three_steps(root: Path) -> tuple[Path, list[bytes], list[int]]:
    """A run logging the same key three times: the last step's summary is the one folded."""
    run = root / "wandb" / "offline-run-20260101_000000-sums0000"
    run.mkdir(parents=True)
    log = run / "run-sums0000.wandb"
    written = [lw.run(1, run_id="sums0000", name="sums"),
               *lw.step(2, 0, {"loss": 1.0}, time=1e9), *lw.step(5, 1, {"loss": 0.5}, time=1e9 + 1),
               *lw.step(8, 2, {"loss": 0.25}, time=1e9 + 2)]
    lw.write(log, written)
    return log, written, [7, *lw.record_ends(written)[:-1]]


def damage(log: Path, written: list[bytes], starts: list[int], index: int) -> int:
    """Flip a bit near the end of record ``index`` (its framing intact); its offset."""
    raw = bytearray(log.read_bytes())
    raw[starts[index] + 7 + len(written[index]) - 2] ^= 0x01
    log.write_bytes(bytes(raw))
    return starts[index]


def test_a_damaged_folded_step_summary_is_reported_and_skipped(tmp_path):
    log, written, starts = three_steps(tmp_path)
    assert pb.Record.FromString(written[8]).WhichOneof("record_type") == "summary"
    bad_at = damage(log, written, starts, 8)  # the summary of the last step: folded
    source = RundirSource("d", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    assert poll.errors == (
        f"{log}: bad CRC at offset {bad_at}; that record is skipped, the rest of the log is used",
    )
    (snap,) = poll.snapshots
    assert snap.history["loss"].values == (1.0, 0.5, 0.25)  # the rest of the run is used
    assert snap.last_step == 2 and snap.ref.name == "sums"
    assert "loss" not in snap.summary  # the damaged summary was not folded
    # reported once: the next read starts past it, and folds the next step's summary
    lw.append(log, lw.step(11, 3, {"loss": 0.125}, time=1e9 + 3))
    again = source.poll(poll.cursors, WANTED, NOW)
    assert again.errors == ()
    (snap,) = again.snapshots
    assert snap.summary["loss"] == 0.125 and snap.history["loss"].values == (0.125,)


def test_a_damaged_superseded_step_summary_is_never_checked(tmp_path):
    clean = three_steps(tmp_path / "clean")[0]
    log, written, starts = three_steps(tmp_path / "damaged")
    damage(log, written, starts, 5)  # the summary of step 1: step 2's supersedes it
    assert log.read_bytes() != clean.read_bytes()
    poll = RundirSource("d", [tmp_path / "damaged"]).poll({}, WANTED, NOW)
    assert poll.errors == ()
    (expected,) = RundirSource("d", [tmp_path / "clean"]).poll({}, WANTED, NOW).snapshots
    (snap,) = poll.snapshots
    assert snap.summary == expected.summary and snap.summary["loss"] == 0.25
    assert snap.history == expected.history and snap.keys == expected.keys


def test_a_damaged_history_record_is_always_caught(tmp_path):
    log, written, starts = three_steps(tmp_path)
    bad_at = damage(log, written, starts, 6)  # the history record of step 1
    poll = RundirSource("d", [tmp_path]).poll({}, WANTED, NOW)
    assert poll.errors == (f"{log}: bad CRC at offset {bad_at}; records before it are used",)
    (snap,) = poll.snapshots
    assert snap.history["loss"].values == (1.0,)


def test_missing_or_unusable_paths_are_reported_each_poll(wandb_runs, tmp_path, monkeypatch):
    copy_run(wandb_runs, "healthy", tmp_path / "good")
    missing = tmp_path / "nonexistent"
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    scandir = os.scandir

    def guarded(path="."):
        if os.fspath(path) == str(locked):  # root reads anything: deny it by hand
            raise PermissionError(13, "Permission denied", str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    source = RundirSource("rundir", [missing, a_file, locked, tmp_path / "good"], rescan=3600)
    expected = (
        f"rundir: {missing}: no such directory",
        f"rundir: {a_file}: not a directory",
        f"rundir: {locked}: permission denied",
    )
    first = source.poll({}, WANTED, NOW)
    assert first.errors == expected
    assert [s.ref.name for s in first.snapshots] == ["healthy"]  # the other path still searched
    # a config problem: said every poll (one line per path), until the path is usable
    assert source.poll(first.cursors, WANTED, NOW + 1).errors == expected
    missing.mkdir()
    assert source.poll(first.cursors, WANTED, NOW + 3600).errors == expected[1:]


def small_run(root: Path, run_id: str = "abcd1234", name: str = "small") -> Path:
    """A run directory under ``root/wandb`` with a short log; the log's path."""
    run = root / "wandb" / f"run-20260101_000000-{run_id}"
    run.mkdir(parents=True)
    log = run / f"run-{run_id}.wandb"
    lw.write(log, [lw.run(1, run_id=run_id, name=name),
                   *lw.step(2, 0, {"loss": 1.0}, time=1e9),
                   *lw.step(5, 1, {"loss": 0.5}, time=1e9 + 1)])
    return log


def test_a_looping_wandb_symlink_is_skipped(tmp_path):
    small_run(tmp_path / "real")
    (tmp_path / "other").mkdir()
    os.symlink("wandb", tmp_path / "other" / "wandb")  # points at itself
    source = RundirSource("l", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    (snap,) = poll.snapshots
    assert snap.ref.name == "small" and snap.last_step == 1


def test_a_run_under_a_non_utf8_directory_name(tmp_path):
    from runwatch.model import fingerprint

    parent = tmp_path / os.fsdecode(b"proj\xff")
    log = small_run(parent, run_id="bad0utf8")
    source = RundirSource("u", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    assert poll.errors == ()
    (snap,) = poll.snapshots
    assert snap.last_step == 1 and snap.ref.id == "bad0utf8"
    snap.ref.location.encode("utf-8")
    fingerprint("rule", snap.ref)
    (key,) = poll.cursors
    key.encode("utf-8")
    assert key == snap.ref.location and "proj\\xff" in key
    # and it reads on from its cursor
    lw.append(log, lw.step(8, 2, {"loss": 0.25}, time=1e9 + 2))
    (snap,) = source.poll(poll.cursors, WANTED, NOW).snapshots
    assert snap.history["loss"].values == (0.25,)


def test_an_infinite_step_is_not_a_crash(tmp_path):
    log = small_run(tmp_path)
    for num, raw in ((8, "Infinity"), (9, "1e400"), (10, "-Infinity")):
        record = pb.Record(num=num)
        for key, value in (("_step", raw), ("_timestamp", "1000000005"), ("loss", "0.1")):
            item = record.history.item.add()
            item.nested_key.append(key)
            item.value_json = value
        lw.append(log, [record.SerializeToString()])
    lw.append(log, lw.step(11, 7, {"loss": 0.05}, time=1e9 + 7))
    poll = RundirSource("i", [tmp_path]).poll({}, WANTED, NOW)
    assert poll.errors == ()
    (snap,) = poll.snapshots
    assert snap.history["loss"].steps == (0, 1, 1, 1, 1, 7)  # not a number: the step before
    assert snap.last_step == 7


def test_a_run_whose_read_fails_is_still_checked_and_reported_once(tmp_path, monkeypatch):
    log = small_run(tmp_path)
    source = RundirSource("f", [tmp_path])
    cursors: dict[str, str] = {}
    poll = source.poll(cursors, WANTED, NOW)
    cursors.update(poll.cursors)
    (before,) = poll.snapshots

    def boom(self, reader):
        raise RuntimeError("boom")

    lw.append(log, lw.step(8, 2, {"loss": 0.25}, time=1e9 + 2))
    with monkeypatch.context() as patch:
        patch.setattr(rundir.LogRead, "consume", boom)
        for tick in range(3):
            poll = source.poll(cursors, WANTED, NOW)
            assert len(poll.errors) == (1 if tick == 0 else 0)
            assert all("boom" in error for error in poll.errors)
            # the run is still there, as it was before: its heartbeat keeps being checked
            (snap,) = poll.snapshots
            assert snap.ref == before.ref and snap.last_step == 1
            assert snap.heartbeat == before.heartbeat and snap.history == {}
            cursors.update(poll.cursors)
    poll = source.poll(cursors, WANTED, NOW)  # it reads again
    assert poll.errors == () and source._reported == {}
    (snap,) = poll.snapshots
    assert snap.history["loss"].values == (0.25,)
    cursors.update(poll.cursors)
    lw.append(log, lw.step(11, 3, {"loss": 0.125}, time=1e9 + 3))
    with monkeypatch.context() as patch:
        patch.setattr(rundir.LogRead, "consume", boom)
        poll = source.poll(cursors, WANTED, NOW)  # failing again: said again
    assert len(poll.errors) == 1 and "boom" in poll.errors[0]


@pytest.mark.parametrize("kind_tag", [b"\x12", b"\x8a\x01"])  # a history record, a run record
def test_an_undecodable_record_is_skipped_and_reported_once(tmp_path, kind_tag):
    run = tmp_path / "wandb" / "run-20260101_000000-undc0000"
    run.mkdir(parents=True)
    log = run / "run-undc0000.wandb"
    written = [lw.run(1, run_id="undc0000", name="undecodable")]
    for i in range(20):
        written.append(lw.history(2 + i, i, {"loss": 1.0 / (i + 1)}, time=1e9 + i))
    garbage = b"\xff\xff\xff\xff"  # wire type 7: no protobuf parser takes it
    written.append(b"\x08\x63" + kind_tag + bytes([len(garbage)]) + garbage)
    for i in range(20, 25):
        written.append(lw.history(30 + i, i, {"loss": 1.0 / (i + 1)}, time=1e9 + i))
    lw.write(log, written)
    bad_at = lw.record_ends(written)[20]
    source = RundirSource("d", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    assert poll.errors == (
        f"{log}: undecodable record at offset {bad_at}; that record is skipped, "
        "the rest of the log is used",
    )
    (snap,) = poll.snapshots
    assert snap.history["loss"].steps == tuple(range(25)) and snap.last_step == 24
    assert snap.ref.name == "undecodable"
    lw.append(log, [lw.history(60, 25, {"loss": 0.01}, time=1e9 + 25)])
    again = source.poll(poll.cursors, WANTED, NOW)
    assert again.errors == ()
    (snap,) = again.snapshots
    assert snap.history["loss"].steps == (25,)


@pytest.mark.parametrize("same_size_and_mtime", [False, True])
def test_a_log_replaced_by_another_file_is_read_from_the_start(tmp_path, same_size_and_mtime):
    log = small_run(tmp_path)
    source = RundirSource("r", [tmp_path])
    poll = source.poll({}, WANTED, NOW)
    assert poll.errors == ()
    old = log.stat()
    # a new file at the same path (it exists before the old one goes: another inode)
    new = log.with_suffix(".new")
    written = [lw.run(1, run_id="abcd1234", name="other")]
    if same_size_and_mtime:
        written += lw.step(2, 0, {"loss": 0.7}, time=1e9)
        written += lw.step(5, 1, {"loss": 0.3}, time=1e9 + 1)
    else:
        for i in range(10):
            written += lw.step(2 + 3 * i, i, {"loss": 0.1 * i, "pad": "p" * (7 * i)}, time=1e9 + i)
    lw.write(new, written)
    os.replace(new, log)
    if same_size_and_mtime:
        assert log.stat().st_size == old.st_size
        os.utime(log, ns=(old.st_atime_ns, old.st_mtime_ns))
    again = source.poll(poll.cursors, WANTED, NOW)
    assert again.errors == ()
    (snap,) = again.snapshots
    assert snap.ref.name == "other"
    steps = 2 if same_size_and_mtime else 10
    assert snap.history["loss"].steps == tuple(range(steps))
    assert snap.history["loss"].values[0] == (0.7 if same_size_and_mtime else 0.0)
