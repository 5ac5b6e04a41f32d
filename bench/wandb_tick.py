"""What a tick of the W&B source costs over 1,000 running runs, against the naive way.

1,000 running runs in 10 projects of the fake W&B server (tests/fixtures/fakewandb, real
HTTP, ``--latency`` s injected per request), each with 10 logged keys and 10,000 history
rows — synthetic: computed from the step, so the fake holds no rows — and, under another
entity, the same 1,000 runs with twice the history. Before every measured tick each run
logs 100 new rows. In one process, against the one server:

* runwatch: the whole tick — ``run_tick`` with the W&B source (the real ``wandb.Api`` and
  its wandb-core sidecar), the packaged default rules and a SQLite store — after a first
  tick that sets the cursors; the median of ``--ticks`` ticks. The two history lengths
  tick alternately, so both see the same machine (other work on it included).
* incremental, on the same ticks: the best simple client a user would write — per tick a
  ``wandb.Api()``, then for each run ``api.run(path).scan_history(keys=[the keys runwatch
  reads], min_step=last + 1)`` (its first tick from step 0). Measured over the
  ``--naive-sample`` runs and extrapolated per run; the ``Api()`` itself is counted once.
* naive, afterwards: what the seed scripts do every tick — ``wandb.Api().runs(path)`` for
  every project, then ``run.scan_history()`` of each run's whole history. The listing is
  measured over every run; the scans over ``--naive-sample`` runs and extrapolated per run
  (all runs have the same length): all 1,000 would page through 10M rows per tick.

Printed: GraphQL requests and bytes (request and response bodies, counted by the fake) and
wall time per tick, with where the time goes: injected latency, the fake's own CPU (its
request handlers), wandb-core's CPU, and this process's CPU without the fake's. Figures,
not a test: nothing is asserted about time.

    python bench/wandb_tick.py [--runs 1000] [--projects 10] [--rows 10000] [--new 100]
                               [--latency 0.05] [--ticks 3] [--naive-sample 30]
                               [--naive-ticks 1] [--first-read '10000 rows'] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "daemon"), str(REPO / "tests")]

from fixtures.fakewandb import FakeWandb  # noqa: E402
from runwatch.config import WandbSource as WandbSpec  # noqa: E402
from runwatch.config import default_rules_path, load_rules  # noqa: E402
from runwatch.sources.wandb_api import WandbApiSource  # noqa: E402
from runwatch.sources.wandb_client import WandbClient  # noqa: E402
from runwatch.store.base import open_store  # noqa: E402
from runwatch.tick import run_tick  # noqa: E402

ENTITY = "bench"
KEY = "k" * 40
T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z: where the runs' newest rows start
KEYS = ("train/loss", "train/grad_norm", "train/lr", "train/acc", "val/loss", "val/acc",
        "epoch", "tokens_per_sec", "gpu/mem", "gpu/util")  # 10 logged keys (+ _step etc.)
# What runwatch reads of these runs under the default rules (grad_norm, loss, the progress
# rule's row times): what the incremental client asks for too.
INCR_KEYS = ["train/grad_norm", "train/loss", "_timestamp"]
GOAL_RATIO = 20.0
GOAL_INCR_BYTES = 1.0  # runwatch's steady-tick bytes at most this times the incremental's
GOAL_INCR_REQUESTS = 100.0  # and this many times fewer requests
GOAL_FIRST_REQUESTS = 30
GOAL_FIRST_BYTES = 25e6
GOAL_WALL = 30.0
GOAL_DOUBLING = 0.10


# --- measuring ------------------------------------------------------------------------------


class FakeMeter:
    """The fake's own work: CPU seconds of its request handlers (``time.thread_time``, so
    neither the injected latency nor waiting for the GIL counts)."""

    def __init__(self, fake: FakeWandb):
        self.cpu = 0.0
        self._lock = threading.Lock()
        handle = fake._handle

        def measured(handler) -> None:
            started = time.thread_time()
            try:
                handle(handler)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.cpu += spent

        fake._handle = measured  # type: ignore[method-assign]


def _children_cpu() -> float:
    """CPU seconds of this process's descendants (wandb-core), from /proc; 0 elsewhere."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, AttributeError):
        return 0.0
    mine, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= found
        grew = bool(found)
    return sum(times[pid] for pid in mine if pid != os.getpid())


