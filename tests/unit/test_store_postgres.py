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
from runwatch.store.base import (
    LeaseLost,
    Matcher,
    StoreError,
    WriterBusy,
    open_store,
    parse_store_url,
)

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


# --- the writer lease and the fence -----------------------------------------------------


@pytest.fixture
def pair(schema):
    """Two replicas' stores on one schema."""
    a, b = open_store(schema.url), open_store(schema.url)
    yield a, b
    a.close()
    b.close()


def test_a_standby_takes_the_lease_once_it_ran_out_and_the_old_writer_writes_nothing(pair):
    from test_store_contract import alert, commit

    a, b = pair
    held = a.claim_writer("host-a:1", now=T0, ttl=30)
    assert (held.mine, held.epoch, held.expires_at) == (True, 1, T0 + 30)
    commit(a, alert("x"), cursors={"r1": "1"})
    seen = b.claim_writer("host-b:2", now=T0 + 29, ttl=30, standby=True)
    assert (seen.mine, seen.holder, seen.epoch) == (False, "host-a:1", 1)
    with pytest.raises(WriterBusy, match="held by host-a:1"):
        b.claim_writer("host-b:2", now=T0 + 29, ttl=30)

    taken = b.claim_writer("host-b:2", now=T0 + 31, ttl=30, standby=True)
    assert (taken.mine, taken.epoch) == (True, 2)
    assert b.load_cursors("wandb") == {"r1": "1"}  # it goes on from what was stored
    # The old writer, paused meanwhile, wakes: each of its writes is refused, whole.
    with pytest.raises(LeaseLost, match="host-b:2 holds it at epoch 2") as lost:
        commit(a, alert("y"), cursors={"r1": "2"}, now=T0 + 32)
    assert lost.value.temporary is False and "\n" not in str(lost.value)
    for write in (lambda: a.enqueue([entry("m1")]),
                  lambda: a.claim_outbox(T0 + 32, claimant="a", lease=60),
                  lambda: a.save_status("wandb", {"ok": True}, T0 + 32),
                  lambda: a.collect_garbage(T0 + 32, resolved_retention=1, cursor_retention=1)):
        with pytest.raises(LeaseLost):
            write()
    assert set(b.load_alerts()) == {"x"} and b.load_cursors("wandb") == {"r1": "1"}
    assert not b.outbox()
    again = a.claim_writer("host-a:1", now=T0 + 40, ttl=30, standby=True)
    assert (again.mine, again.holder) == (False, "host-b:2")  # it stands by now
    assert [(le.holder, le.epoch, le.mine) for le in b.leases()] == [("host-b:2", 2, True)]
    assert [(le.holder, le.mine) for le in a.leases()] == [("host-b:2", False)]


def test_a_lease_not_renewed_in_time_by_its_own_clock_stops_the_writer_until_renewed(
        pair, monkeypatch):
    from test_store_contract import alert, commit

    from runwatch.store import sql

    clock = [1000.0]  # the lease clock (CLOCK_BOOTTIME, which freezegun does not move)
    monkeypatch.setattr(sql, "lease_clock", lambda: clock[0])
    a, _ = pair
    a.claim_writer("host-a:1", now=T0, ttl=30)
    commit(a, alert("x"))
    a.check_writer()
    clock[0] += 20  # two heartbeats missed: too little lease left to start a send
    with pytest.raises(LeaseLost, match="not renewed in time"):
        a.check_writer()
    commit(a, alert("x2"))  # (a write, in one transaction, may still go in)
    clock[0] += 10  # no renewal came through (a database that does not answer, a pause)
    with pytest.raises(LeaseLost, match="not renewed in time"):
        commit(a, alert("y"), now=T0 + 30)
    renewed = a.claim_writer("host-a:1", now=T0 + 31, ttl=30)
    assert renewed.epoch == 1  # nobody took it: the same epoch, and what it kept
    commit(a, alert("y"), now=T0 + 31)
    assert set(a.load_alerts()) == {"x", "x2", "y"}


