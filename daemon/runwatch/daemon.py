"""``runwatch run``: the same cycle as ``runwatch check``, on an APScheduler schedule.

One interval job per source (its ``interval``, a little jitter), an outbox job that retries
what could not be sent, a maintenance job that collects what nothing needs any more, and
the digest's cron slot. Every job runs on one worker thread: ticks never overlap or stack
(``coalesce``, ``max_instances=1``), and the store sees one writer. The main thread only
turns signals into a stop or a reload and watches the config files.

Stop (SIGTERM, SIGINT): the running tick finishes, the outbox is flushed, exit 0 — within
``STOP_TIMEOUT``; after that a hard stop, still 0, because every tick commits alerts and
cursors in one transaction and every notification is in the outbox before it is sent:
a cut-off tick is redone from its cursors at the next start, and nothing is lost.

Reload (SIGHUP, or a changed file with ``--watch-config``): config and rules are read and
everything is built first; the new runtime replaces the old only when all of it is valid.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from runwatch import logs, sdnotify
from runwatch.config import Config, ConfigError, load_all, rule_files
from runwatch.config.fields import is_local_host
from runwatch.duration import format_duration
from runwatch.engine import retire
from runwatch.leader import Leadership
from runwatch.logs import config_secrets
from runwatch.metrics import HttpServer, Metrics, StoreGauges, health_app
from runwatch.model import AlertStatus, Severity, status_word
from runwatch.schedule import cron_trigger
from runwatch.service import (
    CycleReport,
    Runtime,
    build_runtime,
    run_cycle,
    source_status,
    tune_gc,
)
from runwatch.store.base import LeaseLost, Store, StoreError, open_store, replica_name
from runwatch.web.app import Context, Pages
from runwatch.web.board import KEEP_ENDED, SAVE_EVERY, RunBoard

STOP_TIMEOUT = 10.0  # seconds from a stop signal to exit
OUTBOX_INTERVAL = 15.0  # seconds between retries of notifications that could not be sent
MAINTENANCE_INTERVAL = 3600.0
RESOLVED_RETENTION = 7 * 86400.0  # resolved alerts kept this long (then collected)
CURSOR_RETENTION = 30 * 86400.0  # a run silent for a month is read afresh if it logs again
READY_WITHIN = 3  # /readyz: every source's last good tick within this many intervals
WATCH_EVERY = 2.0  # seconds between checks of the config files with --watch-config
STUCK_FLOOR = 600.0  # /healthz: no job may hold the worker longer (see Daemon.stuck_after)
WATCHDOG_DEFAULT = 20.0  # seconds between WATCHDOG=1 pings ×2 when systemd sets no WatchdogSec

log = structlog.get_logger("runwatch.daemon")


class Daemon:
    """The scheduled service. Tests drive :meth:`tick_source` etc. directly, with
    freezegun's clock; :meth:`run` adds the scheduler, the signals and the HTTP endpoint."""

    def __init__(self, config_path: Path, *, watch_config: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.config_path = Path(config_path)
        self.watch_config = watch_config
        self.clock = clock or (lambda: time.time())  # looked up at each call: freezegun
        self.metrics = Metrics()
        config, rule_set = load_all(self.config_path)  # ConfigError: the caller exits 2
        self.metrics.reload_ok.set(1)
        logs.redactor.update(config_secrets(config))
        self.store: Store = open_store(config.store)
        # One replica acts (the writer lease), the others stand by: see leader.py.
        self.leader = Leadership(self.store, holder=replica_name(), ttl=config.ha.lease_ttl,
                                 clock=self.clock, metrics=self.metrics)
        self.metrics.read_at_scrape(self._store_gauges)
        self.runtime: Runtime = build_runtime(config, rule_set)
        try:  # taken once all is built: a slow start-up must not let it run out unused
            self.leader.renew()  # WriterBusy (SQLite's file held elsewhere): the caller exits 2
        except StoreError:
            self.runtime.close()
            self.store.close()
            raise
        for line in self.runtime.problems:
            log.error("receiver cannot be set up", detail=line)
        self._lock = threading.RLock()  # guards self.runtime against a reload mid-tick
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._flushing = False  # the final flush at a stop
        self._last_ok: dict[str, float] = {}  # per source: when its last good tick began
        self._api_seen: dict[str, tuple[int, int, int]] = {}
        self._awaiting_first_tick = {s.name for s in config.sources}
        self._busy: tuple[str, float] | None = None  # the job on the worker, since when
        self._last_done: float | None = None  # when a job last finished
        self._stuck_said: str | None = None  # the stuck job last logged
        self._standby_said = False  # systemd told it is ready, standing by
        self._watched = self._file_signature()
        self.scheduler: BackgroundScheduler | None = None
        self.http: HttpServer | None = None
        self.board = RunBoard()  # what the status pages show of the runs, from the ticks
        self._board_loaded = -math.inf  # a standby reads the leader's board this often
        self._load_board()

    @property
    def config(self) -> Config:
        return self.runtime.config

    # --- the jobs --------------------------------------------------------------------------

    def tick_source(self, name: str) -> CycleReport | None:
        """One cycle over one source: poll, evaluate, commit, deliver."""
        if self._stop.is_set():
            return None  # jobs queued before a stop do not hold it up
        with self._lock:
            runtime = self.runtime
        source = runtime.source(name)
        if source is None:  # removed by a reload while this job was queued
            return None
        interval = float(getattr(runtime.spec(name), "interval", 60.0))
        if not self.leader.renew():
            if self._awaiting_first_tick and not self._standby_said:
                # Up and standing by (it may have lost the lease at start): said once.
                sdnotify.ready()
                self._standby_said = True
            if self.clock() - self._board_loaded >= min(interval, SAVE_EVERY):
                self._load_board()  # the leader's, as it saved it
            return None  # standing by: another replica ticks
        started, clock_started = time.monotonic(), self.clock()
        with structlog.contextvars.bound_contextvars(source=name):
            if name in self._awaiting_first_tick and hasattr(source, "check_online"):
                # A rejected key or an unknown project, said once and plainly at start-up
                # (ticks go on: W&B may only be down, and the tick reports that itself).
                for line in source.check_online(timeout=max(1.0, interval / 2)):
                    log.error("source check at start-up failed", detail=line)
            try:
                cycle = run_cycle(runtime, self.store, clock_started, sources=[source])
            except LeaseLost as exc:  # another replica took over: nothing of this tick stays
                self.leader.lost(str(exc))
                return None
            except StoreError as exc:
                self.metrics.ticks.labels(name, "store-error").inc()
                log.error("tick failed: the store is unavailable", error=str(exc),
                          temporary=exc.temporary)
                self._save_status(name, started_at=clock_started, ok=False, runs=0,
                                  errors=[f"store: {exc}"], duration=time.monotonic() - started)
                return None
            duration = time.monotonic() - started
            self._record(name, cycle, clock_started, duration, interval)
        return cycle

    def _record(self, name: str, cycle: CycleReport, started_at: float, duration: float,
                interval: float) -> None:
        report = cycle.tick
        ok = name not in report.failed_sources
        m = self.metrics
        m.ticks.labels(name, "ok" if ok else "failed").inc()
        m.tick_seconds.labels(name).observe(duration)
        m.runs.labels(name).set(report.runs_checked)
        if report.errors:
            m.source_errors.labels(name).inc(len(report.errors))
        if ok:
            m.last_tick.labels(name).set(started_at + duration)
        self.board.update(report.snapshots, started_at, self.runtime.rule_set.aliases)
        self._save_board(started_at)
        self._count_api(name)
        for line in report.errors:
            log.warning("source reported a problem", detail=line)
        for t in report.transitions:
            log.info("alert " + status_word(t.alert), rule=t.alert.rule, run=t.alert.run.path,
                     severity=str(t.alert.severity), summary=t.alert.summary)
        notes = cycle.notifications or {}
        self._count_notifications(notes)
        for line in notes.get("errors") or ():
            log.warning("notification problem", detail=line)  # the outbox logs each failure
        if duration > interval:
            log.warning("tick overran its interval", duration=round(duration, 3),
                        interval=interval)
        log.info("tick", duration=round(duration, 3), runs=report.runs_checked,
                 transitions=len(report.transitions), errors=len(report.errors), ok=ok)
        self._save_status(name, started_at=started_at, ok=ok, runs=report.runs_checked,
                          errors=list(report.errors), duration=duration,
                          transitions=len(report.transitions))
        sdnotify.watchdog()
        if self._awaiting_first_tick:
            self._awaiting_first_tick.discard(name)
            if not self._awaiting_first_tick:
                sdnotify.ready()
                log.info("ready: every source has run its first tick")

    def _count_api(self, name: str) -> None:
        client = getattr(self.runtime.source(name), "client", None)
        if client is None or not hasattr(client, "requests"):
            return
        now = (client.requests, client.bytes_sent, client.bytes_received)
        before = self._api_seen.get(name, (0, 0, 0))
        if any(n < b for n, b in zip(now, before, strict=True)):
            before = (0, 0, 0)  # a new client after a reload
        self._api_seen[name] = now
        self.metrics.api_requests.labels(name).inc(now[0] - before[0])
        self.metrics.api_bytes.labels(name, "sent").inc(now[1] - before[1])
        self.metrics.api_bytes.labels(name, "received").inc(now[2] - before[2])

    def _count_notifications(self, summary: Mapping[str, Any]) -> None:
        """The pipeline's per-receiver counts (after a tick or an outbox drain) as metrics."""
        for receiver, counts in (summary.get("receivers") or {}).items():
            for outcome in ("sent", "failed", "retrying"):
                if counts.get(outcome):
                    self.metrics.notifications.labels(receiver, outcome).inc(counts[outcome])

    def _save_status(self, name: str, *, started_at: float, ok: bool, runs: int,
                     errors: list[str], duration: float, transitions: int = 0) -> None:
        if not self.leader.leading():
            return
        if ok:
            self._last_ok[name] = started_at
        status = source_status(started_at=started_at, duration=duration, ok=ok, runs=runs,
                               errors=errors, transitions=transitions, by="run",
                               last_ok=self._last_ok.get(name))
        try:
            self.store.save_status(name, status, started_at)
        except LeaseLost as exc:
            self.leader.lost(str(exc))
        except StoreError as exc:
            log.error("cannot save source status", error=str(exc))

    def _load_board(self) -> None:
        """The run board as the writer last saved it, of the configured sources."""
        self._board_loaded = self.clock()
        try:
            entries = self.store.load_board()
        except StoreError as exc:
            log.error("cannot load the run board; the pages show runs as ticks read them",
                      error=str(exc))
            return
        for line in self.board.load(entries, [s.name for s in self.config.sources],
                                    self._board_loaded):
            log.warning("run board", detail=line)

    def _save_board(self, now: float) -> None:
        if not self.leader.leading():
            return  # (what changed stays to save, should it lead again)
        entries = self.board.to_save(now)
        if entries is None:
            return
        try:
            self.store.save_board(entries, forget_before=now - KEEP_ENDED)
        except LeaseLost as exc:
            self.board.unsaved(entries)
            self.leader.lost(str(exc))
        except StoreError as exc:
            self.board.unsaved(entries)
            log.error("cannot save the run board", error=str(exc))

    def _store_gauges(self) -> StoreGauges | None:
        """What ``/metrics`` shows of the store, read when it is scraped (on the HTTP
        thread) rather than after every tick: every (state, severity), 0 or n."""
        try:
            alerts = self.store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING))
            depth = len(self.store.outbox())
        except StoreError as exc:
            log.error("cannot read the store for metrics", error=str(exc))
            return None
        found = Counter((str(a.status), str(a.severity)) for a in alerts)
        every = [(str(status), str(severity))
                 for status in (AlertStatus.FIRING, AlertStatus.PENDING) for severity in Severity]
        return {key: found[key] for key in every}, depth

    def flush_outbox(self) -> None:
        """Send what is due in the outbox (retries between ticks)."""
        if (self._stop.is_set() and not self._flushing) or not self.leader.renew():
            return
        with self._lock:
            runtime = self.runtime
        if not runtime.config.receivers:
            return
        from runwatch.notify.pipeline import drain_only

        try:
            report = drain_only(self.store, runtime.notifiers, self.clock())
        except LeaseLost as exc:
            self.leader.lost(str(exc))
            return
        except StoreError as exc:
            log.error("cannot drain the outbox: the store is unavailable", error=str(exc))
            return
        result = report.as_json()
        self._count_notifications(result)
        if result.get("sent") or result.get("failed"):
            log.info("outbox drained", sent=result.get("sent"), failed=result.get("failed"),
                     retrying=result.get("retrying"))

    def check_receivers(self) -> None:
        """Once at start-up: what each receiver's credentials cannot do that delivery relies
        on (a Slack token without channels:history falls back to at-least-once), one
        warning each."""
        with self._lock:
            runtime = self.runtime
        for name, notifier in runtime.notifiers.items():
            check = getattr(notifier, "check_online", None)
            for line in check() if check is not None else ():
                log.warning("receiver check at start-up", receiver=name, detail=line)

    def release_dead_claims(self) -> int:
        """Outbox entries claimed by a process of this host that is gone (a crash, a
        SIGKILL) are due again now, not when their lease runs out — as uncertain: that
        process may already have handed them to the receiver (Slack looks first)."""
        if not self.leader.leading():
            return 0
        host = socket.gethostname()
        released = 0
        try:
            for entry in self.store.outbox(include_failed=False):
                owner_host, _, rest = (entry.claimed_by or "").partition(":")
                pid = rest.partition(":")[0]
                if owner_host != host or not pid.isdigit() or int(pid) == os.getpid():
                    continue
                if entry.claimed_until is None or _alive(int(pid)):
                    continue
                if self.store.retry_outbox(entry.id, claimant=entry.claimed_by,
                                           next_attempt_at=self.clock(),
                                           error=f"the process that claimed it ({pid}) died",
                                           uncertain=True):
                    released += 1
        except LeaseLost as exc:  # (between taking the lease and starting): standing by
            self.leader.lost(str(exc))
        except StoreError as exc:  # they fall due anyway when their claim runs out
            log.error("cannot release the claims of a dead process", error=str(exc))
        if released:
            log.warning("released notifications claimed by a process that died; each is"
                        " looked for before it is sent again", count=released)
        return released

    def maintenance(self) -> None:
        """Collect expired notification records, old resolved alerts and cursors."""
        if self._stop.is_set() or not self.leader.renew():
            return
        try:
            collected = self.store.collect_garbage(self.clock(),
                                                   resolved_retention=RESOLVED_RETENTION,
                                                   cursor_retention=CURSOR_RETENTION)
        except LeaseLost as exc:
            self.leader.lost(str(exc))
            return
        except StoreError as exc:
            log.error("maintenance failed: the store is unavailable", error=str(exc))
            return
        log.info("maintenance", collected=collected.total)

    def digest(self) -> None:
        """Queue the digest for every digest receiver that is due one, then send it. Runs on
        the schedule and once at start-up (a digest missed while down, within the grace)."""
        if self._stop.is_set() or not self.leader.renew():
            return
        from runwatch.digests import run_scheduled

        with self._lock:
            runtime = self.runtime
        try:
            done = run_scheduled(runtime.config, runtime.rule_set, self.store, self.clock())
        except LeaseLost as exc:
            self.leader.lost(str(exc))
            return
        except StoreError as exc:
            log.error("digest not sent: the store is unavailable", error=str(exc))
            return
        for receiver, why in done.skipped.items():
            log.info("no digest", receiver=receiver, reason=why)
        if done.digest is not None:
            for line in done.digest.errors:
                log.warning("digest: a source could not be read", detail=line)
            log.info("digest queued", receivers=list(done.queued),
                     runs=len(done.digest.running), ended=len(done.digest.ended),
                     fired=len(done.digest.fired))
            self.flush_outbox()

    # --- liveness -------------------------------------------------------------------------

    def _job(self, label: str, work: Callable[..., Any], *args: Any) -> Any:
        """Run one scheduled job, known to :meth:`alive` while it runs."""
        self._busy = (label, self.clock())
        try:
            return work(*args)
        finally:
            self._busy = None
            self._last_done = self.clock()

    def stuck_after(self) -> float:
        """How long one job may hold the worker before the daemon counts as stuck: three
        times the longest source interval or tick timeout, and at least STUCK_FLOOR."""
        with self._lock:
            sources = self.runtime.config.sources
        longest = max((max(float(getattr(s, "interval", 0.0)),
                           float(getattr(s, "tick_timeout", 0.0))) for s in sources),
                      default=0.0)
        return max(STUCK_FLOOR, 3 * longest)

    def alive(self) -> tuple[bool, str]:
        """Whether the worker moves: no job has held it beyond :meth:`stuck_after`."""
        busy, done, now = self._busy, self._last_done, self.clock()
        bound = self.stuck_after()
        if busy is None:
            # Jobs come due every OUTBOX_INTERVAL: none finishing for long means the
            # scheduler itself has stopped.
            if done is not None and now - done > bound:
                return False, (f"worker idle: no job has finished for"
                               f" {format_duration(now - done)}")
            return True, "ok"
        label, since = busy
        running = now - since
        if running <= bound:
            return True, "ok"
        if label.startswith("tick ") and label[len("tick "):] in self._awaiting_first_tick:
            # A first tick reads every run whole, however long that takes; the tick
            # timeout bounds it where the source has one.
            return True, f"ok: {label} is the first, running for {format_duration(running)}"
        return False, (f"worker stuck: {label} running for {format_duration(running)}"
                       f" (more than {format_duration(bound)})")

    def _watch_worker(self) -> bool:
        """Alive: True (and a watchdog ping is due). Stuck: one log line per stall naming
        the job, and False — no ping, so systemd's watchdog restarts the service."""
        ok, detail = self.alive()
        busy = self._busy
        if ok:
            self._stuck_said = None
            return True
        stall = f"{busy[0]}@{busy[1]}" if busy is not None else f"idle@{self._last_done}"
        if self._stuck_said != stall:
            self._stuck_said = stall
            log.error("the worker is stuck: /healthz answers 503 and the watchdog is not"
                      " fed", job=busy[0] if busy else None,
                      running_for=round(self.clock() - busy[1]) if busy else None,
                      detail=detail)
        return False

    # --- readiness -------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Every source's last tick succeeded within READY_WITHIN intervals, and the store
        answers. A standby is ready (it is up, and would take over) and says so."""
        try:
            self.store.ping()
        except StoreError as exc:
            return False, f"store: {exc}"
        if not self.leader.leading():
            return True, self.leader.describe()
        now = self.clock()
        late = []
        with self._lock:
            config = self.runtime.config
        for spec in config.sources:
            # A replica that has just taken over has not ticked yet: counted from then.
            last = self._last_ok.get(spec.name, self.leader.since)
            if last is None or now - last > READY_WITHIN * spec.interval:
                late.append(spec.name)
        if late:
            return False, "no recent good tick: " + ", ".join(late)
        return True, "ready"

    # --- reload ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read config and rules again; swap them in only if all of it is valid."""
        try:
            config, rule_set = load_all(self.config_path)
            if config.store != self.config.store:
                raise ConfigError([f"{self.config_path}: the store cannot change while"
                                   " runwatch runs; restart it to use the new store"])
            runtime = build_runtime(config, rule_set, previous=self.runtime)
        except Exception as exc:  # whatever it is (ConfigError or worse), the config stays
            lines = exc.errors if isinstance(exc, ConfigError) else [
                f"{self.config_path}: cannot load: {type(exc).__name__}: {exc}"[:500]]
            for line in lines:
                log.error("reload refused; the running config stays", detail=line)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.reload_ok.set(0)
            self._watched = self._file_signature()
            return False
        with self._lock:
            old, self.runtime = self.runtime, runtime
        if self.scheduler is not None and self.scheduler.running:
            # On the worker, after the tick that may still be using them.
            self.scheduler.add_job(self._job,
                                   args=["close", functools.partial(old.close, keep=runtime)],
                                   name="close replaced receivers and sources")
        else:
            old.close(keep=runtime)
        logs.redactor.update(config_secrets(config))
        removed = {s.name for s in old.config.sources} - {s.name for s in config.sources}
        for name in removed:
            self.board.forget_source(name)  # (on a standby too: its board goes with it)
        self._retire_sources(removed)
        if config.http != old.config.http:
            log.warning("http.listen changed: takes effect at the next restart")
        for line in runtime.problems:
            log.error("receiver cannot be set up", detail=line)
        self._schedule_sources()
        if self.scheduler is not None:
            self._schedule_digest(startup=False)
        self._watched = self._file_signature()
        self.metrics.reloads.labels("success").inc()
        self.metrics.reload_ok.set(1)
        log.info("config reloaded", rules=len(rule_set.rules),
                 sources=[s.name for s in config.sources])
        return True

    def _retire_sources(self, removed: set[str]) -> None:
        """What fired on the runs of a source that is gone resolves: nobody evaluates it."""
        if not removed or not self.leader.leading():
            return
        try:
            holding = self.store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING))
            retired = retire([a for a in holding if a.run.source in removed], (), self.clock(),
                             reason="source removed")
            if retired.alerts:
                self.store.commit_tick(source="", alerts=retired.alerts, cursors={},
                                       now=self.clock())
        except LeaseLost as exc:  # another replica acts now: it retires them
            self.leader.lost(str(exc))
            return
        except StoreError as exc:
            log.error("cannot resolve the alerts of removed sources", error=str(exc))
            return
        for t in retired.transitions:
            log.info("alert resolved: its source was removed", rule=t.alert.rule,
                     run=t.alert.run.path, source=t.alert.run.source)

    def _file_signature(self) -> tuple[Any, ...]:
        """What --watch-config compares: each file's real path and identity. A Kubernetes
        ConfigMap update swaps the ``..data`` symlink, which changes the real path."""
        paths = [str(self.config_path)]
        config = self.runtime.config
        for pattern in config.rules:
            paths += rule_files(pattern, config.base_dir)
        signature = []
        for path in paths:
            try:
                st = os.stat(path)
                signature.append((path, os.path.realpath(path), st.st_ino, st.st_mtime_ns,
                                  st.st_size))
            except OSError:
                signature.append((path, None))
        return tuple(signature)

    def config_changed(self) -> bool:
        return self._file_signature() != self._watched

    # --- the service -----------------------------------------------------------------------

    def _schedule_sources(self) -> None:
        if self.scheduler is None:
            return
        wanted = {spec.name: spec for spec in self.config.sources}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("source:") and job.id[len("source:"):] not in wanted:
                job.remove()
        for name, spec in wanted.items():
            trigger = IntervalTrigger(seconds=spec.interval,
                                      jitter=min(5.0, spec.interval / 20))
            job_id = f"source:{name}"
            if self.scheduler.get_job(job_id) is None:
                self.scheduler.add_job(self._job, trigger, args=[f"tick {name}",
                                                                 self.tick_source, name],
                                       id=job_id, name=f"tick {name}", next_run_time=_utcnow(),
                                       misfire_grace_time=max(1, int(spec.interval)))
            else:
                self.scheduler.reschedule_job(job_id, trigger=trigger)

    def _schedule_digest(self, *, startup: bool) -> None:
        """The digest's cron job (gone when the config has no digest). At start-up it also
        runs once, after the first ticks: a digest missed while down is sent if its time
        passed less than ``digest.grace`` ago."""
        digest = self.config.digest
        job = self.scheduler.get_job("digest")
        if digest is None:
            if job is not None:
                job.remove()
            return
        trigger = cron_trigger(digest.schedule, digest.zone)
        grace = max(1, int(digest.grace))
        if job is None:
            first = {"next_run_time": _utcnow()} if startup else {}
            self.scheduler.add_job(self._job, trigger, args=["digest", self.digest],
                                   id="digest", name="digest", misfire_grace_time=grace,
                                   **first)
        else:
            self.scheduler.modify_job("digest", misfire_grace_time=grace)
            self.scheduler.reschedule_job("digest", trigger=trigger)

    def pages(self) -> Pages:
        """The status pages over this daemon's store, run board and lease."""
        return Pages(Context(store=self.store, clock=self.clock, board=self.board,
                             sources=lambda: [s.name for s in self.config.sources],
                             leader=self.leader.describe,
                             token=lambda: self.config.http.token(),
                             users=lambda: self.config.http.users(),
                             rules=lambda: self.runtime.rule_set))

    def start(self) -> None:
        """The HTTP endpoint and the scheduler; first ticks start at once."""
        http = self.config.http
        pages = self.pages()
        if http.token_file is None and http.users_file is None and not is_local_host(http.host):
            log.warning("the status pages listen beyond loopback open to all; set"
                        " http.token_file or http.users_file", listen=http.listen)
        try:
            self.http = HttpServer(http.host, http.port,
                                   health_app(self.metrics, self.ready, self.alive, pages))
        except OSError as exc:
            raise ConfigError([f"{self.config_path}: http.listen {http.host}:{http.port}:"
                               f" {exc.strerror or exc}; free the port or change http.listen"]
                              ) from None
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=UTC,
        )
        self._schedule_sources()
        self.scheduler.add_job(self._job, IntervalTrigger(seconds=OUTBOX_INTERVAL),
                               args=["outbox", self.flush_outbox], id="outbox", name="outbox")
        self.scheduler.add_job(self._job, IntervalTrigger(seconds=MAINTENANCE_INTERVAL),
                               args=["maintenance", self.maintenance], id="maintenance",
                               name="maintenance", next_run_time=_utcnow())
        self._schedule_digest(startup=True)
        self.scheduler.add_job(self._job, args=["receiver-check", self.check_receivers],
                               id="receiver-check", name="receiver-check",
                               next_run_time=_utcnow())
        self.release_dead_claims()
        self.http.start()
        self.scheduler.start()
        self.leader.start()
        if not self.leader.leading():  # up, and waiting to take over: ready as a standby
            sdnotify.ready()
        log.info("started", sources=[s.name for s in self.config.sources],
                 rules=len(self.runtime.rule_set.rules), http=f"{http.host}:{self.http.port}",
                 pid=os.getpid())

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def run(self) -> int:
        """Until a stop signal: serve, tick, reload. Returns the exit code."""
        previous = {sig: signal.signal(sig, self.request_stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.request_reload)
        try:
            tune_gc()
            self.start()
            last_watch = last_ping = time.monotonic()
            ping_every = (sdnotify.watchdog_interval() or WATCHDOG_DEFAULT) / 2
            while not self._stop.wait(0.5):
                if time.monotonic() - last_ping >= ping_every and self._watch_worker():
                    last_ping = time.monotonic()
                    sdnotify.watchdog()
                if self._reload.is_set():
                    self._reload.clear()
                    sdnotify.reloading()
                    self.reload()
                    sdnotify.ready()
                elif self.watch_config and time.monotonic() - last_watch >= WATCH_EVERY:
                    last_watch = time.monotonic()
                    if self.config_changed():
                        log.info("config files changed; reloading")
                        self.reload()
            return self.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def shutdown(self) -> int:
        """Let the running tick finish, flush the outbox, close; all within STOP_TIMEOUT."""
        deadline = time.monotonic() + STOP_TIMEOUT
        sdnotify.stopping()
        log.info("stopping: letting the running tick finish")
        finished = self._within(deadline, self._stop_scheduler)
        if finished:
            self._flushing = True
            finished = self._within(deadline, self.flush_outbox)
        if self.http is not None:
            self.http.stop()
        self.leader.stop()
        if not finished:
            log.warning("hard stop: work was still running; a tick is redone from its cursors"
                        " and a message is sent from the outbox at the next start",
                        timeout=STOP_TIMEOUT)
            _flush_logs()
            os._exit(0)  # a worker thread cannot be interrupted; nothing is lost
        self.runtime.close()
        self.store.close()
        log.info("stopped")
        return 0

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    @staticmethod
    def _within(deadline: float, work: Callable[[], None]) -> bool:
        """Run ``work`` in a thread; True when it ended before ``deadline``."""
        thread = threading.Thread(target=work, name="runwatch-stop", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _flush_logs() -> None:
    import logging

    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
