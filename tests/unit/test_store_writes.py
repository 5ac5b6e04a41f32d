"""What the store's one writer writes: only what changed, and always exactly what a whole
write would leave — so a restart reads back the very states an uninterrupted daemon keeps,
and evaluates exactly as it would have.

Run against every backend (the memory store writes whole rows: the reference); the SQLite
writer keeps the states it stored and updates just the columns that moved.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest

from builders import T0, canon, rule, series, snapshot
from pgtest import Schema
from runwatch.engine import evaluate
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertState, AlertStatus, RunRef, RunState, Severity
from runwatch.sources.base import Poll
from runwatch.store import codec
from runwatch.store.base import Store, StoreError, open_store
from runwatch.store.memory import MemoryStore
from runwatch.store.sqlite import SqliteStore
from runwatch.tick import run_tick


@dataclass(frozen=True, kw_only=True)
class Backend:
    open: Callable[[str], Store]  # the named store, its writer lock claimed
    reopen: Callable[[Store], Store]  # what a restart reads: the same data, nothing kept
    drop: Callable[[], None] = lambda: None  # what the test leaves behind, gone


def _sqlite(tmp: Path) -> Backend:
    def opened(name: str = "state") -> Store:
        store = SqliteStore(tmp / f"{name}.db")
        store.claim_writer("runwatch test")
        return store

    def reopen(store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        store.close()
        return opened(Path(store.path).stem)

    return Backend(open=opened, reopen=reopen)


def _memory(tmp: Path) -> Backend:
    def opened(name: str = "state") -> Store:
        store = MemoryStore()
        store.claim_writer("runwatch test")
        return store

    return Backend(open=opened, reopen=lambda store: store)  # its data lives in the object


def _postgres(tmp: Path) -> Backend:
    schemas: dict[str, Schema] = {}
    names: dict[int, str] = {}

    def opened(name: str = "state") -> Store:
        if name not in schemas:
            schemas[name] = Schema(tmp, suffix=f"_{name}")
        store = open_store(schemas[name].url)
        store.claim_writer("runwatch test")
        names[id(store)] = name
        return store

    def reopen(store: Store) -> Store:
        store.close()
        return opened(names[id(store)])

    def drop() -> None:
        for schema in schemas.values():
            schema.drop()

    return Backend(open=opened, reopen=reopen, drop=drop)


BACKENDS = {"memory": _memory, "sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.drop()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open("state")
    yield opened
    opened.close()


def alert(fp: str = "fp1", **changes: Any) -> AlertState:
    fields_: dict[str, Any] = {
        "fingerprint": fp, "rule": "progress", "severity": Severity.WARNING,
        "run": RunRef(source="local", id="r1", name="run-1", project="p", entity="e",
                      location="/runs/run-r1"),
        "first_seen": T0, "last_seen": T0, "metric": "loss", "value": 1.5, "step": 10,
        "latest_value": 1.5, "latest_step": 10, "run_state": RunState.RUNNING,
        "labels": {"team": "a"}, "memory": ["tag", [T0 + i / 10 for i in range(20)]],
    }
    return AlertState(**(fields_ | changes))


def commit(store: Store, *alerts: AlertState, now: float, cursors: dict[str, str] | None = None
           ) -> None:
    store.commit_tick(source="s", alerts=alerts, cursors=cursors or {}, now=now)


# --- the writer's narrow writes, against the file ------------------------------------------


def rows(path: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        columns = ", ".join(codec.ALERT_COLUMNS)
        return {row[0]: row for row in conn.execute(f"SELECT {columns} FROM alerts")}
    finally:
        conn.close()


def test_every_alert_field_is_either_steady_moving_or_memory() -> None:
    moving = set(codec.MOVING_COLUMNS) - {"updated_at"}
    steady = set(codec.STEADY_FIELDS)
    assert not steady & moving
    assert steady | moving | {"memory"} == {f.name for f in fields(AlertState)}


def test_a_memory_change_writes_only_the_moving_columns(tmp_path: Path) -> None:
    """Proven by a change made behind the writer's back: a moving write leaves the steady
    columns alone, a status change writes the whole row."""
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=0)  # narrow writes, none held
    writer.claim_writer("runwatch test")
    try:
        first = alert()
        commit(writer, first, now=T0)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE alerts SET resolution = 'behind its back'")
        moved = replace(first, memory=["tag", [1.0] * 20], value=2.5, step=11, last_seen=T0 + 60)
        commit(writer, moved, now=T0 + 60)
        (row,) = rows(path).values()
        got = dict(zip(codec.ALERT_COLUMNS, row, strict=True))
        assert got["resolution"] == "behind its back"  # a steady column: not written
        assert (got["value"], got["step"], got["last_seen"], got["updated_at"]) == (
            "2.5", 11, T0 + 60, T0 + 60)
        assert codec.decode_memory(got["memory"]) == ["tag", [1.0] * 20]
        fired = replace(moved, status=AlertStatus.FIRING, active_since=T0 + 120,
                        fired_at=T0 + 120, summary="stalled")
        commit(writer, fired, now=T0 + 120)
        (row,) = rows(path).values()
        assert row == codec.alert_to_row(fired, T0 + 120)  # the whole row, as given
    finally:
        writer.close()


def test_a_row_deleted_behind_the_writer_s_back_is_written_whole_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=0)  # narrow writes, none held
    writer.claim_writer("runwatch test")
    try:
        commit(writer, alert("a"), alert("b"), now=T0)
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM alerts WHERE fingerprint = 'a'")
        a, b = replace(alert("a"), step=11), replace(alert("b"), step=11)
        commit(writer, a, b, now=T0 + 60)
        assert rows(path) == {"a": codec.alert_to_row(a, T0 + 60),
                              "b": codec.alert_to_row(b, T0 + 60)}
    finally:
        writer.close()


def test_the_same_alert_twice_in_one_commit_the_last_wins(store: Store) -> None:
    commit(store, alert(), now=T0)
    fired = replace(alert(), status=AlertStatus.FIRING, active_since=T0, fired_at=T0)
    last = replace(fired, step=12, memory=None)
    commit(store, fired, last, now=T0 + 60)
    assert canon(store.load_alerts(["fp1"])["fp1"]) == canon(last)
    commit(store, replace(last, step=13), replace(alert(), step=14), now=T0 + 120)
    assert canon(store.load_alerts(["fp1"])["fp1"]) == canon(replace(alert(), step=14))


# Each step: what the writer is given to commit, starting from what it last stored.
STEPS: list[Callable[[AlertState], AlertState]] = [
    lambda a: replace(a, memory=["tag", [*a.memory[1][1:], a.memory[1][-1] + 1.0]], step=11,
                      value=1.25, latest_value=1.25, latest_step=11, last_seen=T0 + 60),
    lambda a: replace(a, value=math.nan, latest_value=-0.0, step=12, last_seen=T0 + 120),
    lambda a: replace(a, memory=["tag", [math.inf, -math.inf, math.nan, -0.0, 5e-324, 1e308,
                                         0.1 + 0.2, -1.5]]),
    lambda a: replace(a, memory=["tag", (1, 2.0, None, {"k": [1.0] * 9})], metric=None),
    lambda a: replace(a, summary="loss 3 > 2 at step 14", run_state=RunState.FINISHED),
    lambda a: replace(a, status=AlertStatus.FIRING, active_since=T0 + 200, since_step=14,
                      fired_at=T0 + 200, first_value=3.0),
    lambda a: replace(a, labels={"team": "b"}, memory=None),
    lambda a: replace(a, run=replace(a.run, name="renamed")),
    lambda a: replace(a, severity=Severity.CRITICAL, memory=[]),
    lambda a: replace(a, status=AlertStatus.RESOLVED, resolved_at=T0 + 400,
                      resolution="condition cleared", active_since=None, since_step=None),
    lambda a: replace(a, last_seen=T0 + 500),
]


def test_the_file_holds_exactly_what_whole_row_writes_leave(tmp_path: Path) -> None:
    """The writer (narrow writes) and a plain handle (whole rows) are given the same
    commits: their files hold the same rows, column for column, after every one; and the
    writer answers what a fresh reader of its file reads."""
    writer = SqliteStore(tmp_path / "writer.db", hold_for=0)  # none held
    writer.claim_writer("runwatch test")
    plain = SqliteStore(tmp_path / "plain.db")
    try:
        states = [alert("a"), alert("b", memory=None, value=None)]
        for n, step in enumerate([lambda a: a, *STEPS]):
            states = [step(states[0]), states[1] if n % 2 else step(states[1])]
            now = T0 + 60 * n
            commit(writer, *states, now=now)
            commit(plain, *states, now=now)
            assert rows(tmp_path / "writer.db") == rows(tmp_path / "plain.db"), n
            reader = SqliteStore(tmp_path / "writer.db")
            try:
                assert canon(writer.load_alerts(["a", "b"])) == canon(
                    reader.load_alerts(["a", "b"])), n
            finally:
                reader.close()
    finally:
        writer.close()
        plain.close()


def test_a_memory_only_change_survives_a_restart_exactly(backend: Backend) -> None:
    store = backend.open("state")
    try:
        first = alert()
        commit(store, first, now=T0, cursors={"run": "c1"})
        window = [T0 + i * 0.01 for i in range(50)] + [math.nan, -0.0]
        moved = replace(first, memory=["tag", window], step=99, last_seen=T0 + 60)
        commit(store, moved, now=T0 + 60, cursors={"run": "c2"})
        store = backend.reopen(store)
        assert canon(store.load_alerts(["fp1"])["fp1"]) == canon(moved)
        assert store.load_cursors("s") == {"run": "c2"}
    finally:
        store.close()


def test_a_narrow_write_that_cannot_be_stored_writes_nothing(store: Store) -> None:
    commit(store, alert(), alert("fp2"), now=T0, cursors={"run": "c1"})
    before = store.load_alerts(["fp1", "fp2"])
    with pytest.raises(StoreError, match="last_seen is NaN"):
        commit(store, replace(alert(), step=11), replace(alert("fp2"), last_seen=math.nan),
               now=T0 + 60, cursors={"run": "c2"})
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        commit(store, replace(alert(), memory=["tag", [object()]]), now=T0 + 60,
               cursors={"run": "c2"})
    assert canon(store.load_alerts(["fp1", "fp2"])) == canon(before)
    assert store.load_cursors("s") == {"run": "c1"}


def test_the_writer_keeps_its_cursors_and_forgets_collected_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=0)  # narrow writes, none held
    writer.claim_writer("runwatch test")
    try:
        commit(writer, now=T0, cursors={"a": "1", "b": "1"})
        assert writer.load_cursors("s") == {"a": "1", "b": "1"}
        commit(writer, now=T0 + 60, cursors={"b": "2"})
        assert writer.load_cursors("s") == {"a": "1", "b": "2"}
        writer.load_cursors("s")["a"] = "changed by the caller"  # a copy
        assert writer.load_cursors("s") == {"a": "1", "b": "2"}
        writer.collect_garbage(T0 + 90, resolved_retention=0, cursor_retention=60)
        assert writer.load_cursors("s") == {"b": "2"}
        reader = SqliteStore(path)
        try:
            assert reader.load_cursors("s") == {"b": "2"}
        finally:
            reader.close()
    finally:
        writer.close()


# --- a restart evaluates exactly as an uninterrupted daemon -------------------------------


class Feed:
    """A source that hands out one prepared poll per tick."""

    name = "feed"

    def __init__(self, polls: list[Poll]):
        self.polls = list(polls)

    def poll(self, cursors: Any, wanted: Any, now: float, **_: Any) -> Poll:
        return self.polls.pop(0)


RULES = [
    rule(name="progress", kind="progress", older_than="5m", window=20),
    rule(name="spike", kind="spike", metric="loss", window=30, k=4.0),
    rule(name="plateau", kind="plateau", metric="loss", patience="40 steps"),
    rule(name="mean-high", kind="threshold", metric="loss", op=">", value=3, mode="mean",
         window=12, **{"for": "20 steps"}),
    rule(name="heartbeat", kind="heartbeat", older_than="10m"),
]


def ticks() -> list[tuple[float, Poll]]:
    """Twelve ticks of one run: steady, a spike, a plateau, a stall, recovery."""
    out, step = [], 0
    for tick in range(12):
        now = T0 + 600 * tick
        n = 0 if tick in (7, 8) else 15  # two ticks without rows: a stall
        values = [2.0 + 0.01 * ((step + i) % 7) for i in range(n)]
        if tick == 3:
            values[5] = 40.0  # a spike
        if tick >= 9:
            values = [3.5 + 0.001 * i for i in range(n)]  # high, flat: mean above 3, plateau
        loss = series(values, start_step=step, start_time=now - 300, interval=7.5)
        step += n
        run = snapshot({"loss": loss, "_timestamp": replace(loss, values=loss.times)},
                       heartbeat=now - 30)
        out.append((now, Poll(snapshots=(run,), cursors={"run": f"c{step}"})))
    return out


def test_a_restart_before_every_tick_evaluates_exactly_as_an_uninterrupted_daemon(
        backend: Backend) -> None:
    """The same ticks through one writer, and through a writer reopened before every
    tick (a restart): the same transitions, and the same states stored."""
    def play(restart: bool) -> tuple[list[Any], Any]:
        polls = ticks()
        feed = Feed([poll for _, poll in polls])
        store = backend.open("restarted" if restart else "continuous")
        said = []
        try:
            for now, _ in polls:
                if restart:
                    store = backend.reopen(store)
                report = run_tick(sources=[feed], rules=RULES, aliases=DEFAULT_ALIASES,
                                  store=store, now=now)
                assert not report.errors
                said.append([(t.alert.rule, t.previous, t.status, canon(t.alert))
                             for t in report.transitions])
            return said, canon(sorted(store.alerts(), key=lambda a: a.fingerprint))
        finally:
            store.close()

    continuous, kept = play(restart=False)
    restarted, kept_after_restarts = play(restart=True)
    assert restarted == continuous
    assert kept_after_restarts == kept
    fired = {(rule_, status) for tick in continuous for rule_, _, status, _ in tick}
    assert {("spike", AlertStatus.FIRING), ("progress", AlertStatus.FIRING)} <= fired


def test_states_read_back_from_the_store_evaluate_as_the_engine_s_own(
        backend: Backend) -> None:
    """The engine's replay, with every tick's states stored and read back afresh (packed
    memory included) instead of handed on: the same states and transitions."""
    store = backend.open("state")
    previous: dict[str, AlertState] = {}
    try:
        for now, poll in ticks():
            (run,) = poll.snapshots
            kept = evaluate(RULES, run, previous, now, DEFAULT_ALIASES)
            store = backend.reopen(store)
            stored = evaluate(RULES, run, store.load_alerts(previous), now, DEFAULT_ALIASES)
            assert canon(stored) == canon(kept)
            previous |= {a.fingerprint: a for a in kept.alerts}
            commit(store, *stored.alerts, now=now)
    finally:
        store.close()


# --- quiet runs held back (store/held.py) ---------------------------------------------------


def _file(path: Path) -> tuple[dict[str, tuple[Any, ...]], dict[str, str]]:
    """What a fresh reader finds in the file: alert rows and cursors."""
    conn = sqlite3.connect(path)
    try:
        cursors = dict(conn.execute("SELECT run_key, value FROM cursors"))
    finally:
        conn.close()
    return rows(path), cursors


def _run(name: str) -> RunRef:
    return RunRef(source="local", id=name, name=name, project="p", entity="e",
                  location=f"/runs/{name}")


def _moved(a: AlertState, n: int) -> AlertState:
    """A quiet alert after tick ``n``: new values and memory, nothing anyone is told."""
    return replace(a, memory=["tag", [T0 + n + i / 10 for i in range(20)]], step=10 + n,
                   value=1.5 + n, latest_value=1.5 + n, latest_step=10 + n,
                   last_seen=T0 + 60 * n)


def test_a_quiet_run_is_held_whole_and_written_whole(tmp_path: Path) -> None:
    """A run whose alerts only move is held — alerts and cursor — while the writer answers
    with the newest; a status change on it writes the run whole, its cursor included, and
    a stop writes what is still held."""
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=3600)
    writer.claim_writer("runwatch test")
    a1, a2 = alert("a1", run=_run("a")), alert("a2", run=_run("a"))
    b1 = alert("b1", run=_run("b"))
    try:
        commit(writer, a1, a2, b1, now=T0, cursors={"/runs/a": "a0", "/runs/b": "b0"})
        first = _file(path)  # new alerts: written at once
        assert set(first[0]) == {"a1", "a2", "b1"}
        assert first[1] == {"/runs/a": "a0", "/runs/b": "b0"}
        moved = [_moved(a, 1) for a in (a1, a2, b1)]
        commit(writer, *moved, now=T0 + 60, cursors={"/runs/a": "a1", "/runs/b": "b1"})
        assert _file(path) == first  # both runs held
        assert canon(writer.load_alerts(["a1", "a2", "b1"])) == canon(
            {a.fingerprint: a for a in moved})
        assert writer.load_cursors("s") == {"/runs/a": "a1", "/runs/b": "b1"}
        # Rows only (no alert moved): the cursor of a held run is held with it.
        commit(writer, now=T0 + 90, cursors={"/runs/a": "a2"})
        assert _file(path) == first
        # One alert of run a fires: run a is written whole (a2 as held, cursor a2); b stays.
        fired = replace(_moved(a1, 2), status=AlertStatus.FIRING, active_since=T0 + 120,
                        fired_at=T0 + 120, summary="stalled")
        commit(writer, fired, now=T0 + 120)
        alerts, cursors = _file(path)
        assert alerts["a1"] == codec.alert_to_row(fired, T0 + 120)
        assert alerts["a2"] == codec.alert_to_row(moved[1], T0 + 120)
        assert alerts["b1"] == first[0]["b1"]
        assert cursors == {"/runs/a": "a2", "/runs/b": "b0"}
    finally:
        writer.close()
    alerts, cursors = _file(path)  # the stop wrote run b too
    assert alerts["b1"] == codec.alert_to_row(moved[2], moved[2].last_seen)
    assert cursors == {"/runs/a": "a2", "/runs/b": "b1"}
    reopened = SqliteStore(path)
    try:
        assert canon(reopened.load_alerts(["a1", "a2", "b1"])) == canon(
            {"a1": fired, "a2": moved[1], "b1": moved[2]})
    finally:
        reopened.close()


def test_a_held_run_is_written_between_one_and_two_hold_times_later(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=600)
    writer.claim_writer("runwatch test")
    try:
        runs = [alert(f"r{i}", run=_run(f"r{i}")) for i in range(40)]
        commit(writer, *runs, now=T0)
        written_at: dict[str, float] = {}
        for n in range(1, 23):  # a tick a minute for 22 minutes
            now = T0 + 60 * n
            commit(writer, *[_moved(a, n) for a in runs], now=now)
            for fp, row in _file(path)[0].items():
                updated_at = dict(zip(codec.ALERT_COLUMNS, row, strict=True))["updated_at"]
                if updated_at > T0 and fp not in written_at:
                    written_at[fp] = now
        assert set(written_at) == {a.fingerprint for a in runs}
        # First held at T0 + 60; written at the first tick past 600-1200 s after that.
        assert all(T0 + 660 <= t < T0 + 1260 + 60 for t in written_at.values())
        assert len(set(written_at.values())) > 5  # spread over ticks, not all at once
    finally:
        writer.close()


def test_a_crash_leaves_each_run_as_of_one_tick(tmp_path: Path) -> None:
    """A writer killed with runs held (no stop, no flush): the file holds every run as of
    the last tick it was written — its memory and its cursor from the same tick — so the
    restart reads the held ticks' rows again and judges them from that memory."""
    import multiprocessing
    import os

    path = tmp_path / "state.db"
    a, b = alert("a", run=_run("a")), alert("b", run=_run("b"))

    def writer_then_killed() -> None:
        writer = SqliteStore(path, hold_for=3600)
        writer.claim_writer("runwatch test")
        commit(writer, a, b, now=T0, cursors={"/runs/a": "0", "/runs/b": "0"})
        for n in (1, 2, 3):
            moved_b = _moved(b, n)
            if n >= 2:  # b fires on tick 2: a firing alert is never held
                moved_b = replace(moved_b, status=AlertStatus.FIRING, active_since=T0,
                                  fired_at=T0, summary="fired")
            commit(writer, _moved(a, n), moved_b, now=T0 + 60 * n,
                   cursors={"/runs/a": str(n), "/runs/b": str(n)})
        os._exit(0)  # as SIGKILL: nothing more runs

    child = multiprocessing.get_context("fork").Process(target=writer_then_killed)
    child.start()
    child.join(30)
    assert child.exitcode == 0
    restarted = SqliteStore(path)
    restarted.claim_writer("runwatch test")  # the dead writer's lock went with it
    try:
        stored = restarted.load_alerts(["a", "b"])
        assert canon(stored["a"]) == canon(a)  # held since tick 0: as of tick 0
        assert restarted.load_cursors("s")["/runs/a"] == "0"
        assert stored["b"].status == AlertStatus.FIRING  # a status change is never held
        assert stored["b"].memory == _moved(b, 3).memory  # tick 3: firing, not quiet
        assert restarted.load_cursors("s")["/runs/b"] == "3"
    finally:
        restarted.close()


