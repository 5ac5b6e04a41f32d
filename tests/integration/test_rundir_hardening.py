"""Nothing in a watched folder can freeze, blind or keep a run alive for ever: FIFOs,
sockets and devices where logs belong, folders that cannot be listed, links into /proc,
new run folders between full searches, and SDK runs that were SIGKILLed (no exit record)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fixtures import logwriter as lw
from runwatch.model import RunState
from runwatch.sources.rundir import RundirSource
from runwatch.sources.wandbfile import LogReader

# Every test reads logs both ways: compiled and pure Python (conftest: reader_path).
pytestmark = [pytest.mark.sdk, pytest.mark.usefixtures("reader_path")]

T0 = 1_800_000_000.0
WANTED = frozenset({"train/loss", "train/grad_norm"})


def write_run(root: Path, run_id: str, *, at: float = T0, rows: int = 3) -> Path:
    run = root / "wandb" / f"offline-run-20260101_000000-{run_id}"
    run.mkdir(parents=True)
    log = run / f"run-{run_id}.wandb"
    records = [lw.run(1, run_id=run_id, name=run_id, project="p", start=at)]
    num = 2
    for step in range(rows):
        batch = lw.step(num, step, {"train/loss": 1.0, "train/grad_norm": 1.0}, time=at + step)
        num += len(batch)
        records += batch
    lw.write(log, records)
    return log


def names(poll) -> list[str]:
    return sorted(s.ref.name for s in poll.snapshots)


# --- FIFOs, sockets, devices -------------------------------------------------------------


def test_a_fifo_a_socket_and_a_device_where_logs_belong_do_not_block_the_tick(tmp_path):
    write_run(tmp_path / "good", "good0001")
    fifo = tmp_path / "a" / "wandb" / "offline-run-1-fifo0001" / "run-fifo0001.wandb"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    sock_path = tmp_path / "b" / "wandb" / "offline-run-1-sock0001" / "run-sock0001.wandb"
    sock_path.parent.mkdir(parents=True)
    short = Path(tempfile.mkdtemp(dir="/tmp"))  # AF_UNIX paths are short: link to it
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(short / "s"))
    sock_path.symlink_to(short / "s")
    device = tmp_path / "c" / "wandb" / "offline-run-1-zero0001" / "run-zero0001.wandb"
    device.parent.mkdir(parents=True)
    device.symlink_to("/dev/zero")
    try:
        source = RundirSource("s", [tmp_path], dead_after=float("inf"))
        poll = source.poll({}, WANTED, T0 + 10)  # a FIFO would block right here, for ever
        assert names(poll) == ["good0001"]
        said = {line.split(": ")[0]: line for line in poll.errors}
        assert said[str(fifo)].endswith("not a regular file (a FIFO); not read")
        assert said[str(sock_path)].endswith("not a regular file (a socket); not read")
        assert said[str(device)].endswith("not a regular file (a character device); not read")
        again = source.poll(poll.cursors, WANTED, T0 + 20)
        assert again.errors == ()  # said once
        assert names(again) == ["good0001"]
    finally:
        listener.close()
        shutil.rmtree(short, ignore_errors=True)


def test_the_reader_itself_never_blocks_on_a_fifo(tmp_path):
    """Swapped in between the poll's stat and the open: the open is non-blocking and the
    open file is checked."""
    fifo = tmp_path / "run-x.wandb"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        list(LogReader(str(fifo)))


# --- folders that cannot be searched ----------------------------------------------------


def test_a_folder_removed_between_searches_is_forgotten_without_a_word(tmp_path):
    write_run(tmp_path / "keep", "keep0001")
    write_run(tmp_path / "gone", "gone0001")
    source = RundirSource("s", [tmp_path], rescan=3600, dead_after=float("inf"))
    first = source.poll({}, WANTED, T0 + 10)
    assert names(first) == ["gone0001", "keep0001"]
    shutil.rmtree(tmp_path / "gone")
    later = source.poll(first.cursors, WANTED, T0 + 20)
    assert (names(later), later.errors) == (["keep0001"], ())
    assert not any("gone" in folder for folder in source._dirs)


def test_a_link_into_proc_is_not_searched_and_the_other_runs_are_checked(tmp_path):
    write_run(tmp_path / "team" / "good", "good0001")
    (tmp_path / "team" / "init").symlink_to("/proc/1")
    (tmp_path / "team" / "loop").symlink_to(tmp_path / "team" / "loop")
    source = RundirSource("s", [tmp_path], dead_after=float("inf"))
    poll = source.poll({}, WANTED, T0 + 10)
    assert names(poll) == ["good0001"]
    [said] = poll.errors
    assert said == f"s: {tmp_path / 'team' / 'init'}: a link into /proc/1: not searched"
    assert source.poll(poll.cursors, WANTED, T0 + 20).errors == ()  # once


UNPRIVILEGED_POLL = """
import json, os, sys
from runwatch.sources.rundir import RundirSource
warm = RundirSource("warm", [sys.argv[2]], dead_after=float("inf"))
warm.poll({}, frozenset({"train/loss"}), 1_800_000_010.0)  # every lazy import, as root
os.setgid(65534)
os.setuid(65534)
source = RundirSource("s", [sys.argv[1]], dead_after=float("inf"))
polls = [source.poll({}, frozenset({"train/loss"}), 1_800_000_010.0 + i) for i in range(2)]
print(json.dumps({"runs": sorted(s.ref.name for s in polls[0].snapshots),
                  "errors": [list(p.errors) for p in polls]}))
