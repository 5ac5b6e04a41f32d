"""What the store costs on SQLite and on PostgreSQL, side by side: figures, not a test.

1. The whole tick of bench/rundir_tick.py (1,000 run directories, 500 live; the default
   rules) with each store: no new data, and 100 new steps in each live run — the store's
   writer holding quiet runs back as the daemon's does.
2. A tick with 10,000 alerts firing (1,000 run directories, 20 rules that fire on each of
   the 500 live runs): the first, which fires them all, and an idle one after it.
3. Operations per second through the store API: a commit of 100 moved alerts (a whole-row
   write each: their status changes), a commit of 100 cursors, an enqueue + claim +
   complete of one outbox entry.

PostgreSQL: the server at RUNWATCH_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/
test), in a schema of its own, dropped afterwards. Goal: an idle tick on PostgreSQL within
2× SQLite's.
4. Takeover: two real `runwatch run` replicas on the PostgreSQL store (lease_ttl 5 s, one
   source every 2 s); the time from the leader's SIGKILL — and from its clean SIGTERM — to
   the standby's /metrics saying runwatch_leader 1 (goal: within lease_ttl + the interval).

Run: .venv/bin/python bench/store.py
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import benchdata
import rundir_tick

from fixtures import logwriter
from pgtest import PG_URL, Schema
from runwatch.config import default_config
from runwatch.config.rules import load_rules
from runwatch.model import AlertState, AlertStatus, RunRef, RunState, Severity, fingerprint
from runwatch.service import tune_gc
from runwatch.sources.rundir import RundirSource
from runwatch.store.base import OutboxEntry, open_store
from runwatch.tick import run_tick

T0 = 1_796_000_000.0


def ticker(url: str, root: Path, rule_set: Any, now: float) -> tuple[Any, Any]:
    """The store (its writer: one process, no heartbeat, a lease that never runs out) and
    a function running one tick over ``root`` at ``now``, in milliseconds."""
    store = open_store(url)
    store.claim_writer("bench", ttl=1e9)
    source = RundirSource("bench", [root])

    def tick() -> float:
        started = time.perf_counter()
        run_tick(sources=[source], rules=rule_set.rules, aliases=rule_set.aliases,
                 store=store, now=now)
        return (time.perf_counter() - started) * 1000

    return store, tick


def ticks(url: str, root: Path, live_logs: list[Path], now: float) -> dict:
    store, tick = ticker(url, root, default_config([root]).rule_set(), now)
    first = tick()
    tick()
    idle = statistics.median(tick() for _ in range(7))
    _, templates = benchdata.step_templates(benchdata.sdk_run())
    busy = []
    for r in range(3):
        records = list(benchdata.renumbered(templates, 20_000 + 300 * r, 2000 + 100 * r, 100,
                                            now - 60))
        framed = logwriter.frame(records, at=live_logs[0].stat().st_size)
        for log in live_logs:
            with open(log, "ab") as file:
                file.write(framed)
        busy.append(tick())
    started = time.perf_counter()
    store.close()  # writes what the writer held
    stop = (time.perf_counter() - started) * 1000
    return {"first": first, "idle": idle, "busy": statistics.median(busy), "stop": stop}


FIRING_RULES = "rules:\n" + "".join(
    f"  - {{name: always-{i}, kind: threshold, metric: loss, op: '>', value: -1.0e9,"
    f" severity: warning}}\n" for i in range(20))


def firing(url: str, root: Path, now: float, folder: Path) -> dict:
    """A tick that fires 10,000 alerts, then idle ones with them firing."""
    (folder / "firing.yaml").write_text(FIRING_RULES)
    rule_set = load_rules(["firing.yaml"], folder, default_config([root]).aliases)
    store, tick = ticker(url, root, rule_set, now)
    first = tick()
    count = len(store.alerts(status=AlertStatus.FIRING))
    idle = statistics.median(tick() for _ in range(5))
    store.close()
    return {"firing_first": first, "firing_idle": idle, "firing": count}


def operations(url: str) -> dict:
    store = open_store(url)
    alerts = [AlertState(fingerprint=fingerprint(f"rule-{i % 8}", ref), rule=f"rule-{i % 8}",
                         run=ref, severity=Severity.WARNING, status=AlertStatus.FIRING,
                         first_seen=T0, last_seen=T0, fired_at=T0, active_since=T0,
                         run_state=RunState.RUNNING, value=1.0, step=1)
              for i in range(100)
              for ref in [RunRef(source="b", id=f"r{i // 8}", name=f"r{i // 8}")]]
    commits = []
    for n in range(20):
        moved = [replace(a, status=AlertStatus.RESOLVED if n % 2 else AlertStatus.FIRING,
                         last_seen=T0 + n) for a in alerts]
        started = time.perf_counter()
        store.commit_tick(source="b", alerts=moved, cursors={}, now=T0 + n)
        commits.append(time.perf_counter() - started)
    cursor_commits = []
    for n in range(20):
        cursors = {f"run-{i}": f'{{"offset": {n * 1000 + i}}}' for i in range(100)}
        started = time.perf_counter()
        store.commit_tick(source="c", alerts=[], cursors=cursors, now=T0 + n)
        cursor_commits.append(time.perf_counter() - started)
    cycles = []
    for n in range(50):
        entry = OutboxEntry(id=f"m{n}", group_key=f"g{n}", receiver="slack",
                            firing=frozenset({"a"}), resolved=frozenset(), payload="{}",
                            created_at=T0, expires_at=T0 + 86400, next_attempt_at=T0)
        started = time.perf_counter()
        store.enqueue([entry])
        (taken,) = store.claim_outbox(T0, claimant="bench", lease=60, limit=1)
        store.complete_outbox(taken.id, claimant="bench", refs={}, refs_expire_at=T0 + 86400)
        cycles.append(time.perf_counter() - started)
    store.close()
    return {"commit": statistics.median(commits) * 1000,
            "cursors": statistics.median(cursor_commits) * 1000,
            "outbox": 1 / statistics.median(cycles)}


TAKEOVER_TTL, TAKEOVER_INTERVAL = 5.0, 2.0


def _replica(name: str, config: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RUNWATCH_REPLICA": name, "RW_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "runwatch", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=config.parent)
    return proc, port


def _leading(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return b"\nrunwatch_leader 1.0" in r.read()
    except OSError:
        return False


def _wait(check, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError("no takeover")
        time.sleep(0.02)
    return time.monotonic() - started


def takeover(url: str, folder: Path, rounds: int = 3) -> dict:
    """Seconds from the leader's end (SIGKILL, SIGTERM) to the standby acting."""
    (folder / "runs").mkdir()
    config = folder / "runwatch.yaml"
    config.write_text(f"sources: [{{type: rundir, path: runs, interval: {TAKEOVER_INTERVAL:g}s}}]\n"
                      f"store: '{url}'\nhttp: {{listen: '127.0.0.1:${{RW_PORT}}'}}\n"
                      f"ha: {{lease_ttl: {TAKEOVER_TTL:g}s}}\n")
    found: dict[str, list[float]] = {"kill": [], "stop": []}
    for i in range(rounds):
        for how in found:
            first = _replica(f"a{i}{how}", config)
            _wait(lambda port=first[1]: _leading(port))
            second = _replica(f"b{i}{how}", config)
            time.sleep(1.0)  # the standby is up and has read the lease
            first[0].send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            found[how].append(_wait(lambda port=second[1]: _leading(port)))
            for proc, _ in (first, second):
                proc.kill()
                proc.wait()
    return {how: statistics.median(times) for how, times in found.items()} | {
        f"{how}_range": (min(times), max(times)) for how, times in found.items()}


