"""What only the PostgreSQL store does (the contract suite runs it like every backend):
its URL, schema versions, one writer at a time, temporary failures, and claims and
migrations racing across connections — against the real server (``RUNWATCH_TEST_PG_URL``),
each test in a schema of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import T0, entry

from pgtest import PG_URL, Schema
from runwatch.store.base import StoreError, WriterBusy, open_store, parse_store_url

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def schema(tmp_path: Path) -> Iterator[Schema]:
    made = Schema(tmp_path)
    yield made
    made.drop()


def admin(sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.mark.parametrize(("url", "dsn", "schema", "password_file"), [
    ("postgresql://u:pw@db:5433/rw", "postgresql://u:pw@db:5433/rw", None, None),
    ("postgres://db/rw?sslmode=require&schema=team_a&password_file=~/pw",
     "postgresql://db/rw?sslmode=require", "team_a", "~/pw"),
])
def test_the_url_names_libpq_s_part_and_runwatch_s_own(url, dsn, schema, password_file):
    where = parse_store_url(url)
    assert (where.scheme, where.dsn, where.schema, where.password_file) == (
        "postgresql", dsn, schema, password_file)


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://db/rw?schema=a;drop", "schema must be a plain SQL name"),
    ("postgresql://db/rw?busy_timeout=-1", "busy_timeout must be a number of seconds"),
    ("postgresql://db/rw#x", "takes no #fragment"),
])
def test_a_bad_url_is_one_line_that_never_quotes_it(url, message):
    with pytest.raises(StoreError, match=message) as caught:
        open_store(url)
    assert "\n" not in str(caught.value)


def test_a_password_comes_from_its_file_and_never_shows(tmp_path, schema):
    """(The test server trusts every connection: what is checked is that the file is read,
    that an unreadable one is one line naming it, and that no password is ever shown.)"""
    (tmp_path / "pw").write_text("Secret-pw-1\n")
    store = open_store(f"{schema.url}&password_file={tmp_path / 'pw'}")
    store.close()
    with pytest.raises(StoreError, match=r"cannot read password_file .*nope"):
        open_store(f"{schema.url}&password_file={tmp_path / 'nope'}")
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://u:Secret-pw-1x@127.0.0.1:1/test")
    assert "Secret-pw-1x" not in str(caught.value) and caught.value.temporary


def test_a_schema_newer_than_this_code_is_refused_untouched(schema):
    open_store(schema.url).close()
    admin(f"UPDATE {schema.name}.runwatch_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99 is newer") as caught:
        open_store(schema.url)
    assert caught.value.temporary is False
    assert admin(f"SELECT version FROM {schema.name}.runwatch_schema") == [(99,)]


def test_a_schema_of_other_tables_is_refused(schema):
    admin(f"CREATE TABLE {schema.name}.theirs (x int)")
    with pytest.raises(StoreError, match="tables but no runwatch schema version"):
        open_store(schema.url)


def test_replicas_opening_a_new_schema_at_once_migrate_it_once(schema):
    opened, failed = [], []

    def open_one() -> None:
        try:
            opened.append(open_store(schema.url))
        except StoreError as exc:  # pragma: no cover - the failure the lock prevents
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert not failed and len(opened) == 4


def test_one_writer_at_a_time_and_the_busy_one_is_named(schema):
    first = open_store(schema.url)
    second = open_store(schema.url)
    try:
        first.claim_writer("runwatch run, pid 4242 on host-a")
        with pytest.raises(WriterBusy, match="pid 4242 on host-a"):
            second.claim_writer("runwatch check")
        first.close()  # the lock goes with its connection
        second.claim_writer("runwatch check")
    finally:
        first.close()
        second.close()


def test_a_server_that_does_not_answer_is_temporary_and_one_line():
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://postgres@127.0.0.1:1/test")
    assert caught.value.temporary is True
    assert "\n" not in str(caught.value)


def test_a_row_locked_elsewhere_fails_for_now_after_busy_timeout(schema):
    store = open_store(schema.url + "&busy_timeout=0.2")
    try:
        store.enqueue([entry("m1")])
        with psycopg.connect(PG_URL, autocommit=True) as other, other.transaction():
            other.execute(f"SELECT 1 FROM {schema.name}.outbox FOR UPDATE")
            with pytest.raises(StoreError) as caught:
                store.fail_outbox("m1", claimant=None, error="x", now=T0)
        assert caught.value.temporary is True
        assert store.fail_outbox("m1", claimant=None, error="x", now=T0)  # free again
    finally:
        store.close()


def test_claims_racing_across_connections_take_each_entry_once(schema):
    stores = [open_store(schema.url) for _ in range(4)]
    try:
        stores[0].enqueue([entry(f"m{i:03d}", group=f"g{i}") for i in range(200)])
        taken: list[str] = []
        lock = threading.Lock()

        def claim(store) -> None:
            while got := store.claim_outbox(T0, claimant=f"c{id(store)}", lease=60, limit=7):
                with lock:
                    taken.extend(e.id for e in got)

        threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(taken) == [f"m{i:03d}" for i in range(200)]
    finally:
        for store in stores:
            store.close()


def _kill(holder: str) -> None:
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
          holder)


def test_a_writer_whose_lock_connection_died_takes_it_again_or_stops(schema):
    """The lock lives with its connection (a server restart, a killed backend): the next
    commit notices, takes it again and goes on — or, when another has taken it meanwhile,
    fails naming it, and writes nothing."""
    from test_store_contract import alert, commit

    writer = open_store(schema.url)
    other = open_store(schema.url)
    try:
        writer.claim_writer("runwatch run, pid 1 on host-a")
        commit(writer, alert("a"), cursors={"r1": "1"})
        _kill("runwatch run, pid 1 on host-a")
        commit(writer, alert("b"), cursors={"r1": "2"}, now=T0 + 60)
        assert set(other.load_alerts()) == {"a", "b"}
        with pytest.raises(WriterBusy):  # it holds the lock again
            other.claim_writer("runwatch run, pid 2 on host-b")

        _kill("runwatch run, pid 1 on host-a")
        other.claim_writer("runwatch run, pid 2 on host-b")
        with pytest.raises(WriterBusy, match="pid 2 on host-b"):
            commit(writer, alert("c"), cursors={"r1": "3"}, now=T0 + 120)
        assert set(other.load_alerts()) == {"a", "b"}
        assert other.load_cursors("wandb") == {"r1": "2"}
    finally:
        writer.close()
        other.close()