def test_a_heartbeat_only_renews_a_new_epoch_is_taken_by_a_job(pair):
    """A job that read under epoch 1 must never commit under an epoch 3 its own heartbeat
    took after another replica's epoch 2 came and went."""
    from test_store_contract import alert, commit

    a, b = pair
    a.claim_writer("host-a:1", now=T0, ttl=30)
    b.claim_writer("host-b:2", now=T0 + 31, ttl=30)
    b.close()  # lets the lease go
    beat = a.claim_writer("host-a:1", now=T0 + 32, ttl=30, standby=True, take=False)
    assert (beat.mine, beat.epoch) == (False, 2)
    with pytest.raises(LeaseLost):  # the job that read under epoch 1
        commit(a, alert("stale"), now=T0 + 33)
    assert a.claim_writer("host-a:1", now=T0 + 34, ttl=30).epoch == 3  # the next job's


def test_a_send_is_checked_against_the_lease_right_before_it_leaves(pair):
    a, b = pair
    a.claim_writer("host-a:1", now=T0, ttl=30)
    a.check_writer()
    b.claim_writer("host-b:2", now=T0 + 31, ttl=30)
    with pytest.raises(LeaseLost, match="host-b:2 holds it"):
        a.check_writer()
    b.check_writer()


def test_a_takeover_waits_for_the_old_writer_s_write_in_flight(schema):
    """The fence holds the lease row until the write commits: a takeover cannot slip in
    between the check and the commit."""
    a, b = open_store(schema.url), open_store(schema.url + "&busy_timeout=0.3")
    try:
        a.claim_writer("host-a:1", now=T0, ttl=30)
        with a._transaction("a write in flight", fenced=True):
            with pytest.raises(StoreError) as caught:
                b.claim_writer("host-b:2", now=T0 + 60, ttl=30, standby=True)
            assert caught.value.temporary is True
        assert b.claim_writer("host-b:2", now=T0 + 60, ttl=30).epoch == 2
    finally:
        a.close()
        b.close()


def test_claims_of_an_older_epoch_are_void_others_are_not(pair, schema):
    a, b = pair
    a.claim_writer("host-a:1", now=T0, ttl=30)
    a.enqueue([entry("m1", group="g1"), entry("m2", group="g2")])
    [m1] = a.claim_outbox(T0, claimant="a", lease=600, limit=1)
    plain = open_store(schema.url)  # `runwatch digest --send`: no lease, no epoch
    try:
        [m2] = plain.claim_outbox(T0, claimant="cli", lease=600, limit=1)
        b.claim_writer("host-b:2", now=T0 + 31, ttl=30)
        taken = b.claim_outbox(T0 + 31, claimant="b", lease=600)
        assert [(e.id, e.uncertain, e.attempts) for e in taken] == [("m1", True, 2)]
        with pytest.raises(LeaseLost):  # the old leader's delivery cannot be recorded
            a.complete_outbox("m1", claimant="a", refs={}, refs_expire_at=T0 + 99)
        assert plain.complete_outbox(m2.id, claimant="cli", refs={}, refs_expire_at=T0 + 99)
        assert b.complete_outbox("m1", claimant="b", refs={}, refs_expire_at=T0 + 99)
    finally:
        plain.close()
    assert m1.id == "m1" and not b.outbox()


def test_closing_lets_the_lease_go_and_a_standby_takes_it_at_once(pair):
    a, b = pair
    a.claim_writer("host-a:1", now=T0, ttl=30)
    a.close()
    assert b.claim_writer("host-b:2", now=T0 + 1, ttl=30).epoch == 2


