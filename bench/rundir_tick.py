"""How long a tick of the rundir source takes over 1,000 run directories: figures, not a test.

500 ended runs (copies of a finished run the SDK wrote) and 500 live ones (the same log
cut before its exit record), in 10 project directories of 100 runs each. Measured: a poll
with no new data, and a poll after 100 new steps were appended to every live run (steps
made from the SDK run's record bytes, framed like wandb-core: see benchdata.py).

Run: .venv/bin/python bench/rundir_tick.py [--pure-python]
(--pure-python: without the compiled log reader, as on a machine with no C compiler)
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

import benchdata
from benchdata import DEFAULT_WANTED, log_of

from fixtures import logwriter, runmaker
from runwatch.config import default_config
from runwatch.service import tune_gc
from runwatch.sources import wandbfile
from runwatch.sources.rundir import RundirSource
from runwatch.sources.wandbfile import EXIT, LogReader
from runwatch.store.base import open_store
from runwatch.tick import run_tick

GOAL_IDLE_MS = 100.0  # the source's poll
GOAL_APPEND_MS = 1000.0
TICK_GOAL_IDLE_MS = 30.0  # the whole tick: source, engine, store
TICK_GOAL_APPEND_MS = 300.0
PROJECTS, PER_PROJECT = 10, 100


def build_tree() -> tuple:
    """The 1,000 run directories (rebuilt each run: the live ones are appended to)."""
    runs = runmaker.build()
    finished = runs.runs["healthy"]
    raw = log_of(finished).read_bytes()
    exit_at = next(at for kind, *_, at in LogReader(str(log_of(finished))) if kind == EXIT)
    live_raw = raw[:exit_at]  # a run still going: everything before its exit record
    root = benchdata.CACHE / "tick"
    shutil.rmtree(root, ignore_errors=True)
    live_logs = []
    for project in range(PROJECTS):
        wandb_dir = root / f"project-{project:02d}" / "wandb"
        wandb_dir.mkdir(parents=True)
        for i in range(PER_PROJECT):
            run_id = f"r{project:02d}{i:05d}"
            run = wandb_dir / f"offline-run-20260101_000000-{run_id}"
            (run / "files").mkdir(parents=True)
            log = run / f"run-{run_id}.wandb"
            if i % 2:
                log.write_bytes(raw)
            else:
                log.write_bytes(live_raw)
                live_logs.append(log)
        (wandb_dir / "latest-run").symlink_to(run.name)
    return root, live_logs, len(live_raw)


def main() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    root, live_logs, live_size = build_tree()
    print(f"{PROJECTS * PER_PROJECT} run directories under {root}: "
          f"{len(live_logs)} live, {PROJECTS * PER_PROJECT - len(live_logs)} ended")
    source = RundirSource("bench", [root])
    started = time.perf_counter()
    poll = source.poll({}, DEFAULT_WANTED, 0.0)
    print(f"first poll (finds and reads everything): {(time.perf_counter() - started) * 1000:.0f}"
          f" ms, {len(poll.snapshots)} snapshots")
    cursors = dict(poll.cursors)

    idle = []
    for tick in range(1, 11):
        started = time.perf_counter()
        poll = source.poll(cursors, DEFAULT_WANTED, float(tick))
        idle.append(time.perf_counter() - started)
        cursors.update(poll.cursors)
    assert len(poll.snapshots) == len(live_logs) and not poll.cursors
    median = statistics.median(idle) * 1000
    print(f"poll with no new data: median {median:.1f} ms, max {max(idle) * 1000:.1f} ms "
          f"(goal < {GOAL_IDLE_MS:.0f} ms: {'met' if median < GOAL_IDLE_MS else 'MISSED'}); "
          f"{len(poll.snapshots)} snapshots of live runs")
    started = time.perf_counter()
    source.poll(cursors, DEFAULT_WANTED, 1000.0)  # past the rescan interval
    rescan = (time.perf_counter() - started) * 1000
    print(f"  the same with a full directory rescan: {rescan:.1f} ms")

    _, templates = benchdata.step_templates(benchdata.sdk_run())
    appended = []
    for round_ in range(3):
        records = list(benchdata.renumbered(templates, 10_000 + 300 * round_, 1000 + 100 * round_,
                                            100, 1.8e9))
        size = live_logs[0].stat().st_size
        framed = logwriter.frame(records, at=size)
        for log in live_logs:  # every live log has the same size, so the same bytes
            with open(log, "ab") as file:
                file.write(framed)
        started = time.perf_counter()
        poll = source.poll(cursors, DEFAULT_WANTED, 1001.0 + round_)
        appended.append(time.perf_counter() - started)
        cursors.update(poll.cursors)
        rows = sum(len(s.history.get("_timestamp", ())) for s in poll.snapshots)
        assert rows == 100 * len(live_logs), rows
    median = statistics.median(appended) * 1000
    print(f"poll after 100 new steps in each of {len(live_logs)} live runs "
          f"({100 * len(live_logs):,} rows): median {median:.0f} ms of {len(appended)} "
          f"(goal < {GOAL_APPEND_MS:.0f} ms: {'met' if median < GOAL_APPEND_MS else 'MISSED'})")
    assert live_size < live_logs[0].stat().st_size
    discovery(root, cursors)
    shutil.rmtree(root)
    full_ticks()


def discovery(root, cursors: dict) -> None:
    """Finding new runs between full searches: every searched folder checked by its mtime,
    against the simple way — a full search on every poll (``rescan=0``) — over the same
    tree grown by 5,000 folders without runs (50 teams × 100 experiment folders)."""
    for team in range(50):
        for exp in range(100):
            (root / f"team-{team:02d}" / f"exp-{exp:03d}" / "checkpoints").mkdir(parents=True)
    figures = {}
    for label, rescan in (("folder mtimes", 3600.0), ("full search every poll", 0.0)):
        source = RundirSource("bench", [root], rescan=rescan)
        source.poll(cursors, DEFAULT_WANTED, 0.0)
        times = []
        for tick in range(1, 8):
            started = time.perf_counter()
            source.poll(cursors, DEFAULT_WANTED, float(tick))
            times.append(time.perf_counter() - started)
        figures[label] = statistics.median(times) * 1000
    # A new run in a new project folder, found at the next poll with folder mtimes.
    source = RundirSource("bench", [root], rescan=3600.0)
    first = source.poll(cursors, DEFAULT_WANTED, 0.0)
    new_run = root / "team-07" / "exp-042" / "wandb" / "offline-run-20260101_000000-new00001"
    new_run.mkdir(parents=True)
    shutil.copy(next(iter(root.glob("project-*/wandb/*/run-*.wandb"))),
                new_run / "run-new00001.wandb")
    found = source.poll(cursors, DEFAULT_WANTED, 1.0)
    seen = len(found.snapshots) - sum(1 for s in first.snapshots if not s.state.ended)
    print(f"poll with no new data over the tree + 5,000 folders without runs: "
          f"{figures['folder mtimes']:.1f} ms with folder mtimes, "
          f"{figures['full search every poll']:.1f} ms with a full search every poll "
          f"({figures['full search every poll'] / figures['folder mtimes']:.1f}x); "
          f"a new run in a new folder found at the next poll: {'yes' if seen >= 1 else 'NO'}")


def full_ticks() -> None:
    """The same two cases through the whole tick: source, engine with the default rules,
    alert state and cursors committed to a SQLite store. The live runs are healthy (the
    clock stands a minute after their newest record), as most runs are on most ticks."""
    tune_gc()  # as the daemon and `check` run their ticks
    root, live_logs, _ = build_tree()
    rule_set = default_config([root]).rule_set()
    with tempfile.TemporaryDirectory() as state:
        store = open_store(f"sqlite:///{state}/state.db")
        source = RundirSource("bench", [root])
        # Healthy live runs: the clock a minute past their newest record.
        snapshots = RundirSource("probe", [root]).poll({}, frozenset(), 0.0).snapshots
        now = max(s.heartbeat or 0.0 for s in snapshots) + 60

        def tick() -> float:
            started = time.perf_counter()
            run_tick(sources=[source], rules=rule_set.rules, aliases=rule_set.aliases,
                     store=store, now=now)
            return (time.perf_counter() - started) * 1000

        print(f"full tick (source + engine, {len(rule_set.rules)} default rules + SQLite "
              f"store): first {tick():.0f} ms")
        plain = statistics.median(tick() for _ in range(5))
        # The daemon (and `check`) hold the store's writer lock: the store then keeps the
        # alert states it read or wrote, and an idle tick decodes no alert row.
        store.claim_writer("bench", ttl=1e9)  # one process, no heartbeat: never runs out
        tick()
        idle = statistics.median(tick() for _ in range(5))
        print(f"  no new data: median {idle:.0f} ms (goal < {TICK_GOAL_IDLE_MS:.0f} ms: "
              f"{'met' if idle < TICK_GOAL_IDLE_MS else 'MISSED'}); a store that reads every"
              f" alert row each tick: {plain:.0f} ms ({plain / idle:.1f}x)")
        _, templates = benchdata.step_templates(benchdata.sdk_run())
        appended = []
        for round_ in range(3):
            records = list(benchdata.renumbered(templates, 20_000 + 300 * round_,
                                                2000 + 100 * round_, 100, now - 60))
            framed = logwriter.frame(records, at=live_logs[0].stat().st_size)
            for log in live_logs:
                with open(log, "ab") as file:
                    file.write(framed)
            appended.append(tick())
        median = statistics.median(appended)
        print(f"  100 new steps in each of {len(live_logs)} live runs: median {median:.0f} ms "
              f"(goal < {TICK_GOAL_APPEND_MS:.0f} ms: "
              f"{'met' if median < TICK_GOAL_APPEND_MS else 'MISSED'})")
        store.close()
    shutil.rmtree(root)


if __name__ == "__main__":
    if "--pure-python" in sys.argv[1:]:
        wandbfile.compiled = None
    print("log reader:", "compiled" if wandbfile.compiled is not None else "pure Python")
    main()
    print(f"uptime: {os.popen('uptime').read().strip()}")
