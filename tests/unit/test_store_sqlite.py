"""What only the SQLite backend has: the file, its journal, its schema versions, its locks."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwatch.model import AlertState, AlertStatus, RunRef, Severity
from runwatch.store import codec, open_store
from runwatch.store import sqlite as sqlite_backend
from runwatch.store.base import OutboxEntry, StoreError
from runwatch.store.sqlite import APPLICATION_ID, MIGRATIONS, SqliteStore

T0 = 1_700_000_000.0
LATEST = len(MIGRATIONS)
FUTURE_STEP = (
    "CREATE TABLE future (id TEXT PRIMARY KEY, payload TEXT NOT NULL, created_at REAL NOT NULL)",
    "CREATE INDEX future_by_age ON future (created_at)",
)


def alert(fp: str = "fp1", **changes: object) -> AlertState:
    return AlertState(
        fingerprint=fp,
        rule="loss_nan",
        run=RunRef(source="wandb", id="r1", project="p", entity="e"),
        severity=Severity.CRITICAL,
        **changes,  # type: ignore[arg-type]
    )


def raw(path: Path) -> sqlite3.Connection:
    """A connection of "another process"."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def pragma(path: Path, name: str) -> object:
    conn = raw(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def tables(path: Path) -> set[str]:
    conn = raw(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def assert_one_line_naming(error: StoreError, path: Path) -> None:
    text = str(error)
    assert str(path) in text
    assert "\n" not in text and "Traceback" not in text


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runwatch.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(db)
    yield opened
    opened.close()


# --- the file -----------------------------------------------------------------------------


def test_wal_mode_and_synchronous_normal(store: SqliteStore, db: Path) -> None:
    assert pragma(db, "journal_mode") == "wal"
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store._conn().execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000


def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "state.db"
    opened = SqliteStore(path)
    try:
        opened.ping()
        assert path.is_file()
        assert opened.path == str(path)
    finally:
        opened.close()


def test_unusable_parent_directory_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as caught:
        SqliteStore(blocker / "state.db")
    assert caught.value.temporary is False
    assert "cannot create directory" in str(caught.value)
    assert_one_line_naming(caught.value, blocker / "state.db")


def test_fresh_file_gets_the_latest_schema(store: SqliteStore, db: Path) -> None:
    assert pragma(db, "user_version") == LATEST
    assert pragma(db, "application_id") == APPLICATION_ID
    assert {"alerts", "cursors", "notifications", "silences", "outbox", "delivery_refs"} <= (
        tables(db))


def test_nan_is_stored_as_text_not_null(store: SqliteStore, db: Path) -> None:
    store.commit_tick(source="wandb", alerts=[alert(value=float("nan"))], cursors={}, now=T0)
    conn = raw(db)
    try:
        assert conn.execute("SELECT value, typeof(value) FROM alerts").fetchone() == ("nan", "text")
    finally:
        conn.close()


# --- migrations ---------------------------------------------------------------------------


def test_unreadable_source_status_is_a_store_error(store: SqliteStore, db: Path) -> None:
    conn = raw(db)
    conn.execute("INSERT INTO source_status VALUES ('rundir', '{not json', ?)", (T0,))
    conn.close()
    with pytest.raises(StoreError, match="status of source 'rundir' unreadable") as caught:
        store.load_status()
    assert_one_line_naming(caught.value, db)
    assert not caught.value.temporary


def test_version_zero_database_is_migrated(db: Path) -> None:
    conn = raw(db)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    opened = SqliteStore(db)
    try:
        assert pragma(db, "user_version") == LATEST
        opened.commit_tick(source="wandb", alerts=[alert()], cursors={"r1": "c"}, now=T0)
    finally:
        opened.close()


def test_older_database_is_migrated_keeping_its_data(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database at version 1, written by hand as an older runwatch would have left it.
    conn = raw(db)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    v1 = [c for c in codec.ALERT_COLUMNS if c not in codec.ADDED_COLUMNS]
    row = dict(zip(codec.ALERT_COLUMNS, codec.alert_to_row(alert(), T0), strict=True))
    conn.execute(f"INSERT INTO alerts ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
                 [row[c] for c in v1])
    conn.execute("INSERT INTO cursors VALUES ('wandb', 'r1', '{\"o\": 1}', ?)", (T0,))
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()

    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", (*MIGRATIONS, FUTURE_STEP))
    opened = SqliteStore(db)
    try:
        assert pragma(db, "user_version") == LATEST + 1
        assert {"outbox", "delivery_refs", "future"} <= tables(db)
        assert opened.load_alerts() == {"fp1": alert()}
        assert opened.load_cursors("wandb") == {"r1": '{"o": 1}'}
        opened.ping()
    finally:
        opened.close()


def test_version_1_database_gains_the_outbox(db: Path) -> None:
    conn = raw(db)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    opened = SqliteStore(db)
    try:
        assert pragma(db, "user_version") == LATEST
        entry = OutboxEntry(id="m1", group_key="g", receiver="slack", payload="{}",
                            created_at=T0, expires_at=T0 + 60, next_attempt_at=T0)
        opened.enqueue([entry])
        assert opened.outbox() == [entry]
    finally:
        opened.close()


def test_failed_migration_changes_nothing(
    store: SqliteStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.commit_tick(source="wandb", alerts=[alert()], cursors={}, now=T0)
    store.close()
    broken = ("CREATE TABLE future (id TEXT PRIMARY KEY)", "THIS IS NOT SQL")
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(StoreError) as caught:
        SqliteStore(db)
    assert caught.value.temporary is False
    assert "migrate" in str(caught.value)
    assert_one_line_naming(caught.value, db)
    assert pragma(db, "user_version") == LATEST
    assert "future" not in tables(db)

    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", MIGRATIONS)
    reopened = SqliteStore(db)
    try:
        assert set(reopened.load_alerts()) == {"fp1"}
    finally:
        reopened.close()


def test_newer_database_is_refused_untouched(db: Path) -> None:
    conn = raw(db)
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    with pytest.raises(StoreError) as caught:
        SqliteStore(db)
    assert caught.value.temporary is False
    assert f"schema version {LATEST + 1} is newer" in str(caught.value)
    assert "upgrade runwatch" in str(caught.value)
    assert_one_line_naming(caught.value, db)
    assert pragma(db, "journal_mode") == "delete"  # not even switched to WAL
    assert pragma(db, "user_version") == LATEST + 1


def test_ping_notices_a_newer_schema(store: SqliteStore, db: Path) -> None:
    conn = raw(db)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version") as caught:
        store.ping()
    assert caught.value.temporary is False


@pytest.mark.parametrize(
    "setup",
    [
        ["CREATE TABLE someone_elses (x)"],  # version 0 but not empty
        ["PRAGMA application_id = 1234", "PRAGMA user_version = 1"],  # another application
    ],
)
def test_other_applications_database_is_refused(db: Path, setup: list[str]) -> None:
    conn = raw(db)
    for statement in setup:
        conn.execute(statement)
    conn.close()
    with pytest.raises(StoreError, match=r"not a runwatch store|no runwatch schema") as caught:
        SqliteStore(db)
    assert caught.value.temporary is False
    assert_one_line_naming(caught.value, db)
    assert "alerts" not in tables(db)


def test_non_database_file_is_refused(db: Path) -> None:
    db.write_bytes(b"this is a config file, not a database\n" * 200)
    with pytest.raises(StoreError) as caught:
        SqliteStore(db)
    assert caught.value.temporary is False
    assert "not a database" in str(caught.value)
    assert_one_line_naming(caught.value, db)
    assert db.read_bytes().startswith(b"this is a config file")


def test_directory_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        SqliteStore(tmp_path)
    assert caught.value.temporary is False
    assert_one_line_naming(caught.value, tmp_path)


# --- locks and threads --------------------------------------------------------------------


def test_locked_database_is_a_temporary_error(db: Path) -> None:
    opened = SqliteStore(db, busy_timeout=0.05)
    opened.commit_tick(source="wandb", alerts=[alert()], cursors={"r1": "1"}, now=T0)
    other = raw(db)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreError) as caught:
            opened.commit_tick(
                source="wandb", alerts=[alert("fp2")], cursors={"r1": "2"}, now=T0 + 1
            )
        assert caught.value.temporary is True
        assert "locked" in str(caught.value)
        assert_one_line_naming(caught.value, db)
        # Readers are not blocked by a writer in WAL mode.
        assert set(opened.load_alerts()) == {"fp1"}
        assert opened.load_cursors("wandb") == {"r1": "1"}
    finally:
        other.execute("ROLLBACK")
        other.close()
    opened.commit_tick(source="wandb", alerts=[alert("fp2")], cursors={"r1": "2"}, now=T0 + 1)
    assert opened.load_cursors("wandb") == {"r1": "2"}
    opened.close()


def test_opening_while_another_process_holds_an_exclusive_lock(db: Path) -> None:
    other = raw(db)
    other.execute("BEGIN EXCLUSIVE")  # e.g. an older runwatch in the middle of a migration
    try:
        with pytest.raises(StoreError) as caught:
            SqliteStore(db, busy_timeout=0.05)
        assert caught.value.temporary is True
        assert_one_line_naming(caught.value, db)
    finally:
        other.execute("ROLLBACK")
        other.close()
    SqliteStore(db, busy_timeout=0.05).close()


def test_waits_for_a_short_lock_within_busy_timeout(store: SqliteStore, db: Path) -> None:
    other = raw(db)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.1, lambda: other.execute("ROLLBACK"))
    release.start()
    try:
        store.commit_tick(source="wandb", alerts=[alert()], cursors={}, now=T0)
    finally:
        release.join()
        other.close()
    assert set(store.load_alerts()) == {"fp1"}


def test_each_thread_has_its_own_connection_and_close_closes_them(store: SqliteStore) -> None:
    connections: list[sqlite3.Connection] = []

    def work() -> None:
        store.ping()
        connections.append(store._conn())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in connections}) == 3
    assert store._conn() not in connections
    store.close()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_two_stores_writing_concurrently(db: Path) -> None:
    one, two = SqliteStore(db), SqliteStore(db)
    errors: list[BaseException] = []

    def work(opened: SqliteStore, name: str) -> None:
        try:
            for i in range(25):
                opened.commit_tick(
                    source=name,
                    alerts=[alert(f"{name}{i}", status=AlertStatus.FIRING)],
                    cursors={"r": str(i)},
                    now=T0 + i,
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, n)) for s, n in ((one, "a"), (two, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(one.alerts(status=AlertStatus.FIRING)) == 50
        assert two.load_cursors("a") == {"r": "24"}
    finally:
        one.close()
        two.close()


# --- open_store ---------------------------------------------------------------------------


def test_open_store_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opened = open_store("sqlite:///state/runwatch.db")
    try:
        assert isinstance(opened, SqliteStore)
        assert opened.path == str(tmp_path / "state" / "runwatch.db")
    finally:
        opened.close()


def test_open_store_absolute_path_and_options(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    opened = open_store(f"sqlite:///{path}?busy_timeout=0.5")  # path starts with "/": 4 slashes
    try:
        assert isinstance(opened, SqliteStore)
        assert opened.path == str(path)
        assert opened._conn().execute("PRAGMA busy_timeout").fetchone()[0] == 500
    finally:
        opened.close()


def test_open_store_reports_a_bad_file(db: Path) -> None:
    db.write_text("garbage " * 100)
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{db}")
    assert_one_line_naming(caught.value, db)


def test_one_writer_at_a_time(tmp_path):
    from runwatch.store.base import WriterBusy

    path = tmp_path / "state.db"
    first, second = SqliteStore(path), SqliteStore(path)
    try:
        first.claim_writer("runwatch run, pid 4242 on host-a")
        first.claim_writer("runwatch run, pid 4242 on host-a")  # again: harmless
        with pytest.raises(WriterBusy) as busy:
            second.claim_writer("runwatch check, pid 1 on host-b")
        assert str(busy.value) == f"store {path}: held by runwatch run, pid 4242 on host-a"
        assert not busy.value.temporary
        second.load_alerts()  # reading is not writing: still allowed
        first.close()  # the lock goes with the holder
        second.claim_writer("runwatch check, pid 1 on host-b")
        third = SqliteStore(path)
        with pytest.raises(WriterBusy, match="held by runwatch check, pid 1 on host-b"):
            third.claim_writer("x")
        third.close()
    finally:
        first.close()
        second.close()


def test_where_an_alert_began_and_its_newest_value_are_kept(tmp_path):
    import math

    store = SqliteStore(tmp_path / "state.db")
    try:
        kept = alert(status=AlertStatus.FIRING, since_step=35, first_value=12.5,
                     latest_value=float("inf"), latest_step=44, resolution="")
        nan = alert("fp2", first_value=float("nan"))
        store.commit_tick(source="s", alerts=[kept, nan], cursors={}, now=T0)
        loaded = store.load_alerts()
        assert loaded["fp1"] == kept
        assert math.isnan(loaded["fp2"].first_value)  # not NULL: REAL columns lose NaN
    finally:
        store.close()


def test_the_writer_keeps_its_alerts_and_reads_no_row_twice(db: Path) -> None:
    """While it holds the writer lock the store answers load_alerts from what it read or
    wrote (nobody else writes alerts): an idle tick decodes no alert row. What it answers
    is what a fresh reader of the file reads."""
    writer = SqliteStore(db)
    writer.claim_writer("runwatch run, pid 1 on test")
    try:
        writer.commit_tick(source="s", alerts=[alert("a", memory=["t", (1.0, 2.0)])],
                           cursors={}, now=1.0)
        assert writer.load_alerts(["a", "b"]).keys() == {"a"}
        with raw(db) as conn:  # a row the writer never reads again: it answers from memory
            conn.execute("UPDATE alerts SET summary = 'changed behind its back'")
        assert writer.load_alerts(["a"])["a"].summary != "changed behind its back"
        writer.commit_tick(source="s", alerts=[alert("a", summary="fired"), alert("b")],
                           cursors={}, now=2.0)
        reader = SqliteStore(db)
        try:
            assert writer.load_alerts(["a", "b"]) == reader.load_alerts(["a", "b"])
            assert writer.load_alerts(["a"])["a"].summary == "fired"
            # Collected rows are forgotten with them.
            writer.collect_garbage(10**10, resolved_retention=0, cursor_retention=0)
            assert writer.load_alerts(["a", "b"]) == reader.load_alerts(["a", "b"])
        finally:
            reader.close()
    finally:
        writer.close()
