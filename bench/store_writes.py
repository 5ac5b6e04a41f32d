"""What a busy tick's commit costs the SQLite store: figures, not a test.

The store of bench/rundir_tick.py's full tick: 1,000 runs × 8 rules (8,000 alert rows, half
of them of ended runs that no longer change) and 1,000 cursors of ~1 KB. A busy tick (100
new rows in each of the 500 live runs) moves every live run's alerts: their newest point
and step, and their check memory — a window of 50 floats (progress: row times) where the
default rules keep one, or in every alert for the worst case. Measured side by side, round
by round, each on its own file: ``commit_tick`` of those 4,000 alerts and 500 cursors by
the store's writer (``claim_writer``), which holds quiet runs back (``store/held.py``: a
run whose alerts only moved is written minutes later, whole), by the same writer holding
nothing (it knows what it stored and writes only the moving columns), and by a handle
without the lock, which writes whole rows. All three end with the same states once closed
(asserted). Run it on an older commit (``PYTHONPATH=<checkout>/daemon``) for the figures
before.

Run: .venv/bin/python bench/store_writes.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from runwatch.model import AlertState, AlertStatus, RunRef, RunState, Severity, fingerprint
from runwatch.store.sqlite import SqliteStore

RUNS, RULES, WINDOW = 1000, 8, 50
GOAL_MS = 40.0
T0 = 1_796_000_000.0


def initial(every_memory: bool) -> tuple[list[AlertState], list[AlertState]]:
    """The live runs' alerts and the ended runs' ones."""
    live, ended = [], []
    for n in range(RUNS):
        ref = RunRef(source="bench", id=f"r{n:05d}", name=f"run-{n}", project=f"p{n % 10}",
                     location=f"/experiments/project-{n % 10:02d}/wandb/offline-run-{n:05d}")
        for r in range(RULES):
            windowed = every_memory or r == RULES - 1  # the progress rule keeps row times
            state = AlertState(
                fingerprint=fingerprint(f"rule-{r}", ref), rule=f"rule-{r}", run=ref,
                severity=Severity.WARNING, status=AlertStatus.INACTIVE, first_seen=T0,
                last_seen=T0, metric="train/loss", value=1.0, step=999, latest_value=1.0,
                latest_step=999, run_state=RunState.RUNNING,
                memory=[f"tag{r}", [T0 + i * 7.5 for i in range(WINDOW)]] if windowed else None)
            (ended if n % 2 else live).append(state)
    return live, ended


def moved(alerts: list[AlertState], tick: int) -> list[AlertState]:
    """What 100 new rows leave: a new newest point, and the window slid by 100 rows."""
    out = []
    for a in alerts:
        memory = a.memory
        if memory is not None:
            last = memory[1][-1]
            memory = [memory[0], [last + i * 7.5 for i in range(1, WINDOW + 1)]]
        out.append(replace(a, memory=memory, step=999 + 100 * tick, value=1.0 / tick,
                           latest_value=1.0 / tick, latest_step=999 + 100 * tick,
                           last_seen=T0 + 60 * tick))
    return out


def cursors(tick: int, live_only: bool = True) -> dict[str, str]:
    """~1 KB each, like a run directory's (log path, offsets, the run's record), under the
    run's directory, as the rundir source keeps them."""
    return {f"/experiments/project-{n % 10:02d}/wandb/offline-run-{n:05d}":
            f'{{"offset":{tick * 27895},"pad":"{"x" * 950}"}}'
            for n in range(RUNS) if not (live_only and n % 2)}


CASES = ("holding", "writer", "plain")


def case(every_memory: bool, rounds: int) -> dict[str, float]:
    live, ended = initial(every_memory)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"holding": SqliteStore(Path(tmp) / "holding.db"),
                  "writer": SqliteStore(Path(tmp) / "writer.db", hold_for=0),
                  "plain": SqliteStore(Path(tmp) / "plain.db")}
        stores["holding"].claim_writer("bench", ttl=1e9)  # no heartbeat here
        stores["writer"].claim_writer("bench", ttl=1e9)  # no heartbeat here
        try:
            for store in stores.values():
                store.commit_tick(source="bench", alerts=live + ended, cursors=cursors(0, False),
                                  now=T0)
            for name in ("holding", "writer"):  # as a tick reads them first
                stores[name].load_alerts([a.fingerprint for a in live])
            times: dict[str, list[float]] = {name: [] for name in CASES}
            for tick in range(1, rounds + 1):
                live = moved(live, tick)
                order = CASES if tick % 2 else CASES[::-1]
                for name in order:
                    started = time.perf_counter()
                    stores[name].commit_tick(source="bench", alerts=live, cursors=cursors(tick),
                                             now=T0 + 60 * tick)
                    times[name].append((time.perf_counter() - started) * 1000)
        finally:
            for store in stores.values():
                store.close()  # what is held is written
        states = []
        for name in CASES:
            reopened = SqliteStore(Path(tmp) / f"{name}.db")
            states.append((reopened.load_alerts(None), reopened.load_cursors("bench")))
            reopened.close()
        assert states[0] == states[1] == states[2]  # the same states and cursors
    return {name: statistics.median(times[name]) for name in CASES}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    print(f"uptime: {uptime()}")
    live = RUNS // 2 * RULES
    for every_memory, label in ((False, "the default rules' memory (progress windows)"),
                                (True, "every alert's memory a moving 50-float window")):
        took = case(every_memory, rounds)
        holding, writer, plain = (took[name] for name in CASES)
        print(f"commit of {live:,} moved alerts + {RUNS // 2} cursors, {label}, median of"
              f" {rounds}: holding quiet runs {holding:.1f} ms (goal < {GOAL_MS:.0f} ms:"
              f" {'met' if holding < GOAL_MS else 'MISSED'}); the writer holding nothing"
              f" {writer:.1f} ms; whole rows {plain:.1f} ms ({plain / holding:.1f}x)")
    print(f"uptime: {uptime()}")


if __name__ == "__main__":
    main()