@dataclass
class Cost:
    """One measured stretch: GraphQL requests and bytes at the fake, and where time went."""

    requests: int = 0
    bytes: int = 0
    wall: float = 0.0
    fake_cpu: float = 0.0  # the fake's request handlers
    core_cpu: float = 0.0  # wandb-core
    python_cpu: float = 0.0  # this process (client, runwatch, engine, store), fake excluded
    in_requests: float = 0.0  # wall time inside GraphQL calls (runwatch only)

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    def scaled(self, factor: float) -> Cost:
        return Cost(*(a * factor for a in _values(self)))


def _values(cost: Cost) -> tuple[float, ...]:
    return (cost.requests, cost.bytes, cost.wall, cost.fake_cpu, cost.core_cpu,
            cost.python_cpu, cost.in_requests)


class Measure:
    """``with Measure(fake, meter) as m: ...`` then ``m.cost``."""

    def __init__(self, fake: FakeWandb, meter: FakeMeter, timer: list[float] | None = None):
        self.fake, self.meter, self.timer = fake, meter, timer
        self.cost = Cost()

    def _counts(self) -> tuple[int, int]:
        with self.fake._lock:  # GraphQL only: wandb-core's own /sdk/otel posts are not ours
            c = self.fake.counters
            ops = [op for op in c.requests if not op.startswith("/")]
            return (sum(c.requests[op] for op in ops),
                    sum(c.request_bytes[op] + c.response_bytes[op] for op in ops))

    def __enter__(self) -> Measure:
        self._start = (self._counts(), self.meter.cpu, _children_cpu(), time.process_time(),
                       self.timer[0] if self.timer else 0.0, time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter()
        (requests, size), fake_cpu, core, cpu, timer, started = self._start
        now_requests, now_size = self._counts()
        fake = self.meter.cpu - fake_cpu
        self.cost = Cost(
            requests=now_requests - requests, bytes=now_size - size, wall=wall - started,
            fake_cpu=fake, core_cpu=_children_cpu() - core,
            python_cpu=time.process_time() - cpu - fake,
            in_requests=(self.timer[0] if self.timer else 0.0) - timer)


def timed_execute(client: WandbClient) -> list[float]:
    """Wrap ``client.execute`` to add up the wall time spent in GraphQL calls."""
    total = [0.0]
    execute = client.execute

    def measured(*args, **kwargs):
        started = time.perf_counter()
        try:
            return execute(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - started

    client.execute = measured  # type: ignore[method-assign]
    return total


# --- the scenarios --------------------------------------------------------------------------


@dataclass
class Figures:
    rows: int
    runs: int
    first_read: object = None  # the source's first_read, as it was configured
    first: Cost = field(default_factory=Cost)
    ticks: list[Cost] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    naive_list: list[Cost] = field(default_factory=list)
    naive_scan: list[Cost] = field(default_factory=list)  # the sample's scans
    naive_sample: int = 0
    incr_first: Cost = field(default_factory=Cost)  # extrapolated to every run
    incr: list[Cost] = field(default_factory=list)  # per steady tick, extrapolated

    @property
    def runwatch(self) -> Cost:
        return median_cost(self.ticks)

    @property
    def incremental(self) -> Cost:
        return median_cost(self.incr)

    @property
    def naive(self) -> Cost:
        """Per tick, extrapolated to every run: measured listing + per-run scan x runs."""
        return median_cost([lst + scan.scaled(self.runs / self.naive_sample)
                            for lst, scan in zip(self.naive_list, self.naive_scan, strict=True)])


def median_cost(costs: list[Cost]) -> Cost:
    """The tick of median wall time (its requests, bytes and breakdown belong together)."""
    ordered = sorted(costs, key=lambda c: c.wall)
    return ordered[(len(ordered) - 1) // 2]


class Scenario:
    """``--runs`` running runs of ``rows`` rows each under an entity of their own, with their
    own W&B source and SQLite store. Both scenarios share the fake, the wandb-core client
    and the machine, and their ticks alternate, so both see the same conditions."""

    def __init__(self, args: argparse.Namespace, fake: FakeWandb, meter: FakeMeter,
                 client: WandbClient, timer: list[float], rows: int, state_dir: str):
        self.args, self.fake, self.meter, self.timer = args, fake, meter, timer
        self.entity = f"bench-{rows}"
        self.projects = [f"project-{p:02d}" for p in range(args.projects)]
        self.created = T0 - rows
        self.length = rows
        self.paths = [
            fake.add_synthetic_run(self.entity, self.projects[i % len(self.projects)],
                                   f"run{i:05d}", keys=KEYS, rows=rows, created_at=self.created,
                                   seed=i, tags=["bench"])
            for i in range(args.runs)
        ]
        count = min(args.naive_sample, len(self.paths))
        self.sample = [self.paths[round(i * (len(self.paths) - 1) / max(1, count - 1))]
                       for i in range(count)]
        self.incr_last: dict[str, int] = {}  # the incremental client's cursor per run
        self.rule_set = load_rules([default_rules_path()], Path.cwd())
        first_read = {"first_read": args.first_read} if args.first_read else {}
        spec = WandbSpec.model_validate({"type": "wandb", "entity": self.entity,
                                         "projects": self.projects, "api_key": KEY,
                                         "base_url": fake.url, **first_read})
        self.first_read = spec.first_read
        self.source = WandbApiSource(spec, client=client)
        self.store = open_store(f"sqlite:///{state_dir}/state-{rows}.db")
        self.figures = Figures(rows=rows, runs=args.runs, naive_sample=count,
                               first_read=self.first_read)

    def log(self) -> None:
        """Every run logs ``--new`` more rows."""
        for path in self.paths:
            self.fake.append_rows(path, self.args.new)
        self.length += self.args.new

    def tick(self, label: str) -> Cost:
        now = self.created + self.length - 1 + 60.0  # a minute after the newest row: healthy
        with Measure(self.fake, self.meter, self.timer) as measured:
            report = run_tick(sources=[self.source], rules=self.rule_set.rules,
                              aliases=self.rule_set.aliases, store=self.store, now=now)
        self.figures.errors.extend(report.errors)
        if report.transitions:
            self.figures.errors.append(f"{len(report.transitions)} alert transitions"
                                       " (healthy runs: expected none)")
        cost = measured.cost
        print(f"  {self.length:>7,} rows, runwatch {label}: {cost.wall:.2f} s,"
              f" {cost.requests} requests, {cost.bytes / 1e6:.2f} MB,"
              f" {report.runs_checked} runs checked", flush=True)
        return cost

    def incremental_tick(self, label: str) -> Cost:
        """The incremental client's tick over the sample, extrapolated to every run."""
        import wandb

        with Measure(self.fake, self.meter) as opening:
            api = wandb.Api(api_key=KEY, overrides={"base_url": self.fake.url}, timeout=60)
        with Measure(self.fake, self.meter) as scanning:
            seen = 0
            for path in self.sample:
                last = self.incr_last.get(path, -1)
                for row in api.run(path).scan_history(keys=INCR_KEYS, min_step=last + 1):
                    last = max(last, row["_step"])
                    seen += 1
                self.incr_last[path] = last
        del api
        want = min(self.length, self.args.new if label != "first tick" else self.length)
        if seen != len(self.sample) * want:
            self.figures.errors.append(f"incremental {label}: {seen:,} rows, expected"
                                       f" {len(self.sample) * want:,}")
        cost = opening.cost + scanning.cost.scaled(len(self.paths) / len(self.sample))
        print(f"  {self.length:>7,} rows, incremental {label}: {len(self.sample)} runs"
              f" {scanning.cost.wall:.2f} s; extrapolated to {len(self.paths)} runs:"
              f" {cost.requests:,.0f} requests, {cost.bytes / 1e6:.2f} MB", flush=True)
        return cost

    def naive_tick(self, label: str) -> None:
        """What the seed scripts do: list every run, scan each one's whole history (here:
        the sample's)."""
        import wandb

        with Measure(self.fake, self.meter) as listing:
            api = wandb.Api(api_key=KEY, overrides={"base_url": self.fake.url}, timeout=60)
            listed = {run.id: run for project in self.projects
                      for run in api.runs(f"{self.entity}/{project}")}
        with Measure(self.fake, self.meter) as scanning:
            seen = 0
            for path in self.sample:
                for row in listed[path.rsplit("/", 1)[-1]].scan_history():
                    seen += row["_step"] >= 0
        del api, listed
        if seen != len(self.sample) * self.length:
            self.figures.errors.append(f"naive scans returned {seen:,} rows, expected"
                                       f" {len(self.sample) * self.length:,}")
        self.figures.naive_list.append(listing.cost)
        self.figures.naive_scan.append(scanning.cost)
        per_run = scanning.cost.scaled(1 / len(self.sample))
        print(f"  {self.length:>7,} rows, naive {label}: listing {len(self.paths)} runs"
              f" {listing.cost.wall:.2f} s, {listing.cost.requests} requests,"
              f" {listing.cost.bytes / 1e6:.2f} MB; scanning {len(self.sample)} runs"
              f" ({seen:,} rows) {scanning.cost.wall:.1f} s, per run {per_run.wall:.2f} s,"
              f" {per_run.requests:.0f} requests, {per_run.bytes / 1e6:.2f} MB", flush=True)


def measure(args: argparse.Namespace, fake: FakeWandb, meter: FakeMeter, client: WandbClient,
            timer: list[float], state_dir: str) -> list[Figures]:
    fake.keep_received = False
    both = [Scenario(args, fake, meter, client, timer, rows, state_dir)
            for rows in (args.rows, 2 * args.rows)]
    fake.latency = args.latency
    print(f"uptime: {_uptime()}")
    print(f"{args.runs:,} running runs x {args.rows:,} and x {2 * args.rows:,} rows"
          f" ({len(KEYS)} keys), {args.projects} projects, {args.new} new rows per run per"
          f" tick, {args.latency * 1000:g} ms per request; load average"
          f" {os.getloadavg()[0]:.2f}", flush=True)
    for scenario in both:
        scenario.figures.first = scenario.tick("first tick (sets the cursors)")
        scenario.figures.incr_first = scenario.incremental_tick("first tick")
    for n in range(args.ticks):
        for scenario in both if n % 2 == 0 else both[::-1]:
            scenario.log()
            scenario.figures.ticks.append(scenario.tick(f"tick {n + 1}"))
            scenario.figures.incr.append(scenario.incremental_tick(f"tick {n + 1}"))
    for n in range(args.naive_ticks):  # over the history of the last runwatch tick
        for scenario in both:
            scenario.naive_tick(f"tick {n + 1}")
    fake.latency = 0.0
    for scenario in both:
        scenario.store.close()
    return [scenario.figures for scenario in both]


# --- the report -----------------------------------------------------------------------------


def cpu(cost: Cost) -> float:
    return cost.fake_cpu + cost.core_cpu + cost.python_cpu


def breakdown(cost: Cost, latency: float) -> str:
    waited = cost.requests * latency
    return (f"latency {waited:.2f} s, fake CPU {cost.fake_cpu:.2f} s, wandb-core CPU"
            f" {cost.core_cpu:.2f} s, Python CPU {cost.python_cpu:.2f} s (CPU in all"
            f" {cpu(cost):.2f} s)")


def report(args: argparse.Namespace, results: list[Figures], elapsed: float) -> None:
    base, double = results
    print(f"\n=== W&B source vs naive, per tick ({args.runs:,} running runs, {args.projects}"
          f" projects, {len(KEYS)} keys, {args.new} new rows per run per tick,"
          f" {args.latency * 1000:g} ms per request) ===")
    print(f"{'':34}{'rows/run':>9}{'requests':>10}{'MB':>10}{'wall s':>9}  how")
    for figures in results:
        rw, naive = figures.runwatch, figures.naive
        print(f"{'runwatch, median of ' + str(len(figures.ticks)) + ' ticks':34}"
              f"{figures.rows:>9,}{rw.requests:>10,}{rw.bytes / 1e6:>10.2f}{rw.wall:>9.2f}"
              "  measured, whole tick")
        inc = figures.incremental
        print(f"{'incremental (run + scan_history)':34}{figures.rows:>9,}{inc.requests:>10,.0f}"
              f"{inc.bytes / 1e6:>10.2f}{inc.wall:>9.1f}  extrapolated: median of"
              f" {len(figures.incr)} ticks, {figures.naive_sample} runs x"
              f" {args.runs / figures.naive_sample:g}")
        print(f"{'naive (Api.runs + scan_history)':34}{figures.rows:>9,}{naive.requests:>10,.0f}"
              f"{naive.bytes / 1e6:>10.0f}{naive.wall:>9.0f}  extrapolated: listing measured,"
              f" scans of {figures.naive_sample} runs x {args.runs / figures.naive_sample:g}")
        lst, scan = figures.naive_list, figures.naive_scan
        print(f"{'  naive, measured part':34}{figures.rows:>9,}"
              f"{lst[0].requests + scan[0].requests:>10,}"
              f"{(lst[0].bytes + scan[0].bytes) / 1e6:>10.1f}{lst[0].wall + scan[0].wall:>9.1f}"
              f"  listing {args.runs} runs + {figures.naive_sample} full scans"
              f" ({len(lst)} tick{'s' if len(lst) > 1 else ''})")
    print("\nwhere a runwatch tick's time goes (median tick):")
    for figures in results:
        rw = figures.runwatch
        print(f"  {figures.rows:,} rows: wall {rw.wall:.2f} s = in GraphQL calls"
              f" {rw.in_requests:.2f} s + runwatch outside them {rw.wall - rw.in_requests:.2f} s;"
              f" {breakdown(rw, args.latency)}")
    print("where a naive tick's time goes (extrapolated):")
    for figures in results:
        print(f"  {figures.rows:,} rows: wall {figures.naive.wall:.0f} s;"
              f" {breakdown(figures.naive, args.latency)}")
    print(f"first tick (no cursors yet; runwatch reads first_read = {results[0].first_read}"
          " or the rules' window if larger; the incremental client its whole history):")
    for figures in results:
        first, inc = figures.first, figures.incr_first
        print(f"  {figures.rows:,} rows: runwatch {first.wall:.1f} s, {first.requests} requests,"
              f" {first.bytes / 1e6:.1f} MB; {breakdown(first, args.latency)}")
        print(f"  {figures.rows:,} rows: incremental {inc.requests:,.0f} requests,"
              f" {inc.bytes / 1e6:.1f} MB (extrapolated)")

    rw, naive, inc = base.runwatch, base.naive, base.incremental
    print("\ngoals:")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    bytes_vs_inc, requests_vs_inc = rw.bytes / inc.bytes, inc.requests / rw.requests
    print(f"  at {base.rows:,} rows, bytes {bytes_vs_inc:.2f}x the incremental client's"
          f" (goal <= {GOAL_INCR_BYTES:g}x): {verdict(bytes_vs_inc <= GOAL_INCR_BYTES)}")
    print(f"  at {base.rows:,} rows, requests {requests_vs_inc:,.0f}x fewer than the incremental"
          f" client's (goal >= {GOAL_INCR_REQUESTS:g}x):"
          f" {verdict(requests_vs_inc >= GOAL_INCR_REQUESTS)}")
    first = base.first
    first_ok = first.requests <= GOAL_FIRST_REQUESTS and first.bytes <= GOAL_FIRST_BYTES
    print(f"  first tick at {base.rows:,} rows: {first.requests} requests (goal <="
          f" {GOAL_FIRST_REQUESTS}), {first.bytes / 1e6:.1f} MB (goal <="
          f" {GOAL_FIRST_BYTES / 1e6:g}): {verdict(first_ok)}")
    fewer_bytes, fewer_requests = naive.bytes / rw.bytes, naive.requests / rw.requests
    print(f"  at {base.rows:,} rows, bytes {fewer_bytes:,.0f}x fewer than naive"
          f" (goal >= {GOAL_RATIO:g}x): {verdict(fewer_bytes >= GOAL_RATIO)}")
    print(f"  at {base.rows:,} rows, requests {fewer_requests:,.0f}x fewer than naive"
          f" (goal >= {GOAL_RATIO:g}x): {verdict(fewer_requests >= GOAL_RATIO)}")
    print(f"  tick wall time {rw.wall:.2f} s (goal < {GOAL_WALL:g} s):"
          f" {verdict(rw.wall < GOAL_WALL)}")
    two = double.runwatch
    for what, a, b, form in (("requests", rw.requests, two.requests, ",.0f"),
                             ("bytes", rw.bytes, two.bytes, ",.0f"),
                             ("wall time (s)", rw.wall, two.wall, ".2f")):
        change = (b - a) / a if a else 0.0
        print(f"  {base.rows:,} -> {double.rows:,} rows: {what} {a:{form}} -> {b:{form}}"
              f" ({change:+.1%}, goal within {GOAL_DOUBLING:.0%}):"
              f" {verdict(abs(change) < GOAL_DOUBLING)}")
    change = (cpu(two) - cpu(rw)) / cpu(rw) if cpu(rw) else 0.0
    print(f"  (for reference, CPU per tick in all processes: {cpu(rw):.2f} -> {cpu(two):.2f} s,"
          f" {change:+.1%}; every tick's wall time, s:"
          f" {' '.join(f'{c.wall:.2f}' for c in base.ticks)} |"
          f" {' '.join(f'{c.wall:.2f}' for c in double.ticks)})")
    for figures in results:
        for error in dict.fromkeys(figures.errors):
            print(f"  ! {figures.rows:,} rows: {error}")
    print(f"uptime at the end: {_uptime()}")
    print(f"\n{_cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
          f" wandb {_wandb_version()}; load average at the end {os.getloadavg()[0]:.2f};"
          f" benchmark took {elapsed / 60:.1f} min")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _uptime() -> str:
    """``uptime``'s line: what else the machine was doing (its load averages)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def _wandb_version() -> str:
    import wandb

    return wandb.__version__


# --- setup ----------------------------------------------------------------------------------


def isolate_wandb(home: str) -> None:
    """wandb-core with its own directories, silent, and no address but 127.0.0.1."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT",
                 "WANDB_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    os.environ["HOME"] = home
    os.environ["WANDB_SILENT"] = "true"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        path = Path(home) / f"wandb-{name.lower()}"
        path.mkdir()
        os.environ[f"WANDB_{name}"] = str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10_000, help="history rows per run")
    parser.add_argument("--new", type=int, default=100, help="new rows per run per tick")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--ticks", type=int, default=3, help="measured steady-state ticks")
    parser.add_argument("--naive-sample", type=int, default=30,
                        help="runs whose full history the naive way scans (extrapolated)")
    parser.add_argument("--naive-ticks", type=int, default=1,
                        help="ticks on which the naive way is measured too")
    parser.add_argument("--first-read", default=None,
                        help="the source's first_read (default: the source's own, 10000 rows)")
    parser.add_argument("--quick", action="store_true",
                        help="a small configuration (a smoke run, under a minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.projects, args.rows, args.ticks, args.naive_sample = 60, 3, 2000, 2, 4
    args.naive_ticks = max(1, min(args.naive_ticks, args.ticks))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runwatch-wandb-bench-") as home:
        isolate_wandb(home)
        fake = FakeWandb()
        fake.start()
        meter = FakeMeter(fake)
        client = WandbClient(base_url=fake.url, api_key=KEY, timeout=60.0)
        timer = timed_execute(client)
        try:
            results = measure(args, fake, meter, client, timer, home)
        finally:
            client.close()
            fake.stop()
        report(args, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
