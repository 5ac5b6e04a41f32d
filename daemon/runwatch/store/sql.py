"""The SQL both store backends share: the schema's migrations, every query, and the
store's behaviour over them (``SqlStore``). A backend (``sqlite.SqliteStore``,
``postgres.PostgresStore``) supplies its connections, transactions, error classes, schema
versioning and writer lock; the SQL is written once, in the form SQLite reads, and a
backend whose server reads it otherwise translates it as it goes (PostgreSQL: ``%s``
parameters, ``GREATEST``/``LEAST``, wider column types).

Each call is one transaction. Nothing is cached between calls, so several processes sharing
the database see each other's writes — except by the one writer (``claim_writer``), which
keeps the alert states and cursors only it writes, writes back only what changed, and holds
quiet runs back for a few minutes (``held``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

from runwatch.model import AlertState, AlertStatus
from runwatch.store import codec
from runwatch.store.base import (
    COLLECTIBLE_STATUSES,
    LEADER,
    LEASE_TTL,
    BoardEntry,
    Collected,
    Delivery,
    Lease,
    LeaseLost,
    Matcher,
    NotificationRecord,
    OutboxEntry,
    Silence,
    StoreError,
    WriterBusy,
    lease_clock,
    new_silence,
)
from runwatch.store.held import HOLD_FOR, Holder

APPLICATION_ID = 0x52574348  # "RWCH": this database is a runwatch store

_V1 = (
    """CREATE TABLE alerts (
        fingerprint  TEXT PRIMARY KEY,
        rule         TEXT NOT NULL,
        run_source   TEXT NOT NULL,
        run_id       TEXT NOT NULL,
        run_name     TEXT NOT NULL,
        run_project  TEXT NOT NULL,
        run_entity   TEXT NOT NULL,
        run_location TEXT NOT NULL,
        run_path     TEXT NOT NULL,
        severity     TEXT NOT NULL,
        status       TEXT NOT NULL,
        active_since REAL,
        since_step   INTEGER,
        fired_at     REAL,
        resolved_at  REAL,
        first_seen   REAL,
        last_seen    REAL,
        metric       TEXT,
        value        TEXT,
        step         INTEGER,
        summary      TEXT NOT NULL,
        labels       TEXT NOT NULL,
        memory       TEXT NOT NULL,
        updated_at   REAL NOT NULL
    )""",
    "CREATE INDEX alerts_by_status ON alerts (status)",
    "CREATE INDEX alerts_by_run ON alerts (run_path)",
    "CREATE INDEX alerts_by_project ON alerts (run_project)",
    """CREATE TABLE cursors (
        source     TEXT NOT NULL,
        run_key    TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (source, run_key)
    ) WITHOUT ROWID""",
    "CREATE INDEX cursors_by_age ON cursors (updated_at)",
    """CREATE TABLE notifications (
        group_key  TEXT NOT NULL,
        receiver   TEXT NOT NULL,
        firing     TEXT NOT NULL,
        resolved   TEXT NOT NULL,
        sent_at    REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (group_key, receiver)
    ) WITHOUT ROWID""",
    "CREATE INDEX notifications_by_expiry ON notifications (expires_at)",
    """CREATE TABLE silences (
        id         TEXT PRIMARY KEY,
        matchers   TEXT NOT NULL,
        starts_at  REAL NOT NULL,
        ends_at    REAL NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        comment    TEXT NOT NULL
    )""",
    "CREATE INDEX silences_by_end ON silences (ends_at)",
)

# The notification outbox and the refs deliveries leave (Slack threads, message ids).
_V2 = (
    """CREATE TABLE outbox (
        id              TEXT PRIMARY KEY,
        group_key       TEXT NOT NULL,
        receiver        TEXT NOT NULL,
        firing          TEXT NOT NULL,
        resolved        TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      REAL NOT NULL,
        expires_at      REAL NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT NOT NULL,
        failed_at       REAL,
        claimed_by      TEXT NOT NULL,
        claimed_until   REAL
    )""",
    "CREATE INDEX outbox_by_group ON outbox (group_key, receiver)",
    "CREATE INDEX outbox_due ON outbox (failed_at, next_attempt_at)",
    """CREATE TABLE delivery_refs (
        receiver   TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (receiver, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX delivery_refs_by_expiry ON delivery_refs (expires_at)",
)

# What the daemon last did per source, for `runwatch status`.
_V3 = (
    """CREATE TABLE source_status (
        source     TEXT PRIMARY KEY,
        data       TEXT NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

# The run's state at the alert's last evaluation: repeats stop once a run has ended.
_V4 = ("ALTER TABLE alerts ADD COLUMN run_state TEXT NOT NULL DEFAULT ''",)

# Why an alert resolved: receivers say "run ended: killed", not just "resolved".
_V5 = ("ALTER TABLE alerts ADD COLUMN resolution TEXT NOT NULL DEFAULT ''",)

# Where an alert began and where it is now: "> 10 since step 35 (10.4), now 450".
_V6 = ("ALTER TABLE alerts ADD COLUMN first_value TEXT",
       "ALTER TABLE alerts ADD COLUMN latest_value TEXT",
       "ALTER TABLE alerts ADD COLUMN latest_step INTEGER")

# Exactly once across a kill: an attempt that may have reached the receiver, and the
# later steps of a delivered message (its charts).
_V7 = ("ALTER TABLE outbox ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0",
       "ALTER TABLE outbox ADD COLUMN followup INTEGER NOT NULL DEFAULT 0")

# Check memory may hold packed lists of floats (codec.encode_memory): no table changes,
# but a runwatch that does not know them must refuse the file, not misread its memory.
_V8: tuple[str, ...] = ()

# Several replicas on one store: the writer lease (by name: ``leader`` today), and the
# epoch an outbox entry was claimed under (a newer leader voids an older epoch's claims).
_V9 = (
    """CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        renewed_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "ALTER TABLE outbox ADD COLUMN claim_epoch INTEGER",
)

# The delivery log: what reached whom about which alerts (the status pages show it).
_V10 = (
    """CREATE TABLE deliveries (
        id         TEXT PRIMARY KEY,
        group_key  TEXT NOT NULL,
        receiver   TEXT NOT NULL,
        firing     TEXT NOT NULL,
        resolved   TEXT NOT NULL,
        decided_at REAL NOT NULL,
        sent_at    REAL NOT NULL
    )""",
    "CREATE INDEX deliveries_by_time ON deliveries (sent_at)",
    """CREATE TABLE delivery_alerts (
        fingerprint TEXT NOT NULL,
        delivery    TEXT NOT NULL,
        PRIMARY KEY (fingerprint, delivery)
    ) WITHOUT ROWID""",
    "CREATE INDEX delivery_alerts_by_delivery ON delivery_alerts (delivery)",
)

# The status pages' board: a row per watched run, so a restart or a standby shows the
# runs that ended before it (their logs are not read again).
_V11 = (
    """CREATE TABLE board (
        path   TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        seen   REAL NOT NULL,
        body   TEXT NOT NULL
    )""",
)

# One entry per schema version, in order; append, never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10,
                                           _V11)

