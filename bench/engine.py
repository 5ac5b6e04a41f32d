"""Metric points evaluated per second by the engine with the default rules.

A tick's snapshot of N new rows of loss, grad_norm and row times goes through
`engine.evaluate` with `rules/default.yaml`; figures are points per second, where a point
is one (metric, step) value the rules read. Goal: >= 1,000,000 points/s.

    python bench/engine.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

from runwatch.config import default_rules_path, load_rules
from runwatch.engine import evaluate
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import RunRef, RunSnapshot, RunState, Series


def default_rules():
    return load_rules([default_rules_path()], Path.cwd()).rules


def snapshot(rows: int, *, explode_at: int | None) -> RunSnapshot:
    rng = random.Random(7)
    steps = tuple(range(rows))
    times = tuple(1_760_000_000.0 + 2.0 * i for i in steps)
    grad = [rng.uniform(0.5, 3.0) for _ in steps]
    if explode_at is not None:
        grad[explode_at] = 42.0
    loss = tuple(3.0 / (1 + 0.001 * i) + rng.uniform(0, 0.01) for i in steps)
    history = {
        "train/loss": Series(steps=steps, times=times, values=loss),
        "train/grad_norm": Series(steps=steps, times=times, values=tuple(grad)),
        "_timestamp": Series(steps=steps, times=times, values=times),
    }
    return RunSnapshot(
        ref=RunRef(source="bench", id="r1", name="bench", project="p", entity="e"),
        state=RunState.RUNNING, heartbeat=times[-1], progress=times[-1], last_step=rows - 1,
        keys=frozenset(history), history=history,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rules = default_rules()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}; {len(rules)} default rules")
    for label, explode in (("healthy run", None), ("one grad spike > 10", args.rows // 2)):
        snap = snapshot(args.rows, explode_at=explode)
        points = sum(len(s) for s in snap.history.values())
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            evaluate(rules, snap, {}, snap.progress + 1, DEFAULT_ALIASES)
            best = min(best, time.perf_counter() - start)
        print(f"{label:>22}: {points:,} points in {best * 1000:.1f} ms "
              f"= {points / best:,.0f} points/s (best of {args.repeat})")


if __name__ == "__main__":
    main()