def test_a_flush_that_fails_keeps_what_it_held(tmp_path: Path) -> None:
    """Garbage collection writes what is held first; when the file is busy that fails, and
    the held run must stay held — a later tick that moves only one of its alerts, then a
    stop, leaves every alert as of the newest tick, not one of them as of an older one."""
    path = tmp_path / "state.db"
    writer = SqliteStore(path, busy_timeout=0.05, hold_for=3600)
    writer.claim_writer("runwatch test")
    a, b = alert("a", run=_run("r")), alert("b", run=_run("r"))
    try:
        commit(writer, a, b, now=T0, cursors={"/runs/r": "c0"})
        commit(writer, _moved(a, 1), _moved(b, 1), now=T0 + 60, cursors={"/runs/r": "c1"})
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                writer.collect_garbage(T0 + 90, resolved_retention=1e9, cursor_retention=1e9)
        finally:
            other.execute("ROLLBACK")
            other.close()
        commit(writer, _moved(a, 2), now=T0 + 120, cursors={"/runs/r": "c2"})
    finally:
        writer.close()
    reopened = SqliteStore(path)
    try:
        assert canon(reopened.load_alerts(["a", "b"])) == canon(
            {"a": _moved(a, 2), "b": _moved(b, 1)})
        assert reopened.load_cursors("s") == {"/runs/r": "c2"}
    finally:
        reopened.close()


