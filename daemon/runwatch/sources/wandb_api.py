"""The ``wandb`` source: the runs of W&B projects, read incrementally through the public API.

A tick costs one runs query per project (paged) and a few batched history queries for the
runs that logged new rows since their cursor — nothing for runs without new rows, and
never a run's whole history. What a tick could not fetch is not evaluated: a run whose
data did not arrive is not judged stalled on it. A source that gets no answer at all
backs off (the next tick, then every second, fourth … tick, at most ten minutes between
attempts) and, once
that has lasted ``unreachable_after``, says so; the tick turns that into one
``source-unreachable`` alert.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from runwatch.config.sources import WandbSource as WandbSpec
from runwatch.model import RunSnapshot
from runwatch.sources.base import Poll
from runwatch.sources.wandb_client import WandbClient, WandbError
from runwatch.sources.wandb_graphql import (
    PROJECT_QUERY,
    PROJECTS_QUERY,
    RUNS_QUERY,
    VIEWER_QUERY,
    HistoryRead,
    RunNode,
    history_query,
    history_rows,
    history_variables,
    read_node,
    runs_filter,
    series_from_rows,
)

STATE_KEY = "~source"  # the source's own cursor entry; run keys are entity/project/id
PER_PAGE = 100
RUNS_PER_HISTORY_QUERY = 50
ROWS_PER_HISTORY_QUERY = 20_000
ROWS_PER_RUN = 10_000  # a run further behind catches up over several ticks
FIRST_READ_ROWS = 1_000  # a run first seen is read from this many steps before its newest
SKEW = 300.0  # seconds of clock difference the "ended since the last tick" filter allows
MAX_BACKOFF = 600.0
PROJECTS_TTL = 600.0


def app_url(base_url: str) -> str:
    """The web UI for an API URL: ``https://api.wandb.ai`` → ``https://wandb.ai``; a W&B
    Server serves both from one address."""
    parts = urlsplit(base_url)
    host = parts.netloc
    if host.startswith("api."):
        host = host[len("api."):]
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


@dataclass(kw_only=True)
class _SourceState:
    """What the source remembers between ticks, kept in the store as its own cursor."""

    answered: dict[str, float] = field(default_factory=dict)  # project → last good runs query
    failing_since: float | None = None
    failures: int = 0  # consecutive ticks with no answer at all
    retry_at: float | None = None
    last_error: str = ""

    @classmethod
    def load(cls, text: str | None) -> _SourceState:
        try:
            data = json.loads(text) if text else {}
            return cls(answered={str(k): float(v) for k, v in data.get("answered", {}).items()},
                       failing_since=data.get("failing_since"),
                       failures=int(data.get("failures", 0)), retry_at=data.get("retry_at"),
                       last_error=str(data.get("last_error", "")))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"answered": self.answered, "failing_since": self.failing_since,
                           "failures": self.failures, "retry_at": self.retry_at,
                           "last_error": self.last_error}, sort_keys=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class _RunCursor:
    step: int = -1  # last history step read
    lines: int = 0  # historyLineCount when last read
    ended: bool = False  # the run's final evaluation is done

    @classmethod
    def load(cls, text: str | None) -> _RunCursor | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(step=int(data["step"]), lines=int(data["lines"]),
                       ended=bool(data.get("ended", False)))
        except (ValueError, TypeError, KeyError):
            return None

    def dump(self) -> str:
        return json.dumps({"step": self.step, "lines": self.lines, "ended": self.ended})


KeysFor = Callable[[RunSnapshot], frozenset[str]]


class WandbApiSource:
    """Runs of one W&B entity's projects (see the module docstring)."""

    def __init__(self, spec: WandbSpec, *, client: WandbClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = spec.name
        self.spec = spec
        self.entity = spec.entity
        self.interval = spec.interval
        self.unreachable_after = spec.unreachable_after
        self.tick_timeout = spec.tick_timeout
        self.app_url = spec.app_url or app_url(spec.base_url)
        self.client = client or WandbClient(
            base_url=spec.base_url,
            api_key=spec.api_key.get_secret_value() if spec.api_key else None,
            timeout=spec.request_timeout,
            retry_max=spec.request_retries,
        )
        self._clock = clock
        self._projects: tuple[float, tuple[str, ...]] | None = None
        self._rotation = 0

    def __repr__(self) -> str:
        return f"WandbApiSource({self.name!r}, {self.spec.base_url!r})"

    # --- the tick ---------------------------------------------------------------------------

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float,
             *, keys_for: KeysFor | None = None, needs_config: bool = True) -> Poll:
        state = _SourceState.load(cursors.get(STATE_KEY))
        # Half an interval of slack: ticks come about an interval apart, with jitter.
        if state.retry_at is not None and now + self.interval / 2 < state.retry_at:
            return self._result(state, now, errors=[
                f"source {self.name}: W&B has not answered for {_ago(state.failing_since, now)}"
                f" ({state.last_error}); next attempt in {math.ceil(state.retry_at - now)} s"])
        deadline = self._clock() + self.tick_timeout
        tick = _Tick(source=self, state=state, cursors=cursors, now=now, deadline=deadline,
                     keys_for=keys_for or (lambda s: wanted_keys & s.keys),
                     needs_config=needs_config)
        tick.run()
        if tick.answered:
            state.failing_since, state.failures, state.retry_at = None, 0, None
            state.last_error = ""
        elif tick.failed:
            state.failing_since = state.failing_since if state.failing_since is not None else now
            state.failures += 1
            state.retry_at = now + min(self.interval * 2 ** (state.failures - 1), MAX_BACKOFF)
            state.last_error = tick.last_error
        return self._result(state, now, snapshots=tick.snapshots, cursors=tick.new_cursors,
                            errors=tick.errors)

    def _result(self, state: _SourceState, now: float, *, snapshots: Sequence[RunSnapshot] = (),
                cursors: Mapping[str, str] | None = None, errors: Sequence[str] = ()) -> Poll:
        unreachable = None
        if state.failing_since is not None and now - state.failing_since >= self.unreachable_after:
            unreachable = (f"W&B at {self.spec.base_url} has not answered for"
                           f" {_ago(state.failing_since, now)}: {state.last_error}")
        return Poll(snapshots=tuple(snapshots),
                    cursors={**(cursors or {}), STATE_KEY: state.dump()},
                    errors=tuple(errors), reachable=state.failing_since is None,
                    unreachable=unreachable)

    # --- projects -----------------------------------------------------------------------------

    def projects(self, now: float, timeout: float) -> tuple[str, ...]:
        if self.spec.projects != "all":
            return tuple(self.spec.projects)
        if self._projects and now - self._projects[0] < PROJECTS_TTL:
            return self._projects[1]
        names: list[str] = []
        cursor = None
        while True:
            data = self.client.execute(PROJECTS_QUERY, {"entity": self.entity, "cursor": cursor},
                                       timeout=timeout)
            models = data.get("models") or {}
            names += [e["node"]["name"] for e in models.get("edges") or ()
                      if (e.get("node") or {}).get("name")]
            page = models.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                break
            cursor = page["endCursor"]
        self._projects = (now, tuple(names))
        return self._projects[1]

    def rotate(self, projects: Sequence[str]) -> list[str]:
        """Start each tick at the next project, so a tick budget spent early starves none."""
        if not projects:
            return []
        start = self._rotation % len(projects)
        self._rotation += 1
        return [*projects[start:], *projects[:start]]

    # --- validate --online --------------------------------------------------------------------

    def check_online(self, timeout: float = 30.0) -> list[str]:
        """One line per problem a user must fix: a rejected key, an unknown project."""
        where = f"source {self.name}"
        try:
            self.client.execute(VIEWER_QUERY, {}, timeout=timeout)
            if self.spec.projects == "all":
                if not self.projects(time.time(), timeout):
                    return [f"{where}: entity {self.entity!r} has no projects this API key can"
                            " see (unknown entity?)"]
                return []
            problems = []
            for project in self.spec.projects:
                data = self.client.execute(PROJECT_QUERY,
                                           {"entity": self.entity, "project": project},
                                           timeout=timeout)
                if not data.get("project"):
                    problems.append(f"{where}: unknown project {self.entity}/{project}"
                                    f" at {self.spec.base_url}")
            return problems
        except WandbError as exc:
            return [f"{where}: {exc}"]


