"""The SQLite store: one file in WAL mode, safe for several threads and processes.

The SQL and the store's behaviour are ``sql.SqlStore``'s; this is SQLite's part. Each
thread gets its own connection (readers never wait for a writer in WAL mode); writes take
the write lock up front (``BEGIN IMMEDIATE``) so a busy database waits ``busy_timeout`` and
then fails with a temporary ``StoreError`` instead of deadlocking. The one writer's lock is
an ``flock`` on ``<store>.writer``.

The schema is versioned in ``PRAGMA user_version``: ``MIGRATIONS[i]`` takes a
database from version ``i`` to ``i + 1``, and opening runs whatever is missing in one
transaction. A database newer than this code is refused, never touched.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from typing import ClassVar

from runwatch.store.base import StoreError, WriterBusy
from runwatch.store.held import HOLD_FOR
from runwatch.store.sql import APPLICATION_ID, MIGRATIONS, SqlStore

__all__ = ["APPLICATION_ID", "DEFAULT_BUSY_TIMEOUT", "MIGRATIONS", "SqliteStore"]

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a call waits for another writer before giving up

# A busy tick rewrites the same alert and cursor pages tick after tick (~1,000 pages over
# 500 live runs). Checkpointing the WAL back into the file every 10,000 pages (~40 MB)
# rather than SQLite's 1,000 copies each page once per several ticks, not on every one.
WAL_CHECKPOINT_PAGES = 10_000

# Primary result codes after which the same call may well succeed later.
_TEMPORARY_CODES = frozenset(
    {
        5,  # SQLITE_BUSY: another connection holds the lock
        6,  # SQLITE_LOCKED
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL: disk full
        15,  # SQLITE_PROTOCOL: WAL lock race
    }
)


class SqliteStore(SqlStore):
    _DB_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error,)
    _UNIQUE_VIOLATION: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.IntegrityError,)
    _BEGIN_WRITE: ClassVar[str] = "BEGIN IMMEDIATE"
    _EXCLUSIVE: ClassVar[bool] = True  # the flock: one writer per file, whatever the lease says

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 hold_for: float = HOLD_FOR):
        super().__init__(os.path.abspath(os.fspath(path)), busy_timeout=busy_timeout,
                         hold_for=hold_for)
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create directory {parent}: {exc.strerror or exc}",
                store=self.path,
                temporary=False,
            ) from None
        self._start()

    def _error(self, action: str, exc: Exception) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            temporary = (code & 0xFF) in _TEMPORARY_CODES
        else:
            text = str(exc).lower()
            temporary = "locked" in text or "busy" in text
        return StoreError(f"{action}: {exc}", store=self.path, temporary=temporary)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN / COMMIT ourselves
            check_same_thread=False,  # close() closes every thread's connection
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}").fetchall()
            conn.execute("PRAGMA synchronous = NORMAL").fetchall()
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> None:
        conn = self._conn()
        with self._transaction("cannot open", write=False) as snapshot:
            # Read-only, in one snapshot (another process may be creating the schema): a
            # foreign or newer file is never changed.
            self._check_schema(snapshot)
        with self._errors("cannot open"):
            self._use_wal(conn)
            if conn.execute("PRAGMA user_version").fetchone()[0] < len(MIGRATIONS):
                with self._transaction("cannot migrate schema") as tx:
                    version = self._check_schema(tx)  # again, now holding the write lock
                    for step in MIGRATIONS[version:]:
                        for statement in step:
                            tx.execute(statement)
                    tx.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
                    tx.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch a new file to WAL (the mode persists in it). Two processes opening a new
        store at once: the switch needs the file to itself, and SQLite answers "locked"
        at once rather than through the busy handler — so it is tried again, within the
        busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return  # WAL, or a mode the file system allows instead: SQLite decides
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id not in (0, APPLICATION_ID) or (version > 0 and app_id != APPLICATION_ID):
            raise StoreError(
                "cannot open: a SQLite database of some other application, not a runwatch store",
                store=self.path,
                temporary=False,
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(
                "cannot open: a SQLite database with tables but no runwatch schema version",
                store=self.path,
                temporary=False,
            )
        if version > len(MIGRATIONS):
            raise StoreError(
                f"cannot open: schema version {version} is newer than this runwatch "
                f"understands ({len(MIGRATIONS)}); upgrade runwatch",
                store=self.path,
                temporary=False,
            )
        return version

    def ping(self) -> None:
        rows = self._query("not answering", "PRAGMA user_version")
        if rows[0][0] != len(MIGRATIONS):
            raise StoreError(
                f"schema version is now {rows[0][0]}, this runwatch speaks {len(MIGRATIONS)}",
                store=self.path,
                temporary=False,
            )

    def _lock_writer(self, holder: str) -> int:
        """An exclusive ``flock`` on ``<store>.writer``, held until ``close`` (or the
        process's end: the kernel drops it with the process, however it dies). The file
        names the holder for the one refused."""
        path = self.path + ".writer"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc.strerror or exc}",
                             store=self.path, temporary=False) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                held = _holder(fd)
            finally:
                os.close(fd)
            raise WriterBusy(held or "another process", store=self.path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        return fd

    def _unlock_writer(self, lock: int) -> None:
        os.close(lock)  # releases the flock


def _holder(fd: int, wait: float = 1.0) -> str:
    """The name the writer lock's holder wrote; a holder that has just taken the lock
    writes it a moment later, so an empty file is read again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        held = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
        if held or time.monotonic() > deadline:
            return held
        time.sleep(0.01)