def main() -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    tune_gc()
    results = {}
    with tempfile.TemporaryDirectory() as state:
        schema = Schema(Path(state))
        try:
            ops = Schema(Path(state) / "ops")
            fire_schema = Schema(Path(state) / "firing")
            for name, url, ops_url in (
                    ("SQLite", f"sqlite:///{state}/state.db", f"sqlite:///{state}/ops.db"),
                    ("PostgreSQL", schema.url, ops.url)):
                root, live_logs, _ = rundir_tick.build_tree()
                probe = RundirSource("probe", [root]).poll({}, frozenset(), 0.0).snapshots
                now = max(s.heartbeat or 0.0 for s in probe) + 60
                results[name] = ticks(url, root, live_logs, now) | operations(ops_url)
                fire_url = (f"sqlite:///{state}/firing.db" if name == "SQLite"
                            else fire_schema.url)
                results[name] |= firing(fire_url, root, now, Path(state))
            ops.drop()
            fire_schema.drop()
            replicas = Schema(Path(state) / "replicas")
            try:
                handover = takeover(replicas.url, Path(state))
            finally:
                replicas.drop()
        finally:
            schema.drop()
    for name, r in results.items():
        print(f"{name}: first tick {r['first']:.0f} ms; idle tick {r['idle']:.1f} ms; +100 rows"
              f" in each of 500 live runs {r['busy']:.0f} ms; stop (held runs written)"
              f" {r['stop']:.0f} ms; a commit of 100 alerts changing status"
              f" {r['commit']:.1f} ms; a commit of 100 cursors {r['cursors']:.1f} ms; outbox"
              f" enqueue+claim+complete {r['outbox']:.0f}/s; with {r['firing']:,} alerts"
              f" firing: the tick firing them {r['firing_first']:.0f} ms, an idle tick"
              f" {r['firing_idle']:.1f} ms")
    ratio = results["PostgreSQL"]["idle"] / results["SQLite"]["idle"]
    print(f"idle tick PostgreSQL / SQLite: {ratio:.2f}x (goal <= 2x: "
          f"{'met' if ratio <= 2 else 'MISSED'}); server {PG_URL.split('@')[-1]}")
    bound = TAKEOVER_TTL + TAKEOVER_INTERVAL
    print(f"takeover (lease_ttl {TAKEOVER_TTL:g} s, interval {TAKEOVER_INTERVAL:g} s), median"
          f" of 3: after SIGKILL {handover['kill']:.1f} s (range {handover['kill_range'][0]:.1f}"
          f"–{handover['kill_range'][1]:.1f}), after a clean stop {handover['stop']:.1f} s"
          f" (range {handover['stop_range'][0]:.1f}–{handover['stop_range'][1]:.1f});"
          f" goal <= {bound:g} s: {'met' if handover['kill'] <= bound else 'MISSED'}")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
