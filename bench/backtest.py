"""How fast `runwatch backtest` replays past runs: figures, not a test.

A 200,000-step run directory (the SDK bench run's records, renumbered and framed as
wandb-core frames them: see benchdata.py), logged at one step a second and at ten a second,
replayed with the default rules at a tick a minute of its own clock, each point seen 15 s
late, the notification pipeline counting what would be sent. Measured, in run-steps per
second: the replay (runwatch's: the engine called directly, tick by tick), the same with
reading the directory, and beside it the straightforward replay a user would write with
runwatch's parts — the daemon's whole tick (``run_tick`` into an in-memory store) at every
tick of the run's clock (what ``runwatch test-rules`` runs). Then the same run served by the
fake W&B server (tests/fixtures/fakewandb) and read as a W&B backtest reads it: requests and
bytes for the replayed run.

Run: .venv/bin/python bench/backtest.py
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import benchdata

from runwatch.backtest import Options, backtest_run, replay_of
from runwatch.config import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.replay import ReplaySource
from runwatch.sources.rundir_reports import read_run
from runwatch.store.memory import MemoryStore
from runwatch.tick import run_tick, wanted_keys

STEPS = 200_000
PACES = (1.0, 0.1)  # seconds per step
INTERVAL, DELAY = 60.0, 15.0
GOAL_STEPS_PER_S = 1_000_000
REPEATS = 3


def paced_run(pace: float, keys) -> Path:
    """The bench run directory logging a step every ``pace`` seconds, from a minute after
    the SDK run it is made from started (its head records: run, config, stats)."""
    started = read_run(benchdata.sdk_run(), keys)[0].started
    return benchdata.big_log(STEPS, pace=pace, t0=float(started) + 60.0)


def tick_replay(run, rules, aliases) -> int:
    """The baseline: the daemon's tick, into an in-memory store, every interval."""
    source, store = ReplaySource([run]), MemoryStore()
    start, ticks = run.first_time + run.delay, 0
    end = run.last_time + run.delay + 3600.0  # as backtest_run: its tail past the last sign
    while True:
        ticks += 1
        now = start + ticks * INTERVAL
        run_tick(sources=[source], rules=rules, aliases=aliases, store=store, now=now)
        if now >= end or source.all_ended:
            return ticks


def timed(call, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = call(*args, **kwargs)
    return time.perf_counter() - started, out


def main() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    rule_set = load_rules([default_rules_path()], Path("."))
    rules, aliases = rule_set.rules, rule_set.aliases
    keys = wanted_keys(rules, aliases) | {"_timestamp"}
    options = Options(interval=INTERVAL)
    for pace in PACES:
        run_dir = paced_run(pace, keys)
        reads, replays, baselines = [], [], []
        for _ in range(REPEATS):
            read_s, (snapshot, _) = timed(read_run, run_dir, keys)
            run = replay_of(snapshot, DELAY)
            replay_s, result = timed(backtest_run, run, rules, aliases, options)
            base_s, base_ticks = timed(tick_replay, run, rules, aliases)
            reads.append(read_s)
            replays.append(replay_s)
            baselines.append(base_s)
        steps = result.steps
        assert steps == STEPS, steps
        replay, read, base = (statistics.median(x) for x in (replays, reads, baselines))
        rate, with_read = steps / replay, steps / (replay + read)
        print(f"{steps:,} steps at {1 / pace:g} a second, {result.ticks:,} ticks of"
              f" {INTERVAL:g}s ({steps / result.ticks:.0f} steps a tick), median of {REPEATS}:")
        print(f"  replay: {rate:,.0f} steps/s ({replay * 1000:.0f} ms,"
              f" {replay / result.ticks * 1e6:.0f} us a tick; goal >= {GOAL_STEPS_PER_S:,}:"
              f" {'met' if rate >= GOAL_STEPS_PER_S else 'MISSED'}); with reading the"
              f" directory ({read * 1000:.0f} ms): {with_read:,.0f} steps/s")
        print(f"  the daemon's tick at every tick (baseline, {base_ticks:,} ticks):"
              f" {steps / base:,.0f} steps/s — runwatch backtest {base / replay:.1f}x faster")
    wandb_costs(rules, aliases, keys)
    print(f"uptime: {os.popen('uptime').read().strip()}")


def wandb_costs(rules, aliases, keys) -> None:
    from fixtures.fakewandb import FakeWandb
    from runwatch.sources.wandb_client import WandbClient
    from runwatch.sources.wandb_reports import read_whole, run_node

    server = FakeWandb()
    server.start()
    try:
        path = server.load_rundir(paced_run(PACES[0], keys), entity="team", project="bench")
        entity, project, run_id = path.split("/")
        client = WandbClient(base_url=server.url, api_key="k" * 40, timeout=120.0)
        try:
            before = (client.requests, client.bytes_received)
            read_s, read = timed(lambda: read_whole(
                client, entity=entity, project=project,
                nodes=[run_node(client, entity=entity, project=project, run_id=run_id,
                                source="wandb", app_url=server.url)],
                keys=lambda snap: sorted(k for k in snap.keys | {"_timestamp"} if k in keys)))
            requests = client.requests - before[0]
            received = client.bytes_received - before[1]
        finally:
            client.close()
        snapshot = read[path]
        replay_s, result = timed(backtest_run, replay_of(snapshot, DELAY), rules, aliases,
                                 Options(interval=INTERVAL))
        rows = len(snapshot.history["_timestamp"].steps)
        print(f"W&B (fake server), the {rows:,}-step run: {requests} requests,"
              f" {received / 1e6:.1f} MB ({received / rows:.0f} bytes a step), read in"
              f" {read_s:.1f} s; replayed in {replay_s * 1000:.0f} ms,"
              f" {result.notifications} notifications")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