_IN_CHUNK = 500  # host parameters per IN (...) list, well below every SQLite's limit


def _columns(names: Iterable[str]) -> str:
    return ", ".join(names)


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...], where: str = "") -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({_columns(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({_columns(key)}) DO UPDATE SET {updates}{where}"
    )


_SELECT_ALERTS = f"SELECT {_columns(codec.ALERT_COLUMNS)} FROM alerts"
_UPSERT_ALERT = _upsert("alerts", codec.ALERT_COLUMNS, ("fingerprint",))
# An alert whose steady fields are as stored: its moving columns, with or without memory.
_MOVE_ALERT = (
    f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in codec.MOVING_COLUMNS)}"
    " WHERE fingerprint = ?"
)
_MOVE_ALERT_AND_MEMORY = _MOVE_ALERT.replace(" WHERE", ", memory = ? WHERE")
_UPSERT_CURSOR = _upsert(
    "cursors", ("source", "run_key", "value", "updated_at"), ("source", "run_key")
)
_UPSERT_NOTIFICATION = _upsert(
    "notifications",
    codec.NOTIFICATION_COLUMNS,
    ("group_key", "receiver"),
    " WHERE excluded.sent_at >= notifications.sent_at",
)
_SELECT_NOTIFICATION = (
    f"SELECT {_columns(codec.NOTIFICATION_COLUMNS)} FROM notifications "
    "WHERE group_key = ? AND receiver = ?"
)
_INSERT_SILENCE = (
    f"INSERT INTO silences ({_columns(codec.SILENCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(codec.SILENCE_COLUMNS))})"
)
_SELECT_SILENCES = f"SELECT {_columns(codec.SILENCE_COLUMNS)} FROM silences"
_SELECT_OUTBOX = f"SELECT {_columns(codec.OUTBOX_COLUMNS)} FROM outbox"
_INSERT_OUTBOX = (
    f"INSERT INTO outbox ({_columns(codec.OUTBOX_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(codec.OUTBOX_COLUMNS))})"
)
# Pending entries of the same (group, receiver) that no live claim holds.
_SUPERSEDE_OUTBOX = (
    "DELETE FROM outbox WHERE group_key = ?1 AND receiver = ?2 AND failed_at IS NULL"
    " AND (claimed_until IS NULL OR claimed_until <= ?3) AND created_at <= ?3 AND id != ?4"
    " AND followup = 0"
)
# OutboxEntry.due in SQL — and a claim made under an older lease epoch is void.
_DUE_OUTBOX = (
    "failed_at IS NULL AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?"
    " OR claim_epoch < ?)"
)
_UPSERT_REF = _upsert("delivery_refs", codec.REF_COLUMNS, ("receiver", "key"))
_INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({_columns(codec.DELIVERY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(codec.DELIVERY_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)
_UPSERT_STATUS = _upsert("source_status", ("source", "data", "updated_at"), ("source",))
_UPSERT_BOARD = _upsert("board", ("path", "source", "seen", "body"), ("path",))
_ADD_LEASE = ("INSERT INTO leases (name, holder, epoch, expires_at, renewed_at)"
              " VALUES (?, '', 0, 0, 0) ON CONFLICT (name) DO NOTHING")
_SELECT_LEASES = "SELECT name, holder, epoch, expires_at FROM leases"
_SET_LEASE = ("UPDATE leases SET holder = ?, epoch = ?, expires_at = ?, renewed_at = ?"
              " WHERE name = ?")

# The later of resolved_at and last_seen, else updated_at: base.alert_touched in SQL.
_ALERT_TOUCHED = (
    "COALESCE(MAX(COALESCE(resolved_at, last_seen), COALESCE(last_seen, resolved_at)), updated_at)"
)


class SqlStore:
    """The store over SQL; see the module docstring. Subclasses set the class attributes
    below and implement ``_connect``, ``_error``, ``_open``, ``ping``, ``_lock_writer``
    and ``_unlock_writer``.

    The writer lease (``claim_writer``): once this object has held it, every write of the
    writer's (a tick's commit, outbox claims and their outcomes, notification records,
    statuses, garbage collection) first reads the lease row in its own transaction —
    locked against a takeover until it commits — and is refused (``LeaseLost``) unless
    the epoch is still this object's and the lease has not run out by this process's
    clock. A takeover therefore sees every write of the old epoch, and none comes after.
    """

    _DB_ERRORS: ClassVar[tuple[type[BaseException], ...]] = ()  # the driver's errors
    _UNIQUE_VIOLATION: ClassVar[tuple[type[BaseException], ...]] = ()
    _BEGIN_WRITE: ClassVar[str] = "BEGIN"
    _BEGIN_READ: ClassVar[str] = "BEGIN"  # one consistent snapshot, read-only
    _CLAIM_LOCK: ClassVar[str] = ""  # what locks the outbox rows a claim picks
    _ROW_LOCK: ClassVar[str] = ""  # what locks the outbox row a completion reads
    _SHARE_LOCK: ClassVar[str] = ""  # what keeps the lease row as read until commit
    # Whether the backend's writer lock (``_lock_writer``) already proves no other process
    # writes (SQLite's flock): then the lease is taken whoever's it was.
    _EXCLUSIVE: ClassVar[bool] = False

    def __init__(self, name: str, *, busy_timeout: float, hold_for: float = HOLD_FOR) -> None:
        self.path = name  # what messages name the store by
        self._busy_timeout = busy_timeout
        self._hold_for = hold_for
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: dict[threading.Thread, Any] = {}
        self._closed = False
        self._writer: Any = None  # the backend's writer lock, once claimed
        self._writer_name = ""  # who holds it (what a refused claim is told)
        self._epoch: int | None = None  # the lease epoch this object last held: fenced
        self._valid_until = 0.0  # lease_clock() until which it holds the lease
        self._ttl = LEASE_TTL
        self._lease_lock = threading.Lock()
        # The writer's alert states by fingerprint (None: no row) and cursors by source, as
        # stored: nobody else writes them while it holds the lock, so an idle tick decodes
        # no alert row and reads no cursor, and a busy one writes only what moved.
        self._alert_cache: dict[str, AlertState | None] | None = None
        self._cursor_cache: dict[str, dict[str, str]] | None = None
        # The writer's quiet runs not yet written (see ``held``): the caches hold them.
        self._holder: Holder | None = None
        self._cache_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def _start(self) -> None:
        """Open (and migrate) the schema, or close what opening it left open."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- what a backend supplies ----------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def _error(self, action: str, exc: Exception) -> StoreError:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def ping(self) -> None:
        raise NotImplementedError

    def _lock_writer(self, holder: str) -> Any:
        """Take the writer lock for ``holder`` (WriterBusy if another has it)."""
        raise NotImplementedError

    def _unlock_writer(self, lock: Any) -> None:
        raise NotImplementedError

    def _lock_group(self, conn: Any, group_key: str, receiver: str) -> None:
        """Serialize enqueues of one (group, receiver) where the write transaction alone
        does not (SQLite's does: it holds the database's write lock)."""

    # --- connections, transactions, errors ------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._DB_ERRORS as exc:
            raise self._error(action, exc) from exc
        except codec.CodecError as exc:
            raise StoreError(str(exc), store=self.path, temporary=False) from None

    def _closed_error(self) -> StoreError:
        return StoreError("store is closed", store=self.path, temporary=False)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if self._closed:
            raise self._closed_error()
        if conn is None:
            with self._errors("cannot open"):
                conn = self._connect()
            with self._lock:
                if self._closed:
                    conn.close()
                    raise self._closed_error()
                for thread in [t for t in self._connections if not t.is_alive()]:
                    self._connections.pop(thread).close()
                self._connections[threading.current_thread()] = conn
            self._local.conn = conn
        return conn

    def _forget_connection(self) -> None:
        """This thread's connection is gone (lost): the next call opens another."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        with self._lock:
            self._connections.pop(threading.current_thread(), None)
        if conn is not None:
            with suppress(Exception):
                conn.close()

    @contextmanager
    def _transaction(self, action: str, *, write: bool = True,
                     fenced: bool = False) -> Iterator[Any]:
        """One transaction on this thread's connection; rolled back on any exception.
        ``fenced``: a write of the writer's, refused unless it still holds the lease."""
        with self._errors(action):
            conn, _ = self._begin(self._BEGIN_WRITE if write else self._BEGIN_READ)
            try:
                if fenced and self._epoch is not None:
                    self._fence(conn)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(*self._DB_ERRORS):
                        conn.execute("ROLLBACK")
                raise

    def _begin(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, Any]:
        """This thread's connection and ``statement`` run on it (a BEGIN, or a query of its
        own) — on a new connection when the one it had was lost while idle (a server
        restart, a killed backend): nothing had been done on it, so once more is safe."""
        conn = self._conn()
        try:
            return conn, conn.execute(statement, params)
        except self._DB_ERRORS:
            if not getattr(conn, "broken", False):
                raise
            self._forget_connection()
        conn = self._conn()
        return conn, conn.execute(statement, params)

    def _query(self, action: str, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._errors(action):
            _, cursor = self._begin(sql, tuple(params))
            return cursor.fetchall()

    # --- alerts and cursors ---------------------------------------------------------------

    def load_alerts(self, fingerprints: Iterable[str] | None = None) -> dict[str, AlertState]:
        cache = self._alert_cache
        if cache is not None and fingerprints is not None:
            with self._cache_lock:
                wanted = set(fingerprints)
                missing = wanted - cache.keys()
                if missing:
                    found = self._load_alerts(missing)
                    cache.update((fp, found.get(fp)) for fp in missing)
                return {fp: alert for fp in wanted if (alert := cache[fp]) is not None}
        return self._load_alerts(fingerprints)

    def _load_alerts(self, fingerprints: Iterable[str] | None) -> dict[str, AlertState]:
        if fingerprints is None:
            rows = self._query("cannot load alerts", _SELECT_ALERTS)
        else:
            wanted = sorted(set(fingerprints))
            rows = []
            with self._transaction("cannot load alerts", write=False) as conn:  # one snapshot
                for i in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[i : i + _IN_CHUNK]
                    sql = f"{_SELECT_ALERTS} WHERE fingerprint IN ({', '.join('?' * len(chunk))})"
                    rows.extend(conn.execute(sql, chunk).fetchall())
        with self._errors("cannot load alerts"):
            return {row[0]: codec.alert_from_row(row) for row in rows}

    def alerts(
        self,
        *,
        status: AlertStatus | Collection[AlertStatus] | None = None,
        run_path: str | None = None,
        project: str | None = None,
        rule: str | None = None,
        resolution: str | None = None,
    ) -> list[AlertState]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = (
                [AlertStatus(status).value]
                if isinstance(status, str)
                else sorted({AlertStatus(s).value for s in status})
            )
            if not statuses:
                return []
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        for column, value in (("run_path", run_path), ("run_project", project), ("rule", rule)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if resolution is not None:  # a prefix, compared exactly (no LIKE wildcards)
            where.append("substr(resolution, 1, ?) = ?")
            params.extend((len(resolution), resolution))
        sql = _SELECT_ALERTS
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY run_path, rule, fingerprint"
        rows = self._query("cannot list alerts", sql, params)
        with self._errors("cannot list alerts"):
            return [codec.alert_from_row(row) for row in rows]

    def load_cursors(self, source: str) -> dict[str, str]:
        cache = self._cursor_cache
        if cache is None:
            return dict(self._load_cursors(source))
        with self._cache_lock:
            if source not in cache:
                cache[source] = dict(self._load_cursors(source))
            return dict(cache[source])

    def _load_cursors(self, source: str) -> list[tuple[str, str]]:
        return self._query(
            "cannot load cursors", "SELECT run_key, value FROM cursors WHERE source = ?", (source,)
        )

    def commit_tick(
        self,
        *,
        source: str,
        alerts: Iterable[AlertState],
        cursors: Mapping[str, str],
        now: float,
    ) -> None:
        now = float(now)
        alerts = list(alerts)
        with self._cache_lock:  # what the writer keeps moves with the file, in one order
            holder, kept_alerts = self._holder, self._alert_cache
            kept_cursors = self._cursor_cache
            if kept_cursors is not None and cursors and source not in kept_cursors:
                # Held cursors live only here: the source's stored ones first, read now.
                kept_cursors[source] = dict(self._load_cursors(source))
            if holder is not None and kept_alerts is not None:
                plan = holder.plan(source, alerts, cursors, now, kept_alerts)
                with self._errors("cannot commit tick"):  # refused now, not when written
                    for alert in plan.holding:  # (a memory held before was checked then)
                        before = kept_alerts.get(alert.fingerprint)
                        codec.moving_row(alert, now, memory=before is None
                                         or alert.memory is not before.memory)
                    _cursor_rows(source, cursors, now)
                self._write(source, plan.alerts, plan.cursors, now, plan.remember)
                holder.apply(plan)
            else:
                self._write(source, alerts, cursors, now, ())
            # Read once each: close() may drop what the writer keeps meanwhile.
            kept_alerts, kept_cursors = self._alert_cache, self._cursor_cache
            if kept_alerts is not None:
                # Frozen states, and checks copy their memory before changing it: the
                # writer keeps the newest states as they are (or will be) stored (a row
                # read back would be the same values, its memory's tuples as lists).
                kept_alerts.update((a.fingerprint, a) for a in alerts)
            if kept_cursors is not None and source in kept_cursors:
                kept_cursors[source].update((str(k), v) for k, v in cursors.items())

    def _write(self, source: str, alerts: list[AlertState], cursors: Mapping[str, str],
               now: float, remember: Collection[str]) -> None:
        if not alerts and not cursors:
            return
        with self._errors("cannot commit tick"):  # encoded first: a refusal writes nothing
            full, narrow, moved, remembered = self._alert_rows(alerts, now, remember)
            cursor_rows = _cursor_rows(source, cursors, now)
        with self._transaction("cannot commit tick", fenced=True) as conn:
            conn.executemany(_UPSERT_CURSOR, cursor_rows)
            conn.executemany(_UPSERT_ALERT, full)
            updated = (conn.executemany(_MOVE_ALERT, moved).rowcount
                       + conn.executemany(_MOVE_ALERT_AND_MEMORY, remembered).rowcount)
            if updated != len(narrow):  # a row it knew is gone: write them whole
                conn.executemany(_UPSERT_ALERT, [codec.alert_to_row(a, now) for a in narrow])

    def flush(self) -> None:
        """Write what the writer holds (see ``held``): at a stop, before collecting."""
        with self._cache_lock:
            holder = self._holder
            if holder is None:
                return
            for source, (alerts, cursors) in holder.everything().items():
                now = max((a.last_seen or 0.0 for a in alerts), default=0.0)
                self._write(source, alerts, cursors, now, {a.fingerprint for a in alerts})
                holder.forget(source)  # written: a failure above keeps it held

    def _alert_rows(self, alerts: list[AlertState], now: float,
                    remember: Collection[str] = ()) -> tuple[list[Any], ...]:
        """Rows to write for ``alerts``: whole rows, and — for the alerts (``narrow``) the
        writer knows as stored with the same steady fields — just the moving columns, plus
        the memory if it changed. Either way a row ends up as a whole-row write leaves it."""
        cache = self._alert_cache
        if cache is None:
            return [codec.alert_to_row(a, now) for a in alerts], [], [], []
        full, narrow, moved, remembered = [], [], [], []
        steady, moving_row = codec.steady, codec.moving_row
        # The same alert twice: the last one wins, as with whole rows written in order.
        for alert in {a.fingerprint: a for a in alerts}.values():
            stored = cache.get(alert.fingerprint)
            if stored is None or steady(stored) != steady(alert):
                full.append(codec.alert_to_row(alert, now))
                continue
            narrow.append(alert)
            # Equal memory is not rewritten: the file keeps what was stored, which differs
            # from a whole-row write only where equal numbers are spelled differently
            # (0.0 kept for a -0.0, 1 for a 1.0) — the same to every check.
            if alert.memory == stored.memory and alert.fingerprint not in remember:
                moved.append((*moving_row(alert, now), alert.fingerprint))
            else:
                remembered.append((*moving_row(alert, now, memory=True), alert.fingerprint))
        return full, narrow, moved, remembered

    # --- notification log -----------------------------------------------------------------

    def last_notification(self, group_key: str, receiver: str) -> NotificationRecord | None:
        rows = self._query(
            "cannot read notification log", _SELECT_NOTIFICATION, (group_key, receiver)
        )
        if not rows:
            return None
        with self._errors("cannot read notification log"):
            return codec.notification_from_row(rows[0])

    def record_notification(self, record: NotificationRecord) -> None:
        with self._transaction("cannot record notification", fenced=True) as conn:
            conn.execute(_UPSERT_NOTIFICATION, codec.notification_to_row(record))

    # --- silences -------------------------------------------------------------------------

    def add_silence(
        self,
        *,
        matchers: Iterable[Matcher],
        ends_at: float,
        now: float,
        starts_at: float | None = None,
        created_by: str = "",
        comment: str = "",
    ) -> Silence:
        silence = new_silence(
            matchers=matchers,
            ends_at=ends_at,
            now=now,
            starts_at=starts_at,
            created_by=created_by,
            comment=comment,
        )
        with self._transaction("cannot add silence") as conn:
            row = codec.silence_to_row(silence)
            conn.execute(_INSERT_SILENCE, row)
        with self._errors("cannot add silence"):
            return codec.silence_from_row(row)

    def silences(self, now: float, *, include_expired: bool = False) -> list[Silence]:
        if include_expired:
            rows = self._query("cannot list silences", f"{_SELECT_SILENCES} ORDER BY starts_at, id")
        else:
            rows = self._query(
                "cannot list silences",
                f"{_SELECT_SILENCES} WHERE ends_at > ? ORDER BY starts_at, id",
                (now,),
            )
        with self._errors("cannot list silences"):
            return [codec.silence_from_row(row) for row in rows]

    def expire_silence(self, silence_id: str, now: float) -> bool:
        with self._transaction("cannot expire silence") as conn:
            exists = conn.execute("SELECT 1 FROM silences WHERE id = ?", (silence_id,)).fetchone()
            conn.execute(
                "UPDATE silences SET starts_at = MIN(starts_at, ?1), ends_at = ?1 "
                "WHERE id = ?2 AND ends_at > ?1",
                (float(now), silence_id),
            )
        return exists is not None

    # --- outbox and delivery refs ---------------------------------------------------------

    def enqueue(self, entries: Iterable[OutboxEntry]) -> int:
        superseded = 0
        with self._transaction("cannot write outbox", fenced=True) as conn:
            for entry in entries:
                self._lock_group(conn, entry.group_key, entry.receiver)
                try:
                    conn.execute(_INSERT_OUTBOX, codec.outbox_to_row(entry))
                except self._UNIQUE_VIOLATION:
                    raise ValueError(f"outbox entry {entry.id!r} already exists") from None
                superseded += conn.execute(_SUPERSEDE_OUTBOX, (
                    entry.group_key, entry.receiver, float(entry.created_at), entry.id)).rowcount
        return superseded

    def outbox(
        self,
        *,
        group_key: str | None = None,
        receiver: str | None = None,
        include_failed: bool = True,
    ) -> list[OutboxEntry]:
        where, params = [], []
        for column, value in (("group_key", group_key), ("receiver", receiver)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if not include_failed:
            where.append("failed_at IS NULL")
        sql = _SELECT_OUTBOX + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._query("cannot read outbox", sql + " ORDER BY created_at, id", params)
        with self._errors("cannot read outbox"):
            return [codec.outbox_from_row(row) for row in rows]

    def outbox_depth(self) -> int:
        return int(self._query("cannot read outbox",
                               "SELECT count(*) FROM outbox WHERE failed_at IS NULL")[0][0])

    def claim_outbox(
        self,
        now: float,
        *,
        claimant: str,
        lease: float,
        receivers: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        now = float(now)
        sql = f"{_SELECT_OUTBOX} WHERE {_DUE_OUTBOX}"
        epoch = self._epoch  # claims under an older epoch of the lease are void
        params: list[Any] = [now, now, epoch or 0]
        if receivers is not None:
            wanted = sorted(set(receivers))
            if not wanted:
                return []
            sql += f" AND receiver IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY created_at, id LIMIT ?" + self._CLAIM_LOCK
        params.append(max(int(limit), 0))
        # No other process can take the same entries: SQLite's BEGIN IMMEDIATE holds the
        # write lock from the select to the update, PostgreSQL locks the rows it picks.
        with self._transaction("cannot claim outbox entries", fenced=True) as conn:
            taken = [
                dataclasses.replace(entry, claimed_by=claimant, claimed_until=now + float(lease),
                                    attempts=entry.attempts + 1,
                                    uncertain=entry.uncertain or bool(entry.claimed_by))
                for entry in map(codec.outbox_from_row, conn.execute(sql, params).fetchall())
            ]
            conn.executemany(
                "UPDATE outbox SET claimed_by = ?, claimed_until = ?, attempts = ?, uncertain = ?,"
                " claim_epoch = ? WHERE id = ?",
                [(e.claimed_by, e.claimed_until, e.attempts, int(e.uncertain), epoch, e.id)
                 for e in taken],
            )
        return taken

    def _held(self, conn: Any, entry_id: str, claimant: str | None) -> Any:
        sql = f"{_SELECT_OUTBOX} WHERE id = ? AND failed_at IS NULL"
        params: tuple[Any, ...] = (entry_id,)
        if claimant is not None:
            sql += " AND claimed_by = ?"
            params = (entry_id, claimant)
        return conn.execute(sql + self._ROW_LOCK, params).fetchone()

    def complete_outbox(
        self,
        entry_id: str,
        *,
        claimant: str,
        refs: Mapping[str, str],
        refs_expire_at: float,
        followups: Iterable[OutboxEntry] = (),
        sent_at: float | None = None,
    ) -> bool:
        rows = [codec.outbox_to_row(e) for e in followups]
        with self._transaction("cannot complete outbox entry", fenced=True) as conn:
            row = self._held(conn, entry_id, claimant)
            if row is None:
                return False
            entry = codec.outbox_from_row(row)
            if not entry.followup:
                conn.execute(_UPSERT_NOTIFICATION, codec.notification_to_row(entry.record()))
            if not entry.followup and sent_at is not None:
                conn.execute(_INSERT_DELIVERY, codec.delivery_to_row(entry.delivered(sent_at)))
                conn.executemany(
                    "INSERT INTO delivery_alerts (fingerprint, delivery) VALUES (?, ?)"
                    " ON CONFLICT (fingerprint, delivery) DO NOTHING",
                    [(fp, entry.id) for fp in sorted(entry.firing | entry.resolved)])
            conn.executemany(_INSERT_OUTBOX, rows)
            conn.executemany(_UPSERT_REF, [
                (entry.receiver, str(key), str(value), float(refs_expire_at))
                for key, value in refs.items()
            ])
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
        return True

    def retry_outbox(
        self, entry_id: str, *, claimant: str, next_attempt_at: float, error: str,
        uncertain: bool = False,
    ) -> bool:
        return self._release("cannot reschedule outbox entry", entry_id, claimant, error,
                             "next_attempt_at", float(next_attempt_at), uncertain=uncertain)

    def fail_outbox(self, entry_id: str, *, claimant: str | None, error: str, now: float) -> bool:
        return self._release("cannot mark outbox entry failed", entry_id, claimant, error,
                             "failed_at", float(now))

    def _release(self, action: str, entry_id: str, claimant: str | None, error: str,
                 column: str, value: float, *, uncertain: bool = False) -> bool:
        """Let go of a held entry, noting ``error`` and setting ``column``; False if not held."""
        sql = (
            f"UPDATE outbox SET {column} = ?, last_error = ?, claimed_by = '',"
            " claimed_until = NULL, claim_epoch = NULL, uncertain = MAX(uncertain, ?)"
            " WHERE id = ? AND failed_at IS NULL"
        )
        params: tuple[Any, ...] = (value, codec.one_line(error), int(uncertain), entry_id)
        if claimant is not None:
            sql += " AND claimed_by = ?"
            params = (*params, claimant)
        with self._transaction(action, fenced=True) as conn:
            changed = conn.execute(sql, params).rowcount
        return changed > 0

    def load_refs(self, receiver: str, keys: Iterable[str], now: float) -> dict[str, str]:
        wanted = sorted(set(keys))
        found: dict[str, str] = {}
        with self._transaction("cannot read delivery refs", write=False) as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                found.update(conn.execute(
                    "SELECT key, value FROM delivery_refs WHERE receiver = ? AND expires_at > ?"
                    f" AND key IN ({', '.join('?' * len(chunk))})",
                    (receiver, float(now), *chunk),
                ).fetchall())
        return found

    def deliveries(self, fingerprints: Iterable[str]) -> list[Delivery]:
        wanted = sorted(set(fingerprints))
        rows: dict[str, Any] = {}
        with self._transaction("cannot read the delivery log", write=False) as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                for row in conn.execute(
                        f"SELECT {_columns(f'd.{c}' for c in codec.DELIVERY_COLUMNS)}"
                        " FROM deliveries d JOIN delivery_alerts a ON a.delivery = d.id"
                        f" WHERE a.fingerprint IN ({', '.join('?' * len(chunk))})",
                        chunk).fetchall():
                    rows[row[0]] = row
        with self._errors("cannot read the delivery log"):
            found = [codec.delivery_from_row(row) for row in rows.values()]
        return sorted(found, key=lambda d: (d.sent_at, d.id))

    # --- upkeep ---------------------------------------------------------------------------

    def collect_garbage(
        self,
        now: float,
        *,
        resolved_retention: float,
        cursor_retention: float,
        silence_retention: float | None = None,
        outbox_retention: float | None = None,
    ) -> Collected:
        if silence_retention is None:
            silence_retention = resolved_retention
        if outbox_retention is None:
            outbox_retention = resolved_retention
        collectible = ", ".join(sorted(f"'{s.value}'" for s in COLLECTIBLE_STATUSES))
        deleted: dict[str, int] = {}
        statements: dict[str, tuple[str, float]] = {
            "notifications": ("DELETE FROM notifications WHERE expires_at <= ?", now),
            "alerts": (
                f"DELETE FROM alerts WHERE status IN ({collectible}) AND {_ALERT_TOUCHED} < ?",
                now - resolved_retention,
            ),
            "cursors": ("DELETE FROM cursors WHERE updated_at < ?", now - cursor_retention),
            "silences": ("DELETE FROM silences WHERE ends_at < ?", now - silence_retention),
            "outbox": ("DELETE FROM outbox WHERE failed_at < ?", now - outbox_retention),
            "refs": ("DELETE FROM delivery_refs WHERE expires_at <= ?", now),
            "delivery_alerts": ("DELETE FROM delivery_alerts WHERE delivery IN"
                                " (SELECT id FROM deliveries WHERE sent_at < ?)",
                                now - resolved_retention),
            "deliveries": ("DELETE FROM deliveries WHERE sent_at < ?", now - resolved_retention),
        }
        with self._cache_lock:  # no tick reads what the writer keeps until it is cleared
            self.flush()  # the rows collected are judged by what they are now
            try:
                with self._transaction("cannot collect garbage", fenced=True) as conn:
                    for kind, (sql, cutoff) in statements.items():
                        deleted[kind] = conn.execute(sql, (float(cutoff),)).rowcount
                    deleted.pop("delivery_alerts")  # (counted as their deliveries)
            finally:
                if self._alert_cache is not None:
                    self._alert_cache.clear()  # rows are gone: read what is left afresh
                if self._cursor_cache is not None:
                    self._cursor_cache.clear()
        return Collected(**deleted)

    def save_status(self, source: str, status: Mapping[str, Any], now: float) -> None:
        with self._transaction("cannot save source status", fenced=True) as conn:
            conn.execute(_UPSERT_STATUS, (source, codec.status_to_text(source, status), float(now)))

    def load_status(self) -> dict[str, dict[str, Any]]:
        rows = self._query("cannot load source status",
                           "SELECT source, data FROM source_status ORDER BY source")
        with self._errors("cannot load source status"):
            return {source: codec.status_from_text(source, data) for source, data in rows}

    def save_board(self, entries: Iterable[BoardEntry], *, forget_before: float) -> None:
        rows = [(e.path, e.source, float(e.seen), e.body) for e in entries]
        with self._transaction("cannot save the run board", fenced=True) as conn:
            conn.execute("DELETE FROM board WHERE seen < ?", (float(forget_before),))
            if rows:
                conn.executemany(_UPSERT_BOARD, rows)

    def load_board(self) -> list[BoardEntry]:
        rows = self._query("cannot load the run board",
                           "SELECT path, source, seen, body FROM board ORDER BY path")
        return [BoardEntry(path=p, source=s, seen=float(t), body=b) for p, s, t, b in rows]

    # --- the one writer: its lease and the fence -----------------------------------------

    def claim_writer(self, holder: str, *, now: float | None = None, ttl: float = LEASE_TTL,
                     standby: bool = False, take: bool = True) -> Lease:
        """See ``base.Store.claim_writer``: the backend's writer lock (``_lock_writer``,
        kept until ``close``), then the lease, in one transaction. Taking it at a new epoch
        starts keeping what only the writer writes afresh; finding it lost stops that."""
        now = time.time() if now is None else float(now)
        with self._lease_lock:
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                if self._writer is None:
                    self._writer = self._lock_writer(holder)
            started = lease_clock()  # held until started + ttl, whatever the answer's delay
            with self._transaction("cannot take the writer lease") as conn:
                conn.execute(_ADD_LEASE, (LEADER,))
                _, who, epoch, expires_at = conn.execute(
                    f"{_SELECT_LEASES} WHERE name = ?{self._ROW_LOCK}", (LEADER,)).fetchone()
                renew = who == holder and epoch == self._epoch
                mine = renew or (take and (not who or expires_at <= now or self._EXCLUSIVE))
                if mine:
                    who, epoch, expires_at = holder, epoch if renew else epoch + 1, now + ttl
                    conn.execute(_SET_LEASE, (who, epoch, expires_at, now, LEADER))
            with self._cache_lock:
                if not mine:
                    if self._valid_until:
                        self._stop_keeping()
                    if not standby:
                        raise WriterBusy(who, store=self.path)
                    return Lease(name=LEADER, holder=who, epoch=epoch, expires_at=expires_at)
                if epoch != self._epoch:  # another may have written since: read it afresh
                    self._start_keeping()
                    self._epoch = epoch
                self._valid_until = started + ttl
                self._ttl = ttl
                self._writer_name = holder
        return Lease(name=LEADER, holder=who, epoch=epoch, expires_at=expires_at, mine=True)

    def leases(self) -> list[Lease]:
        rows = self._query("cannot read leases", f"{_SELECT_LEASES} ORDER BY name")
        held = self._epoch if lease_clock() < self._valid_until else None
        return [Lease(name=name, holder=who, epoch=int(epoch), expires_at=float(expires_at),
                      mine=name == LEADER and epoch == held and who == self._writer_name)
                for name, who, epoch, expires_at in rows]

    def check_writer(self) -> None:
        if self._epoch is None:
            return
        if lease_clock() >= self._valid_until - self._ttl / 3:
            raise LeaseLost("not renewed in time by this process's clock; standing by",
                            store=self.path)
        with self._transaction("cannot read the writer lease", fenced=True):
            pass

    def _fence(self, conn: Any) -> None:
        """Refuse the writer's write (``LeaseLost``, nothing written) unless it holds the
        lease; the row stays locked against a takeover until the write commits."""
        if lease_clock() >= self._valid_until:
            raise LeaseLost("not renewed in time by this process's clock; standing by",
                            store=self.path)
        row = conn.execute(f"SELECT holder, epoch FROM leases WHERE name = ?{self._SHARE_LOCK}",
                           (LEADER,)).fetchone()
        if row is None or row[1] != self._epoch:
            with self._cache_lock:
                self._stop_keeping()
            who, epoch = row or ("nobody", 0)
            raise LeaseLost(f"{who} holds it at epoch {epoch} (this process held epoch"
                            f" {self._epoch})", store=self.path)

    def _start_keeping(self) -> None:
        """The writer keeps nothing yet: what it reads next comes from the database."""
        self._alert_cache, self._cursor_cache = {}, {}
        self._holder = Holder(self._hold_for)

    def _stop_keeping(self) -> None:
        """The lease is lost: what this writer kept and held is not its to write any more
        (the epoch stays, so its writes stay fenced)."""
        self._alert_cache = self._cursor_cache = None
        self._holder = None
        self._valid_until = 0.0

    def close(self) -> None:
        if self._writer is not None and not self._closed:
            # What was held is written (a crash would lose it: see ``held``), then the
            # lease is let go, so a standby takes over at once.
            with suppress(StoreError):
                self.flush()
            if self._epoch is not None and self._valid_until:
                with suppress(StoreError), self._transaction("cannot release the lease") as c:
                    c.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?"
                              " AND epoch = ?", (LEADER, self._writer_name, self._epoch))
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._unlock_writer(self._writer)
                self._writer = None
                self._stop_keeping()
            connections = list(self._connections.values())
            self._connections.clear()
        for conn in connections:
            with suppress(Exception):
                conn.close()


def _cursor_rows(source: str, cursors: Mapping[str, str],
                 now: float) -> list[tuple[str, str, str, float]]:
    rows = []
    for key, value in cursors.items():
        if not isinstance(value, str):
            raise codec.CodecError(
                f"cursor {source}/{key}: expected text, got {type(value).__name__}")
        rows.append((source, str(key), value, now))
    return rows
