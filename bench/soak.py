"""Whether the daemon's memory stays flat while it watches live runs: figures, not a test.

A real ``runwatch run`` process (default rules, SQLite store, a rundir source ticking every
``--interval`` seconds) watches ``--runs`` live run directories while this script appends
``--rows`` new steps to every one of them before each tick (steps made from the SDK run's
record bytes, framed like wandb-core: see benchdata.py), for ``--minutes``. The daemon's
resident memory (VmRSS of /proc/<pid>/status) is sampled every tick; printed: RSS after the
first minute, at the end, the largest, and the slope of a least-squares line through the
samples after the first minute (MB per hour) — flat is what an always-on daemon needs.

Run: .venv/bin/python bench/soak.py [--runs 200] [--minutes 10] [--interval 5] [--rows 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdata
from benchdata import log_of

from fixtures import logwriter, runmaker
from runwatch.sources.wandbfile import EXIT, LogReader


def build(root: Path, runs: int) -> list[Path]:
    """``runs`` live run directories: the SDK's healthy run cut before its exit record."""
    finished = runmaker.build().runs["healthy"]
    raw = log_of(finished).read_bytes()
    exit_at = next(at for kind, *_, at in LogReader(str(log_of(finished))) if kind == EXIT)
    logs = []
    for i in range(runs):
        run_id = f"s{i:07d}"
        run = root / f"project-{i // 100:02d}" / "wandb" / f"offline-run-20260101_000000-{run_id}"
        run.mkdir(parents=True)
        log = run / f"run-{run_id}.wandb"
        log.write_bytes(raw[:exit_at])
        logs.append(log)
    return logs


def read_to_the_end(store: Path, logs: list[Path]) -> int:
    """How many logs the daemon's stored cursors say were read to their last byte."""
    sizes = {str(log.parent): log.stat().st_size for log in logs}
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT run_key, value FROM cursors").fetchall()
    return sum(1 for key, value in rows
               if key in sizes and json.loads(value).get("offset") == sizes[key])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    if len(samples) < 2:
        return 0.0
    return statistics.linear_regression(times, values).slope * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--rows", type=int, default=20, help="new steps per run per tick")
    args = parser.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    work = Path(tempfile.mkdtemp(prefix="runwatch-soak-"))
    logs = build(work / "runs", args.runs)
    config = work / "runwatch.yaml"
    config.write_text(
        f"sources:\n  - {{type: rundir, path: {work / 'runs'}, interval: {args.interval}s}}\n"
        "store: sqlite:///state.db\nhttp: {listen: '127.0.0.1:0'}\n")
    env = {**os.environ, "HOME": str(work), "WANDB_SILENT": "true"}
    daemon = subprocess.Popen([sys.executable, "-m", "runwatch", "run", "--config", str(config),
                               "--log-format", "json"], env=env, cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, templates = benchdata.step_templates(benchdata.sdk_run())
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    tick = 0
    try:
        while time.monotonic() - started < args.minutes * 60:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode}")
            records = list(benchdata.renumbered(templates, 50_000 + tick * 3 * args.rows,
                                                5000 + tick * args.rows, args.rows,
                                                time.time() - 1))
            framed = logwriter.frame(records, at=logs[0].stat().st_size)
            for log in logs:  # every live log has the same size, so the same bytes
                with open(log, "ab") as file:
                    file.write(framed)
            time.sleep(args.interval)  # the daemon ticks on its own schedule
            samples.append((time.monotonic() - started, rss_mb(daemon.pid)))
            tick += 1
        time.sleep(2 * args.interval)  # the last rows' tick
        # Stopped first: the store's writer holds quiet runs' cursors back for minutes and
        # writes them at a stop (README: "A busy tick writes only what moved").
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        caught_up = read_to_the_end(work / "state.db", logs)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    settled = [s for s in samples if s[0] >= 60] or samples
    print(f"{args.runs} live runs, {args.rows} new steps each every {args.interval:g} s, "
          f"{args.minutes:g} min, {len(samples)} samples of the daemon's RSS:")
    print(f"  after the first minute {settled[0][1]:.1f} MB, at the end {samples[-1][1]:.1f} MB,"
          f" largest {max(v for _, v in samples):.1f} MB; slope after the first minute"
          f" {slope_per_hour(settled):+.1f} MB/hour")
    print(f"  runs whose stored cursor reached the end of their log: {caught_up}/{len(logs)}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