class _Tick:
    """One poll's work, kept out of the source so the source holds no per-tick state."""

    def __init__(self, *, source: WandbApiSource, state: _SourceState,
                 cursors: Mapping[str, str], now: float, deadline: float,
                 keys_for: KeysFor, needs_config: bool) -> None:
        self.source = source
        self.needs_config = needs_config
        self.state = state
        self.cursors = cursors
        self.now = now
        self.deadline = deadline
        self.keys_for = keys_for
        self.snapshots: list[RunSnapshot] = []
        self.new_cursors: dict[str, str] = {}
        self.errors: list[str] = []
        self.answered = 0
        self.failed = 0
        self.last_error = ""

    def left(self) -> float:
        return self.deadline - self.source._clock()

    def fail(self, what: str, exc: WandbError) -> None:
        self.failed += 1
        self.last_error = str(exc)
        self.errors.append(f"source {self.source.name}: {what}: {exc}")

    def run(self) -> None:
        src = self.source
        try:
            projects = src.projects(self.now, self.left())
        except WandbError as exc:
            self.fail(f"listing the projects of {src.entity}", exc)
            return
        order = src.rotate(projects)
        for i, project in enumerate(order):
            if self.left() <= 0:
                self.errors.append(
                    f"source {src.name}: tick budget of {src.tick_timeout:g} s spent;"
                    f" {', '.join(order[i:])} wait for the next tick")
                return
            try:
                nodes = self.runs(project)
            except WandbError as exc:
                self.fail(f"project {src.entity}/{project}", exc)
                if exc.kind == "auth":
                    return  # every other project would be refused the same way
                continue
            self.answered += 1
            self.read_history(project, nodes)

    def runs(self, project: str) -> list[RunNode]:
        src, spec = self.source, self.source.spec
        since = self.state.answered.get(project, self.now - spec.lookback) - SKEW
        since = max(since, self.now - spec.lookback)
        created = spec.filters.created_after.timestamp() if spec.filters.created_after else None
        filters = runs_filter(updated_after=since, tags=spec.filters.tags,
                              group=spec.filters.group, created_after=created,
                              query=spec.filters.query)
        asked_at = self.now
        nodes: list[RunNode] = []
        cursor = None
        while True:
            data = src.client.execute(RUNS_QUERY, {
                "entity": src.entity, "project": project, "filters": json.dumps(filters),
                "cursor": cursor, "perPage": PER_PAGE, "withConfig": self.needs_config,
            }, timeout=self.left())
            runs = (data.get("project") or None)
            if runs is None:
                raise WandbError(f"unknown project {src.entity}/{project}", kind="not-found")
            runs = runs.get("runs") or {}
            for edge in runs.get("edges") or ():
                node = edge.get("node") if isinstance(edge, dict) else None
                if isinstance(node, dict) and node.get("name"):
                    nodes.append(read_node(node, source=src.name, entity=src.entity,
                                           project=project, app_url=src.app_url))
            page = runs.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                break
            cursor = page["endCursor"]
        self.state.answered[project] = asked_at
        return nodes

    def read_history(self, project: str, nodes: Sequence[RunNode]) -> None:
        reads: list[tuple[RunNode, HistoryRead]] = []
        for node in nodes:
            snapshot = node.snapshot
            key = snapshot.ref.path
            before = _RunCursor.load(self.cursors.get(key))
            ended = snapshot.state.ended
            if before is not None and before.ended and ended and before.lines == node.history_lines:
                continue  # its final evaluation is done and nothing changed since
            last = node.summary_step
            wanted = tuple(sorted(self.keys_for(snapshot)))
            first = (before.step + 1 if before is not None
                     else max(0, (last or 0) - FIRST_READ_ROWS + 1))
            if last is None or last < first or not wanted:
                step = before.step if before is not None else (last if last is not None else -1)
                if last is not None and not wanted:
                    step = max(step, last)  # nothing to read: nothing to read again later
                self.finish(node, _RunCursor(step=step, lines=node.history_lines,
                                             ended=ended), history=None)
                continue
            read = HistoryRead(run_id=snapshot.ref.id, keys=wanted, first=first,
                               last=min(last, first + ROWS_PER_RUN - 1))
            reads.append((node, read))
        for batch in _batches(reads):
            if self.left() <= 0:
                names = ", ".join(n.snapshot.ref.path for n, _ in batch)
                self.errors.append(f"source {self.source.name}: tick budget spent before the"
                                   f" history of {names}; read on the next tick")
                continue
            self.read_batch(project, batch)

    def read_batch(self, project: str, batch: Sequence[tuple[RunNode, HistoryRead]]) -> None:
        src = self.source
        try:
            data = src.client.execute(
                history_query(len(batch)),
                history_variables(src.entity, project, [read for _, read in batch]),
                timeout=self.left())
        except WandbError as exc:
            # Not evaluated this tick: their new rows are read on the next one.
            self.fail(f"history of {len(batch)} runs in {src.entity}/{project}", exc)
            return
        for i, (node, read) in enumerate(batch):
            rows = history_rows(data, i)
            if rows is None:
                self.errors.append(f"run {node.snapshot.ref.path}: gone from W&B")
                continue
            series, newest = series_from_rows(rows, read.keys)
            done = read.last >= (node.summary_step or -1)
            self.finish(node, _RunCursor(step=read.last, lines=node.history_lines,
                                         ended=node.snapshot.state.ended and done),
                        history=series, newest=newest)

    def finish(self, node: RunNode, cursor: _RunCursor, *, history: Mapping[str, Any] | None,
               newest: float | None = None) -> None:
        snapshot = node.snapshot
        progress = snapshot.progress
        if newest is not None and (progress is None or newest > progress):
            progress = newest
        heartbeat = snapshot.heartbeat
        if heartbeat is not None and heartbeat > self.now:
            heartbeat = self.now  # a server clock ahead of ours does not make a run younger
        self.snapshots.append(replace(snapshot, history=history or {}, progress=progress,
                                      heartbeat=heartbeat))
        self.new_cursors[snapshot.ref.path] = cursor.dump()


def _batches(reads: Sequence[tuple[RunNode, HistoryRead]]
             ) -> Iterator[list[tuple[RunNode, HistoryRead]]]:
    batch: list[tuple[RunNode, HistoryRead]] = []
    rows = 0
    for item in reads:
        size = item[1].rows
        if batch and (len(batch) >= RUNS_PER_HISTORY_QUERY or rows + size > ROWS_PER_HISTORY_QUERY):
            yield batch
            batch, rows = [], 0
        batch.append(item)
        rows += size
    if batch:
        yield batch


def _ago(since: float | None, now: float) -> str:
    from runwatch.duration import format_duration

    return format_duration(max(0.0, now - since)) if since is not None else "?"
