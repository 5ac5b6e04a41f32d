"""What health reports cost: ``characterize`` of a local and a W&B run, and the daily
digest over 1,000 W&B runs. Figures, not a test: nothing is asserted.

1. a 1,000,000-step local run directory (synthesized, see benchdata.py): ``read_run`` and
   ``characterize``, against the simple reader a user would write — every history record
   into a dict (the fixture's unframer, protobuf, ``json.loads``) — and the same loss trend;
2. a W&B run of 100,000 (and 10,000) synthetic rows in the fake W&B server, ``--latency``
   per request: ``load_run`` + ``characterize``, against the seed scripts' way,
   ``wandb.Api().run(path).scan_history(keys=[...])`` of every row;
3. the digest of 1,000 W&B runs in 10 projects (70 % running, 30 % ended in the last day,
   2,000-10,000 rows each, one row a second: short runs, so the replay has few ticks):
   ``wandb_runs`` + ``compose`` + Slack/text/HTML/JSON + PNG.

Each figure is the median of ``--repeats`` runs. Requests and bytes are GraphQL only, as
the fake counted them (response bodies), beside what runwatch's client counted.

Run: .venv/bin/python bench/reports.py [--repeats 3] [--latency 0.05] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import benchdata
from benchdata import log_of
from wandb.proto import wandb_internal_pb2 as pb
from wandb_tick import KEY, FakeMeter, _cpu_model, _wandb_version, isolate_wandb

from fixtures import logwriter
from fixtures.fakewandb import FakeWandb
from runwatch.analysis import characterize, curves, report_keys
from runwatch.analysis.digest import compose
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import Series
from runwatch.notify import charts, digest_render
from runwatch.reports import WandbAccess, load_run, parse_run, wandb_runs
from runwatch.sources.rundir_reports import read_run

RULES = load_rules([default_rules_path()], Path(".")).rules
KEYS = report_keys(RULES, DEFAULT_ALIASES)
SEED_KEYS = ["train/loss", "train/grad_norm"]  # what the seed script scans
RUN_KEYS = ("train/loss", "train/grad_norm", "train/lr", "eval/loss")
DIGEST_KEYS = ("loss", "train/grad_norm", "eval/loss")
GOAL_REQUESTS, GOAL_BYTES, GOAL_DIGEST_S = 3, 1_000_000, 60.0
HUGE_REQUEST = 1_000_000  # bytes per request past which the smaller budget is tried too


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def graphql_counts(fake: FakeWandb) -> tuple[int, int]:
    """GraphQL requests and response bytes so far (wandb-core's own /sdk posts left out)."""
    with fake._lock:
        c = fake.counters
        ops = [op for op in c.requests if not op.startswith("/")]
        return sum(c.requests[op] for op in ops), sum(c.response_bytes[op] for op in ops)


def median_by(items: list[dict], key: str) -> dict:
    """The item of median ``key`` (its other figures belong with it)."""
    return sorted(items, key=lambda item: item[key])[(len(items) - 1) // 2]


def trend_of(rows: list[dict], key: str) -> curves.Trend | None:
    points = [(r["_step"], r.get("_timestamp", float("nan")), r[key]) for r in rows if key in r]
    steps, times, values = zip(*points, strict=True)
    return curves.trend(Series(steps=steps, times=times, values=values))


# --- 1. a local run directory ---------------------------------------------------------------


def dict_rows(log: Path) -> list[dict]:
    """The simple reader: every history record as a dict, every value through json.loads."""
    rows = []
    for data in logwriter.unframe(log.read_bytes()):
        record = pb.Record.FromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({".".join(item.nested_key) or item.key: json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def local_figures(rows: int, repeats: int) -> None:
    run = benchdata.sdk_run(rows) if rows <= 100_000 else benchdata.big_log(rows)
    print(f"\n== 1. characterize a local run directory: {rows:,} steps, log"
          f" {log_of(run).stat().st_size / 1e6:.0f} MB ==")

    def runwatch() -> dict:
        started = time.perf_counter()
        snapshot, errors = read_run(run, KEYS)
        read = time.perf_counter() - started
        now = (snapshot.progress or 0.0) + 60.0  # a minute after its newest row
        report = characterize(snapshot, rules=RULES, aliases=DEFAULT_ALIASES, now=now)
        judged = time.perf_counter() - started - read
        return {"read": read, "judge": judged, "total": read + judged, "report": report,
                "rows": len(snapshot.history["_timestamp"].steps), "errors": errors}

    def simple() -> dict:
        started = time.perf_counter()
        history = dict_rows(log_of(run))
        read = time.perf_counter() - started
        trend = trend_of(history, "train/loss")
        judged = time.perf_counter() - started - read
        return {"read": read, "judge": judged, "total": read + judged, "trend": trend,
                "rows": len(history)}

    def measured(name: str, fn) -> dict:
        done = [fn() for _ in range(repeats)]
        mid = {k: statistics.median(d[k] for d in done) for k in ("read", "judge", "total")}
        last = done[-1]
        del done  # before the traced run: only its own allocations count
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name}: read {mid['read']:.2f} s + judge {mid['judge']:.2f} s ="
              f" {mid['total']:.2f} s, {last['rows'] / mid['total']:,.0f} rows/s; peak"
              f" {peak / 1e6:,.0f} MB (tracemalloc peak, one extra untimed run)")
        return {**last, **mid}

    mine = measured("runwatch read_run + characterize", runwatch)
    report = mine["report"]
    print(f"  verdict {report.health}, {report.liveness}; {report.loss_key}"
          f" {report.loss.direction} {report.loss.change:+.1%}; damage: {mine['errors']}")
    plain = measured("simple reader (rows as dicts) + loss trend", simple)
    print(f"  {plain['trend'].direction} {plain['trend'].change:+.1%} (the same trend function"
          f" over the same points); runwatch {plain['total'] / mine['total']:.1f}x faster")


# --- 2. one W&B run -------------------------------------------------------------------------


def wandb_run_figures(fake: FakeWandb, lengths: list[int], repeats: int, latency: float) -> None:
    import wandb

    print(f"\n== 2. characterize a W&B run (fake W&B server, {latency * 1000:g} ms per"
          f" request, keys {', '.join(RUN_KEYS)}) ==")
    now = time.time()
    paths = {rows: fake.add_synthetic_run("single", "report", f"run-{rows}", keys=RUN_KEYS,
                                          rows=rows, created_at=now - rows - 60)
             for rows in lengths}

    def runwatch(path: str) -> dict:
        access = WandbAccess(base_url=fake.url, api_key=KEY)
        before, started = graphql_counts(fake), time.perf_counter()
        snapshot = load_run(parse_run(path), KEYS, access=access)
        report = characterize(snapshot, rules=RULES, aliases=DEFAULT_ALIASES, now=now)
        seconds, after = time.perf_counter() - started, graphql_counts(fake)
        figures = {"seconds": seconds, "requests": after[0] - before[0],
                   "bytes": after[1] - before[1], "client": access.requests(),
                   "client_bytes": access.bytes_received(), "health": report.health,
                   "trend": report.loss, "points": len(snapshot.history["train/loss"].steps)}
        access.close()
        return figures

    def seed_way(path: str) -> dict:
        before, started = graphql_counts(fake), time.perf_counter()
        api = wandb.Api(api_key=KEY, overrides={"base_url": fake.url}, timeout=60)
        rows = list(api.run(path).scan_history(keys=SEED_KEYS))
        trend = trend_of(rows, "train/loss")
        seconds, after = time.perf_counter() - started, graphql_counts(fake)
        return {"seconds": seconds, "requests": after[0] - before[0],
                "bytes": after[1] - before[1], "trend": trend, "points": len(rows)}

    print(f"{'':40}{'rows':>9}{'requests':>10}{'MB':>9}{'seconds':>9}  loss trend")
    for rows, path in paths.items():
        mine = median_by([runwatch(path) for _ in range(repeats)], "seconds")
        seed = median_by([seed_way(path) for _ in range(repeats)], "seconds")
        for name, f in (("runwatch load_run + characterize", mine),
                        ("seed: Api().run().scan_history(keys)", seed)):
            print(f"{name:40}{rows:>9,}{f['requests']:>10}{f['bytes'] / 1e6:>9.3f}"
                  f"{f['seconds']:>9.2f}  {f['trend'].change:+.1%} over {f['points']:,} points")
        print(f"  runwatch: {mine['client']} requests, {mine['client_bytes'] / 1e6:.3f} MB by its"
              f" client's counters; verdict {mine['health']}; seed/runwatch: requests"
              f" {seed['requests'] / mine['requests']:.0f}x, bytes"
              f" {seed['bytes'] / mine['bytes']:.0f}x, seconds"
              f" {seed['seconds'] / mine['seconds']:.1f}x")
        ok = mine["requests"] <= GOAL_REQUESTS and mine["bytes"] < GOAL_BYTES
        print(f"  goal <= {GOAL_REQUESTS} requests and < {GOAL_BYTES / 1e6:g} MB at {rows:,}"
              f" rows: {verdict(ok)}")


# --- 3. the digest --------------------------------------------------------------------------


def add_digest_runs(fake: FakeWandb, runs: int, projects: list[str], now: float) -> int:
    """``runs`` synthetic runs, 70 % running (newest row a minute ago), 30 % ended within
    the last day; the number running."""
    rng = random.Random(7)
    running = 0
    for i in range(runs):
        rows = rng.randint(2000, 10_000)
        if i % 10 < 7:
            state, end, running = "running", now - 60, running + 1
        else:
            state = rng.choice(("finished", "finished", "failed", "crashed"))
            end = now - rng.uniform(600, 23 * 3600)
        fake.add_synthetic_run("digest", projects[i % len(projects)], f"run{i:05d}",
                               keys=DIGEST_KEYS, rows=rows, created_at=end - rows + 1,
                               state=state, seed=i, config={"max_steps": 10_000})
    return running


def digest_once(fake: FakeWandb, meter: FakeMeter, projects: list[str], now: float,
                budget: dict) -> dict:
    access = WandbAccess(base_url=fake.url, api_key=KEY)
    since = now - 86_400
    before, fake_cpu, started = graphql_counts(fake), meter.cpu, time.perf_counter()
    found = wandb_runs(access, entity="digest", projects=projects, since=since, keys=KEYS,
                       **budget)
    marks = [time.perf_counter()]
    after = graphql_counts(fake)
    digest = compose(runs=found.runs, alerts=[], start=since, end=now, rules=RULES,
                     aliases=DEFAULT_ALIASES, errors=found.errors)
    marks.append(time.perf_counter())
    blocks = digest_render.slack_blocks(digest)
    sizes = {"slack": len(json.dumps(blocks)), "text": len(digest_render.text(digest)),
             "html": len(digest_render.html(digest)),
             "json": len(json.dumps(digest_render.body(digest)))}
    marks.append(time.perf_counter())
    png = charts.digest_png(digest.running, digest.firing)
    marks.append(time.perf_counter())
    access.close()
    read, composed, rendered, drawn = (b - a for a, b in zip([started, *marks], marks,
                                                              strict=False))
    return {"read": read, "compose": composed, "render": rendered, "png": drawn,
            "total": marks[-1] - started, "requests": after[0] - before[0],
            "bytes": after[1] - before[1], "fake_cpu": meter.cpu - fake_cpu,
            "runs": len(found.runs), "errors": found.errors, "digest": digest,
            "blocks": len(blocks),
            "sizes": sizes, "png_bytes": len(png or b"")}


def digest_figures(fake: FakeWandb, meter: FakeMeter, runs: int, project_count: int,
                   repeats: int, latency: float) -> None:
    now = time.time()
    projects = [f"project-{p:02d}" for p in range(project_count)]
    running = add_digest_runs(fake, runs, projects, now)
    print(f"\n== 3. digest of {runs:,} W&B runs in {project_count} projects ({running} running,"
          f" {runs - running} ended in the last day; keys {', '.join(DIGEST_KEYS)};"
          f" {latency * 1000:g} ms per request) ==")
    budgets = [{}, {"samples": 100, "recent": 50}]
    for budget in budgets:
        f = median_by([digest_once(fake, meter, projects, now, budget)
                       for _ in range(repeats)], "total")
        name = ", ".join(f"{k}={v}" for k, v in budget.items()) or "default budget"
        digest = f["digest"]
        outcomes = {str(state): n for state, n in digest.outcome_counts().items()}
        print(f"{name}: {f['total']:.2f} s = read {f['read']:.2f} + compose {f['compose']:.2f}"
              f" + render {f['render']:.2f} + png {f['png']:.2f}; {f['requests']} requests"
              f" ({f['requests'] * latency:.1f} s of latency), {f['bytes'] / 1e6:.1f} MB"
              f" ({f['bytes'] / max(1, f['requests']) / 1e6:.2f} MB/request); fake CPU"
              f" {f['fake_cpu']:.2f} s (goal < {GOAL_DIGEST_S:g} s:"
              f" {verdict(f['total'] < GOAL_DIGEST_S)})")
        print(f"  {f['runs']} runs read, {len(digest.running)} running"
              f" {dict((str(h), n) for h, n in digest.health_counts().items())},"
              f" {len(digest.ended)} ended {outcomes}; errors {list(f['errors'])}")
        print(f"  Slack {f['blocks']} blocks, {f['sizes']['slack'] / 1e3:.0f} kB; text"
              f" {f['sizes']['text'] / 1e3:.0f} kB; HTML {f['sizes']['html'] / 1e3:.0f} kB;"
              f" JSON {f['sizes']['json'] / 1e3:.0f} kB; PNG {f['png_bytes'] / 1e3:.0f} kB")
        if f["bytes"] / max(1, f["requests"]) <= HUGE_REQUEST:
            break


# --- the machine and main -------------------------------------------------------------------


def machine() -> None:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {uptime}")
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, Python"
          f" {platform.python_version()}, wandb {_wandb_version()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--local-rows", type=int, default=1_000_000)
    parser.add_argument("--wandb-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1000, help="W&B runs in the digest")
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.local_rows, args.wandb_rows, args.runs, args.projects = (
            1, 100_000, 20_000, 60, 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    machine()
    local_figures(args.local_rows, args.repeats)
    with tempfile.TemporaryDirectory(prefix="runwatch-reports-bench-") as home:
        isolate_wandb(home)
        fake = FakeWandb()
        fake.start()
        fake.keep_received = False
        meter = FakeMeter(fake)
        fake.latency = args.latency
        try:
            wandb_run_figures(fake, [args.wandb_rows, args.wandb_rows // 10], args.repeats,
                              args.latency)
            digest_figures(fake, meter, args.runs, args.projects, args.repeats, args.latency)
        finally:
            fake.stop()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; took"
          f" {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