"""


def test_a_folder_that_cannot_be_listed_is_said_once_and_the_others_are_checked():
    """As an unprivileged user (root lists any folder): a folder with no permissions
    beside good runs, one line naming it, once."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the poll as another user")
    root = Path(tempfile.mkdtemp(prefix="runwatch-perm-"))
    try:
        root.chmod(0o755)
        write_run(root / "open", "good0001")
        write_run(root / "closed" / "inside", "hidden01")
        warm = root / "warm"
        write_run(warm, "warm0001")
        for folder, _, files in os.walk(root):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        (root / "closed").chmod(0o000)
        done = subprocess.run([sys.executable, "-c", UNPRIVILEGED_POLL, str(root), str(warm)],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr[-2000:]
        seen = json.loads(done.stdout)
        assert seen["runs"] == ["good0001", "warm0001"]
        first, second = seen["errors"]
        assert first == [f"s: {root / 'closed'}: cannot list: Permission denied; its runs are"
                         " not checked"]
        assert second == []
    finally:
        (root / "closed").chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


# --- new runs between full searches -----------------------------------------------------


def test_a_new_run_folder_is_seen_at_the_next_poll_without_a_full_search(tmp_path):
    write_run(tmp_path / "team" / "old", "old00001")
    source = RundirSource("s", [tmp_path], rescan=3600, dead_after=float("inf"))
    first = source.poll({}, WANTED, T0 + 10)
    assert names(first) == ["old00001"]
    # A new project folder with its own wandb/ — two levels below anything listed so far.
    write_run(tmp_path / "team" / "new-project", "new00001")
    second = source.poll(first.cursors, WANTED, T0 + 20)  # well within the rescan
    assert names(second) == ["new00001", "old00001"]
    # And a new run beside a known one.
    extra = tmp_path / "team" / "new-project" / "wandb" / "offline-run-2-new00002"
    extra.mkdir()
    lw.write(extra / "run-new00002.wandb", [lw.run(1, run_id="new00002", name="new00002",
                                                    project="p", start=T0)])
    third = source.poll(second.cursors, WANTED, T0 + 30)
    assert names(third) == ["new00001", "new00002", "old00001"]


# --- runs that died without a word ------------------------------------------------------


def test_a_run_silent_for_dead_after_is_crashed_once_and_live_again_when_it_writes(tmp_path):
    log = write_run(tmp_path, "dead0001", rows=3)
    source = RundirSource("s", [tmp_path], dead_after=7200)
    live = source.poll({}, WANTED, T0 + 60)
    [snapshot] = live.snapshots
    assert (snapshot.state, snapshot.ended_why) == (RunState.RUNNING, "")
    dead = source.poll(live.cursors, WANTED, T0 + 2 + 7200)
    [snapshot] = dead.snapshots
    assert (snapshot.state, snapshot.ended_why) == (RunState.CRASHED, "no record for 2h")
    # A tick whose commit failed keeps the old cursors: the crash is told again.
    [again] = source.poll(live.cursors, WANTED, T0 + 2 + 7250).snapshots
    assert again.state is RunState.CRASHED
    cursors = {**live.cursors, **dead.cursors}  # as a tick keeps them once committed
    assert source.poll(cursors, WANTED, T0 + 2 + 7300).snapshots == ()  # told once
    restarted = RundirSource("s", [tmp_path], dead_after=7200)  # the cursor remembers
    assert restarted.poll(cursors, WANTED, T0 + 2 + 7400).snapshots == ()
    lw.append(log, lw.step(20, 3, {"train/loss": 0.5}, time=T0 + 8000))  # it writes again
    back = source.poll(cursors, WANTED, T0 + 8010)
    [snapshot] = back.snapshots
    assert snapshot.state is RunState.RUNNING


def test_a_sigkilled_sdk_run_becomes_crashed_after_dead_after(wandb_runs):
    killed = wandb_runs.runs["killed"]
    source = RundirSource("s", [killed], dead_after=3600)
    [alive] = source.poll({}, WANTED, 0.0).snapshots  # "now" before the run's records
    assert alive.state is RunState.RUNNING
    later = alive.heartbeat + 3601
    [dead] = RundirSource("s", [killed], dead_after=3600).poll({}, WANTED, later).snapshots
    assert (dead.state, dead.ended_why) == (RunState.CRASHED, "no record for 1h")


def test_reports_over_a_tree_take_a_silent_run_as_crashed_as_the_source_does(tmp_path):
    from runwatch.sources.rundir_reports import read_tree

    write_run(tmp_path, "dead0001")
    [alive] = read_tree([tmp_path], WANTED, T0 + 60).runs
    [dead] = read_tree([tmp_path], WANTED, T0 + 2 + 7200).runs
    assert (alive.state, dead.state, dead.ended_why) == (
        RunState.RUNNING, RunState.CRASHED, "no record for 2h")


def test_the_config_and_the_source_agree_on_the_defaults(tmp_path):
    from runwatch.config.sources import RundirSource as Spec
    from runwatch.sources import rundir

    spec = Spec.model_validate({"type": "rundir", "path": str(tmp_path)})
    assert (spec.rescan, spec.dead_after) == (rundir.DEFAULT_RESCAN, rundir.DEFAULT_DEAD_AFTER)
    tuned = Spec.model_validate({"type": "rundir", "path": str(tmp_path), "rescan": "1h",
                                 "dead_after": "30m"})
    assert (tuned.rescan, tuned.dead_after) == (3600.0, 1800.0)
