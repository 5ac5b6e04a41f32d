"""What the first tick over runs never seen before costs: figures, not a test.

Each case runs in a fresh process (so its peak RSS is its own): the first tick — the
rundir source finds and reads the runs, the engine judges them with the default rules,
an in-memory store keeps the result — timed inside the process, and the process's peak
RSS. Side by side, in the same run:

* one 1M-row run against one 1k-row run (the goal: ≤ 2x the time, ≤ 1.5x the peak RSS),
  with the default ``first_read`` (the newest 200 rows, or what the rules need), with
  10,000 rows, and, as the baseline, ``first_read: all`` — the whole history, what a first
  read cost before;
* 1,000 run directories of 100k rows each (the goal: < 10 s), with the default and with
  10,000 rows. Their logs are hard links to the one 100k-step log the SDK wrote, so they
  are read from the page cache, as the logs of a machine's recent runs mostly are.

Run: .venv/bin/python bench/first_sight.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

import benchdata

from runwatch.window import DEFAULT_FIRST_READ

DEFAULT = f"{DEFAULT_FIRST_READ.rows} rows"

ROUNDS = 3
# Peak RSS from /proc/self/status (VmHWM: this process image's own high-water mark), not
# getrusage's ru_maxrss, which Linux carries over exec from the forking parent: a bench
# that had just synthesized a log would show its own size as every child's peak.
CHILD = """
import json, sys, time
sys.path[:0] = {paths!r}

def peak_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

from runwatch.config import default_config
from runwatch.sources.rundir import RundirSource
from runwatch.store.memory import MemoryStore
from runwatch.tick import run_tick
from runwatch.window import parse_first_read
rule_set = default_config([{root!r}]).rule_set()
before = peak_mb()
source = RundirSource("bench", [{root!r}], first_read=parse_first_read({first_read!r}))
started = time.perf_counter()
report = run_tick(sources=[source], rules=rule_set.rules, aliases=rule_set.aliases,
                  store=MemoryStore(), now=2_000_000_000.0)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "runs": report.runs_checked,
                  "rss_mb": peak_mb(), "base_mb": before}}))
"""


def first_tick(root: str, first_read: str | int, rounds: int = ROUNDS) -> dict:
    """The median time and peak RSS of ``rounds`` fresh processes' first tick over ``root``."""
    results = []
    for _ in range(rounds):
        code = CHILD.format(paths=[str(benchdata.REPO / "daemon")], root=root,
                            first_read=first_read)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True).stdout
        results.append(json.loads(out.splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in results),
            "rss_mb": statistics.median(r["rss_mb"] for r in results),
            "base_mb": statistics.median(r["base_mb"] for r in results),
            "runs": results[0]["runs"]}


def show(label: str, figures: dict) -> None:
    print(f"  {label}: {figures['seconds'] * 1000:,.0f} ms, peak RSS {figures['rss_mb']:.0f} MB"
          f" ({figures['base_mb']:.0f} MB before the tick), {figures['runs']} runs")


def many_runs(count: int = 1000) -> str:
    """``count`` run directories whose logs are hard links to the SDK's 100k-step log."""
    log = benchdata.log_of(benchdata.sdk_run())
    root = benchdata.CACHE / f"many-{count}"
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        run_id = f"m{i:07d}"
        run = root / f"project-{i // 100:02d}" / "wandb" / f"offline-run-20260101_000000-{run_id}"
        run.mkdir(parents=True)
        os.link(log, run / f"run-{run_id}.wandb")
    return str(root)


def main() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"each figure: the median of {ROUNDS} fresh processes")
    small = str(benchdata.big_log(1000))
    large = str(benchdata.big_log(1_000_000))
    print("first tick over one run, default rules:")
    one_k = first_tick(small, DEFAULT)
    show("1k-row run", one_k)
    one_m = first_tick(large, DEFAULT)
    show(f"1M-row run, first_read {DEFAULT} (default)", one_m)
    wide = first_tick(large, "10000 rows")
    show("1M-row run, first_read 10000 rows", wide)
    whole = first_tick(large, "all")
    show("1M-row run, first_read: all (the whole history: the baseline)", whole)
    print(f"  1M vs 1k rows: {one_m['seconds'] / one_k['seconds']:.1f}x the time (goal <= 2x),"
          f" {one_m['rss_mb'] / one_k['rss_mb']:.2f}x the peak RSS (goal <= 1.5x); the whole"
          f" history takes {whole['seconds'] / one_m['seconds']:.0f}x the time and"
          f" {whole['rss_mb'] / one_m['rss_mb']:.1f}x the RSS of the default window read")
    root = many_runs()
    print("first tick over 1,000 run directories x 100k rows, default rules:")
    many = first_tick(root, DEFAULT)
    show(f"first_read {DEFAULT} (default)", many)
    print(f"  goal < 10 s: {'met' if many['seconds'] < 10 else 'MISSED'}")
    show("first_read 10000 rows (one process: minutes)", first_tick(root, "10000 rows", 1))
    shutil.rmtree(root)
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
