"""Which replica acts: the store's writer lease, renewed at every tick and by a heartbeat.

Several ``runwatch run`` processes may share one PostgreSQL store; one of them holds the
lease (``Store.claim_writer``) and ticks, sends and collects, the others stand by and try
to take it at the start of each of their jobs (every tick, the outbox every 15 s). The lease
lasts ``ha.lease_ttl``; the leader renews it at the start of every job and, from a thread of
its own, every third of it — so a long tick never lets it run out. The heartbeat only
renews: a new epoch is taken at the start of a job, so no job ever writes under an epoch
newer than what it read. A leader that could not renew before the lease ran out by its own
clock (``lease_clock``, counted from before its last renewal was sent) stops acting at once
and stands by; the store refuses its writes anyway (the fence), and checks the lease again
right before each message leaves (``Store.check_writer``). A SQLite store has one process
per file (its flock): there the one process always leads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from runwatch.metrics import Metrics
from runwatch.store.base import Lease, Store, StoreError, WriterBusy, lease_clock

log = structlog.get_logger("runwatch.leader")


class Leadership:
    def __init__(self, store: Store, *, holder: str, ttl: float, clock: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.holder = holder
        self.ttl = float(ttl)
        self.clock = clock
        self.metrics = metrics
        self.lease: Lease | None = None  # as last read
        self.since: float | None = None  # clock() when this process last began to lead
        self._valid_until = 0.0  # lease_clock() until which it leads
        self._lock = threading.Lock()
        self._said: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if metrics is not None:
            metrics.lease_ttl.set(self.ttl)

    def renew(self, *, take: bool = True) -> bool:
        """Take or renew the lease now; whether this process leads. A store that does not
        answer is said (once per cause) and changes nothing: the lease runs out by itself.
        ``WriterBusy`` — another process holds SQLite's file — propagates: a setup to fix.
        ``take=False`` (the heartbeat) only renews: a new epoch is taken at the start of a
        job, never under one that read what it knows under the old epoch."""
        with self._lock:
            started = lease_clock()
            try:
                lease = self.store.claim_writer(self.holder, now=self.clock(), ttl=self.ttl,
                                                standby=True, take=take)
            except WriterBusy:
                raise
            except StoreError as exc:
                self._say(("lease-error", str(exc)), log.error, "cannot renew the writer lease;"
                          " acting until it runs out, then standing by", error=str(exc))
                return self.leading()
            was_leading = self.leading()
            self.lease = lease
            self._valid_until = started + self.ttl if lease.mine else 0.0
            if lease.mine and not was_leading:
                self.since = self.clock()
            self._show()
            return lease.mine

    def leading(self) -> bool:
        """Whether this process acts: it holds the lease and it has not run out by its own
        clock."""
        leading = lease_clock() < self._valid_until
        if not leading and self._valid_until:
            self.lost("not renewed in time by this process's clock")
        return leading

    def lost(self, why: str) -> None:
        """The store refused a write (another replica holds the lease), or it ran out."""
        self._valid_until = 0.0
        self._show(why)

    def _show(self, why: str = "") -> None:
        lease, leading = self.lease, self._valid_until > 0
        if self.metrics is not None:
            self.metrics.leader.set(1 if leading else 0)
            if lease is not None:
                self.metrics.lease_epoch.set(lease.epoch)
        if lease is None:
            return
        if leading:
            self._say(("leading", lease.epoch), log.info, "leading: this replica acts",
                      holder=self.holder, epoch=lease.epoch)
        elif lease.holder != self.holder and not lease.expired(self.clock()):
            self._say(("standby", lease.holder, lease.epoch), log.info,
                      "standing by: another replica acts", holder=lease.holder,
                      epoch=lease.epoch, **({"reason": why} if why else {}))
        else:
            self._say(("stepped-down", lease.epoch), log.warning,
                      "stepped down: the writer lease is lost; standing by", reason=why)

    def _say(self, state: tuple[object, ...], emit: Callable[..., Any], message: str,
             **fields: object) -> None:
        """Log ``message`` when the lease's ``state`` changes, not at every tick."""
        if state != self._said:
            self._said = state
            emit(message, **fields)

    def describe(self) -> str:
        """What ``/readyz`` says of the lease."""
        lease = self.lease
        if self.leading():
            return f"leading (epoch {lease.epoch if lease else '?'})"
        if lease is None or not lease.holder or lease.expired(self.clock()):
            return "standby: the lease is free; taking it at the next tick"
        return (f"standby: {lease.holder} leads (epoch {lease.epoch}, lease for"
                f" {max(0.0, lease.expires_at - self.clock()):.0f}s more)")

    # --- the heartbeat --------------------------------------------------------------------

    def start(self) -> None:
        """Renew every third of the lease on a thread of its own, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._beat, name="runwatch-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew(take=False)
            except Exception as exc:  # the heartbeat must outlive whatever one renewal hit
                log.error("lease heartbeat failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
