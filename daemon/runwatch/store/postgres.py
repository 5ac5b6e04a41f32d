"""The PostgreSQL store: the shared SQL (``sql.SqlStore``) over psycopg 3.

Each thread gets its own connection, in autocommit mode with explicit transactions: writes
in READ COMMITTED, relying on row locks (an outbox claim takes its rows ``FOR UPDATE SKIP
LOCKED``, so replicas never take the same entry; enqueues of one group are serialized by a
transaction-scoped advisory lock); multi-statement reads in one REPEATABLE READ snapshot.
A row lock not granted within ``busy_timeout`` (``lock_timeout``) fails the call with a
temporary ``StoreError``, as a busy SQLite file does; so does a lost or refused connection,
which is dropped and opened again by the next call.

The shared SQL is written as SQLite reads it and translated here once per statement
(``%s`` parameters, ``GREATEST``/``LEAST``, 8-byte column types). The schema version lives
in the table ``runwatch_schema``; ``MIGRATIONS`` run under an advisory lock, so replicas
opening a new database at once migrate it once. A schema newer than this code is refused,
never touched; so is a schema with tables but no version (not a runwatch store). Which
replica writes is decided by the lease (``SqlStore.claim_writer``), whose row each of the
writer's transactions reads ``FOR SHARE``: a takeover waits for them, and they are refused
once it is done.

``search_path`` picks the schema (``?schema=NAME`` in the store URL): several stores can
share one database.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from typing import Any, ClassVar

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError as exc:  # an optional dependency: runwatch[postgres]
    raise ImportError("PostgreSQL stores need psycopg: pip install 'runwatch[postgres]'"
                      ) from exc

from runwatch.store.base import StoreError
from runwatch.store.held import HOLD_FOR
from runwatch.store.sql import APPLICATION_ID, MIGRATIONS, SqlStore

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a call waits for a row lock before giving up
RECONNECT_MAX = 8.0  # seconds: the longest wait between connection attempts
IDLE_IN_TRANSACTION_MS = 3000  # runwatch's transactions never wait on the client this long
CONNECT_TIMEOUT = 10  # seconds

# SQLSTATE classes and codes after which the same call may well succeed later: connection
# exceptions, transaction rollbacks (serialization, deadlock), insufficient resources,
# operator intervention (shutdown), a lock not available in time, a cancelled statement.
_TEMPORARY_STATES = ("08", "40", "53", "57P", "55P03", "57014")
_FOREIGN = -1  # a schema holding tables, none of them runwatch's version
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def render_ddl(statement: str) -> str:
    """A SQLite schema statement as PostgreSQL's: 8-byte floats and integers (REAL is
    4 bytes there), no rowid clause."""
    statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)
    statement = re.sub(r"\bINTEGER\b", "BIGINT", statement)
    return statement.replace(" WITHOUT ROWID", "")


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> tuple[str, bool]:
    """The shared SQL as psycopg sends it, and whether its parameters are numbered (``?1``:
    then passed by name)."""
    sql = re.sub(r"\bMAX\(", "GREATEST(", re.sub(r"\bMIN\(", "LEAST(", sql))
    sql = sql.replace("%", "%%")
    if re.search(r"\?\d", sql):
        return re.sub(r"\?(\d+)", r"%(p\1)s", sql), True
    return sql.replace("?", "%s"), False


def _params(named: bool, params: Any) -> Any:
    return {f"p{i}": value for i, value in enumerate(params, 1)} if named else tuple(params)


_NUL_REFUSED = "cannot contain NUL"  # psycopg's words, before anything is sent


class NulText:
    """Whether a store has met text with a NUL character, which PostgreSQL's text cannot
    hold (SQLite's can): a run name or a metric key from a corrupt file. From then on
    every text value is written with U+FFFD in its place — the first call that met it
    fails as temporary, written by nobody, and is done again by the next tick."""

    seen = False


def _clean(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class _Connection:
    """What the shared SQL asks of a connection (sqlite3's surface), over psycopg's."""

    def __init__(self, pg: psycopg.Connection[Any], nul: NulText) -> None:
        self.pg = pg
        self.nul = nul

    def execute(self, sql: str, params: Any = ()) -> Any:
        text, named = _translate(sql)
        if self.nul.seen:
            params = [_clean(v) for v in params]
        try:
            return self.pg.execute(text, _params(named, params))
        except psycopg.DataError as exc:
            if _NUL_REFUSED not in str(exc) or self.nul.seen:
                raise
            self.nul.seen = True  # refused before it was sent: the statement, again
            return self.pg.execute(text, _params(named, [_clean(v) for v in params]))

    def executemany(self, sql: str, rows: Any) -> Any:
        text, named = _translate(sql)
        cursor = self.pg.cursor()
        if self.nul.seen:
            rows = [[_clean(v) for v in row] for row in rows]
        try:
            cursor.executemany(text, [_params(named, row) for row in rows])
        except psycopg.DataError as exc:
            if _NUL_REFUSED in str(exc):  # the rows before it went through: not again
                self.nul.seen = True
                raise psycopg.OperationalError(
                    "text with a NUL character, which PostgreSQL cannot store: written"
                    " with U+FFFD in its place from the next try on") from None
            raise
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self.pg.broken or self.pg.closed

    def close(self) -> None:
        self.pg.close()


class PostgresStore(SqlStore):
    _DB_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (psycopg.Error,)
    _UNIQUE_VIOLATION: ClassVar[tuple[type[BaseException], ...]] = (pg_errors.UniqueViolation,)
    _BEGIN_WRITE: ClassVar[str] = "BEGIN"
    _BEGIN_READ: ClassVar[str] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    _CLAIM_LOCK: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    _ROW_LOCK: ClassVar[str] = " FOR UPDATE"
    _SHARE_LOCK: ClassVar[str] = " FOR SHARE"

    def __init__(self, conninfo: str, *, name: str, schema: str | None = None,
                 password: str | None = None, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 hold_for: float = HOLD_FOR) -> None:
        super().__init__(name, busy_timeout=busy_timeout, hold_for=hold_for)
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise StoreError(f"schema {schema!r}: expected a plain SQL name", store=name,
                             temporary=False)
        self._conninfo = conninfo
        self._nul = NulText()
        self._backoff_lock = threading.Lock()
        self._delay = 0.0  # seconds before the next connection attempt after a failed one
        self._retry_at = 0.0  # time.monotonic() of the next attempt
        self._last_failure = ""
        self._schema = schema
        self._password = password
        self._start()

    def _options(self, **settings: Any) -> str:
        settings = {"lock_timeout": int(self._busy_timeout * 1000),
                    # A writer stopped inside a transaction (SIGSTOP, a lost node) would
                    # hold the lease row against every takeover: its session ends instead.
                    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_MS,
                    **settings}
        if self._schema is not None:
            settings["search_path"] = self._schema
        return " ".join(f"-c {key}={value}" for key, value in settings.items())

    def _new_connection(self, **settings: Any) -> psycopg.Connection[Any]:
        extra = {"password": self._password} if self._password is not None else {}
        application = settings.pop("application_name", "runwatch")
        return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=application, options=self._options(**settings),
                               **extra)

    def _connect(self) -> _Connection:
        """A new connection — not tried again until a backoff after a failed one (1 s,
        doubling to ``RECONNECT_MAX``), so a server that is down is not hammered by every
        thread (the tick, the lease heartbeat, scrapes, pages); calls meanwhile fail at
        once, as temporary, saying when the next try is."""
        with self._backoff_lock:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise psycopg.OperationalError(
                    f"{self._last_failure} (connecting again in {wait:.0f}s)")
        try:
            conn = _Connection(self._new_connection(), self._nul)
        except psycopg.OperationalError as exc:
            with self._backoff_lock:
                self._delay = min(RECONNECT_MAX, self._delay * 2 or 1.0)
                self._retry_at = time.monotonic() + self._delay
                self._last_failure = " ".join(str(exc).split()) or type(exc).__name__
            raise
        with self._backoff_lock:
            self._delay, self._retry_at = 0.0, 0.0
        return conn

    def _error(self, action: str, exc: Exception) -> StoreError:
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.broken:
            self._forget_connection()  # lost: the next call connects again
        state = getattr(exc, "sqlstate", None)
        if state is None:  # no answer from a server: refused, lost, timed out
            temporary = isinstance(exc, psycopg.OperationalError)
        else:
            temporary = state.startswith(_TEMPORARY_STATES)
        diag = getattr(exc, "diag", None)
        detail = (diag.message_primary if diag is not None else None) or str(exc)
        return StoreError(f"{action}: {detail}", store=self.path, temporary=temporary)

    # --- schema ---------------------------------------------------------------------------

    def _version(self, conn: _Connection) -> int | None:
        """The schema's version; None for a schema without runwatch's tables, _FOREIGN if
        it holds other tables; a StoreError if it is newer than this code."""
        # From pg_tables, read in the statement's snapshot: to_regclass() looks through a
        # catalog cache that may not yet know a table another opener just committed.
        tables = {name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}
        if "runwatch_schema" not in tables:
            return _FOREIGN if tables else None
        version = int(conn.execute("SELECT version FROM runwatch_schema").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"cannot open: schema version {version} is newer than this runwatch "
                f"understands ({len(MIGRATIONS)}); upgrade runwatch",
                store=self.path, temporary=False)
        return version

    def _open(self) -> None:
        with self._transaction("cannot open", write=False) as snapshot:
            version = self._version(snapshot)  # read-only: a newer schema is never touched
        if version == len(MIGRATIONS):
            return
        with self._transaction("cannot migrate schema") as tx:
            # One opener migrates; the others wait here, then find it done (what they saw
            # before, another's migration half seen, is decided again here).
            tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))",
                       (APPLICATION_ID,))
            version = self._version(tx)
            if version == _FOREIGN:
                raise StoreError("cannot open: a schema with tables but no runwatch schema"
                                 " version", store=self.path, temporary=False)
            if version is None:
                tx.execute("CREATE TABLE runwatch_schema (version INTEGER NOT NULL)")
                tx.execute("INSERT INTO runwatch_schema (version) VALUES (0)")
                version = 0
            for step in MIGRATIONS[version:]:
                for statement in step:
                    tx.execute(render_ddl(statement))
            tx.execute("UPDATE runwatch_schema SET version = ?", (len(MIGRATIONS),))

    def ping(self) -> None:
        rows = self._query("not answering", "SELECT version FROM runwatch_schema")
        if rows[0][0] != len(MIGRATIONS):
            raise StoreError(
                f"schema version is now {rows[0][0]}, this runwatch speaks {len(MIGRATIONS)}",
                store=self.path, temporary=False)

    # --- the one writer, enqueue order ----------------------------------------------------

    def _lock_writer(self, holder: str) -> bool:
        """No lock of its own: replicas share the server, and the lease (``SqlStore``)
        decides which of them writes."""
        return True

    def _unlock_writer(self, lock: bool) -> None:
        pass

    def _lock_group(self, conn: Any, group_key: str, receiver: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':' || ?),"
                     " hashtext(?))", (group_key, receiver))