def test_the_same_replica_name_in_a_new_process_waits_for_its_old_lease(pair):
    """``RUNWATCH_REPLICA`` reused by a restarted pod: the old process may still be alive
    (a partition), so the name alone does not hand the lease over."""
    a, b = pair
    a.claim_writer("pod-0", now=T0, ttl=30)
    assert b.claim_writer("pod-0", now=T0 + 5, ttl=30, standby=True).mine is False
    assert b.claim_writer("pod-0", now=T0 + 30, ttl=30).epoch == 2


def test_a_writer_s_lost_connection_is_opened_again_and_still_fenced(schema):
    """A killed backend (a server restart) while idle: the next call connects again and
    goes on; the lease, not the connection, says who writes."""
    from test_store_contract import alert, commit

    a = open_store(schema.url)
    a.claim_writer("host-a:1", now=T0, ttl=30)
    admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
          " WHERE datname = current_database() AND pid <> pg_backend_pid()"
          " AND application_name = 'runwatch' AND state = 'idle'")
    commit(a, alert("x"))
    assert set(a.load_alerts()) == {"x"}
    b = open_store(schema.url)
    try:
        b.claim_writer("host-b:2", now=T0 + 31, ttl=30)
        with pytest.raises(LeaseLost):
            commit(a, alert("y"), now=T0 + 32)
    finally:
        a.close()
        b.close()


def test_text_with_a_nul_character_fails_once_for_now_then_is_written_with_a_mark(schema):
    """PostgreSQL's text cannot hold NUL (SQLite's can): a run named so by a corrupt file
    must not fail every tick. The first write fails as temporary, nothing of it stored;
    from then on the character is written as U+FFFD."""
    from dataclasses import replace

    from test_store_contract import alert, commit

    store = open_store(schema.url)
    try:
        hostile = alert("x")
        hostile = replace(hostile, run=replace(hostile.run, name="bad\x00name"),
                          summary="loss\x00 is nan")
        with pytest.raises(StoreError, match="NUL character") as caught:
            commit(store, hostile, cursors={"r1": "1"})
        assert caught.value.temporary is True and "\n" not in str(caught.value)
        assert store.load_alerts() == {} and store.load_cursors("wandb") == {}
        commit(store, hostile, cursors={"r1": "1"})
        stored = store.load_alerts()["x"]
        assert (stored.run.name, stored.summary) == ("bad\ufffdname", "loss\ufffd is nan")
        store.add_silence(matchers=[Matcher.parse("run=a\x00b")], ends_at=T0 + 60, now=T0)
        # (JSON columns spell it \u0000: kept as written)
        assert [str(m) for s in store.silences(T0) for m in s.matchers] == ["run=a\x00b"]
    finally:
        store.close()


def test_a_server_that_went_away_is_tried_again_with_backoff(schema):
    """Connections refused: each call fails at once, temporary, saying when the next try is;
    a try is made 1 s, then 2 s, 4 s … (at most 8 s) after the last failed one, and the
    store goes on as soon as one succeeds."""
    from urllib.parse import urlsplit

    from freezegun import freeze_time

    from fixtures.tcpproxy import TcpProxy
    from runwatch.store.postgres import RECONNECT_MAX

    where = urlsplit(PG_URL)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 5432)
    url = schema.url.replace(where.netloc, f"{where.username or 'postgres'}@127.0.0.1:"
                             f"{proxy.port}", 1)
    store = open_store(url)
    try:
        with freeze_time("2026-12-03 12:00:00") as clock:
            store.ping()
            proxy.refuse()
            failures = []
            for _ in range(6):
                with pytest.raises(StoreError) as caught:
                    store.ping()
                assert caught.value.temporary and "\n" not in str(caught.value)
                failures.append(str(caught.value))
                with pytest.raises(StoreError, match=r"connecting again in [1-8]s"):
                    store.ping()  # within the backoff: no new try
                clock.tick(RECONNECT_MAX)
            assert any("connecting again" not in f for f in failures)
            proxy.allow()
            clock.tick(RECONNECT_MAX)
            store.ping()  # back
            assert store.load_alerts() == {}
    finally:
        store.close()
        proxy.close()