def test_a_cursor_key_taken_by_another_run_path_is_not_written_back_older(
        tmp_path: Path) -> None:
    """A run directory's path changes once its run record is read (its location, then
    entity/project/id) under the same cursor key: what was held under the old path is
    written before the new cursor, never after it."""
    path = tmp_path / "state.db"
    writer = SqliteStore(path, hold_for=3600)
    writer.claim_writer("runwatch test")
    early = RunRef(source="local", id="r1", name="r1", location="/runs/r1")  # path = location
    late = _run("r1")  # e/p/r1, same location
    a = alert("a", run=early)
    try:
        commit(writer, a, now=T0, cursors={"/runs/r1": "c0"})
        commit(writer, _moved(a, 1), now=T0 + 60, cursors={"/runs/r1": "c1"})  # held
        commit(writer, alert("b", run=late), now=T0 + 120, cursors={"/runs/r1": "c2"})
        assert _file(path)[1] == {"/runs/r1": "c2"}
        commit(writer, now=T0 + 8000, cursors={})  # anything still held of the old path due
        assert _file(path)[1] == {"/runs/r1": "c2"}
        assert writer.load_cursors("s") == {"/runs/r1": "c2"}
    finally:
        writer.close()
    assert _file(path)[1] == {"/runs/r1": "c2"}
