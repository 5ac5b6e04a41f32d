"""What the status page costs: `/` over 1,000 runs with 100 alerts firing, as the daemon
serves it — its run board filled from ticks' snapshots (each run with 200 points of loss
and grad norm), the alerts in a SQLite store — rendered through the WSGI app and fetched
over HTTP; `/api/v1/runs` (the same rows as JSON) beside it. Goal: `/` in < 200 ms.
The store also holds 5,000 resolved alerts (a week's, kept for the pages), which `/` need
not read. Then what keeping the board in the store costs: the writer saving every row
(the most a minute's save can hold) and a restart or standby loading them.

Run: .venv/bin/python bench/page.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import urllib.request

from runwatch.metrics import HttpServer, Metrics, health_app
from runwatch.model import (
    AlertState,
    AlertStatus,
    RunRef,
    RunSnapshot,
    RunState,
    Series,
    Severity,
    fingerprint,
)
from runwatch.store.base import BoardEntry, open_store
from runwatch.web.app import Context, Pages
from runwatch.web.board import RunBoard

NOW = 1_796_000_000.0
RUNS, FIRING, POINTS, RESOLVED = 1000, 100, 200, 5000


def board() -> RunBoard:
    filled = RunBoard()
    snapshots = []
    for i in range(RUNS):
        ref = RunRef(source="wandb" if i % 2 else "rundir", id=f"r{i:04d}", name=f"run-{i:04d}",
                     project=f"project-{i % 10}", entity="team",
                     location=f"https://wandb.ai/team/project-{i % 10}/runs/r{i:04d}")
        steps = tuple(range(0, POINTS * 10, 10))
        history = {"train/loss": Series(steps=steps, times=tuple(NOW - 600 + s / 10 for s in steps),
                                        values=tuple(2.0 / (1 + s / 500) for s in steps)),
                   "train/grad_norm": Series(steps=steps, times=(NOW,) * POINTS,
                                             values=tuple(1 + (s % 70) / 100 for s in steps))}
        snapshots.append(RunSnapshot(
            ref=ref, state=RunState.RUNNING if i % 3 else RunState.FINISHED, heartbeat=NOW - 30,
            progress=NOW - 40, started=NOW - 3600, last_step=steps[-1], tags=("bench", f"t{i}"),
            keys=frozenset(history), history=history))
    filled.update(snapshots, NOW, {"loss": ("train/loss",), "grad_norm": ("train/grad_norm",)})
    return filled


def main() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    runs = board()
    with tempfile.TemporaryDirectory() as state:
        store = open_store(f"sqlite:///{state}/state.db")
        alerts = []
        for i in range(FIRING):
            ref = runs.rows()[i * 7].ref
            alerts.append(AlertState(
                fingerprint=fingerprint("grad-norm-exploding", ref), rule="grad-norm-exploding",
                run=ref, severity=Severity.CRITICAL, status=AlertStatus.FIRING,
                summary="grad norm > 10", fired_at=NOW - 100, last_seen=NOW))
        for i in range(RESOLVED):
            ref = runs.rows()[i % RUNS].ref
            alerts.append(AlertState(
                fingerprint=fingerprint(f"rule-{i // RUNS}", ref), rule=f"rule-{i // RUNS}",
                run=ref, severity=Severity.WARNING, status=AlertStatus.RESOLVED,
                summary="loss spiked", fired_at=NOW - 5000, resolved_at=NOW - 4000,
                last_seen=NOW - 4000, resolution="condition cleared"))
        store.commit_tick(source="wandb", alerts=alerts, cursors={}, now=NOW)
        pages = Pages(Context(store=store, clock=lambda: NOW, board=runs,
                              sources=lambda: ["wandb", "rundir"]))
        server = HttpServer("127.0.0.1", 0, health_app(Metrics(), lambda: (True, "ok"),
                                                       pages=pages))
        server.start()
        try:
            timings: dict[str, list[float]] = {"/": [], "/api/v1/runs": []}
            sizes = {}
            for _ in range(3):  # warm
                for path in timings:
                    urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}").read()
            for _ in range(15):
                for path in timings:
                    started = time.perf_counter()
                    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as r:
                        sizes[path] = len(r.read())
                    timings[path].append((time.perf_counter() - started) * 1000)
            saves, loads = [], []
            for n in range(5):
                runs.unsaved(BoardEntry(path=r.ref.path, source="", seen=0, body="")
                             for r in runs.rows())  # every row changed
                started = time.perf_counter()
                store.save_board(runs.to_save(NOW + n) or (), forget_before=0)
                saves.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                RunBoard().load(store.load_board(), ["wandb", "rundir"], NOW)
                loads.append((time.perf_counter() - started) * 1000)
            saved_bytes = sum(len(e.body) for e in store.load_board())
            standby = RunBoard()
            standby.load(store.load_board(), ["wandb", "rundir"], NOW)
            started = time.perf_counter()
            standby.load(store.load_board(), ["wandb", "rundir"], NOW)
            reload_ms = (time.perf_counter() - started) * 1000
            ended, every = [], []  # the alerts / shows for ended runs: asked vs all of them
            for _ in range(5):
                started = time.perf_counter()
                store.alerts(status=AlertStatus.RESOLVED, resolution="run ended")
                ended.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                [a for a in store.alerts(status=AlertStatus.RESOLVED)
                 if a.resolution.startswith("run ended")]
                every.append((time.perf_counter() - started) * 1000)
        finally:
            server.stop()
            store.close()
    for path, times in timings.items():
        print(f"GET {path} over {RUNS:,} runs, {FIRING} firing: median"
              f" {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}),"
              f" {sizes[path] / 1024:.0f} KiB")
    print(f"board of {RUNS:,} rows in the store ({saved_bytes / 1024:.0f} KiB): saving every"
          f" row {statistics.median(saves):.0f} ms, loading {statistics.median(loads):.0f} ms"
          f" (medians of {len(saves)}); a standby's reload with nothing new {reload_ms:.0f} ms")
    print(f"resolved alerts of ended runs, asked of the store: {statistics.median(ended):.1f} ms;"
          f" all {RESOLVED:,} resolved read and filtered here (the simple way):"
          f" {statistics.median(every):.1f} ms"
          f" ({statistics.median(every) / statistics.median(ended):.0f}×)")
    median = statistics.median(timings["/"])
    print(f"goal: / in < 200 ms: {'met' if median < 200 else 'MISSED'}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
