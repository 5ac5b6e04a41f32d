"""The ``wandb`` source: the runs of W&B projects, read incrementally through the public API.

A tick costs one listing request per ten projects (each paged) and a few batched history
queries for the runs that logged new rows since their cursor — nothing for runs without new
rows, and never a run's whole history. What a tick could not fetch is not evaluated: a run whose
data did not arrive is not judged stalled on it, and it is read again on the next tick.

A source that gets no answer at all backs off — the next tick, then every second, fourth
… tick, at most ten minutes apart — and once that has lasted ``unreachable_after`` it
says so; the tick turns that into one ``source-unreachable`` alert.
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
from runwatch.duration import format_duration
from runwatch.model import RunSnapshot
from runwatch.sources.base import Poll
from runwatch.sources.wandb_client import WandbClient, WandbError
from runwatch.sources.wandb_cursor import (
    Plan,
    RunCursor,
    after_read,
    doubted_keys,
    plan_read,
    split,
)
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
    listing_query,
    read_node,
    runs_filter,
    series_from_rows,
)
from runwatch.window import NONE, Window

STATE_KEY = "~source"  # the source's own cursor entry; run keys are entity/project/id
PER_PAGE = 100
RUNS_PER_HISTORY_QUERY = 50
ROWS_PER_HISTORY_QUERY = 20_000
NAMES_PER_QUERY = 100  # open runs looked up by name per runs query
PROJECTS_PER_LISTING = 10  # projects listed per request, a page of PER_PAGE runs each
SMALLER_FOR = 3600.0  # seconds a smaller listing size is kept after a slow listing
# Without rules on config, runs are listed without it (configs can be large); the status
# pages still want each run's (its total steps), read once per run and process: this many
# runs a tick in one runs query, from the second tick on (the first is the heaviest).
CONFIGS_PER_TICK = NAMES_PER_QUERY
CONFIG_BACKOFF = 600.0  # seconds: a config query that failed is not tried again before
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

    answered: dict[str, float] = field(default_factory=dict)  # project → last complete read
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


KeysFor = Callable[[RunSnapshot], frozenset[str]]
# A run whose new rows a tick reads: its node, its cursor before, and the read.
_Read = tuple[RunNode, RunCursor | None, HistoryRead]


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
        self.clock = clock  # for the tick budget only; `now` is the tick's time
        created = spec.filters.created_after
        # The configured filters, in every runs query this source sends.
        self.narrow: dict[str, Any] = {
            "tags": spec.filters.tags, "group": spec.filters.group,
            "created_after": created.timestamp() if created else None,
            "query": spec.filters.query}
        self._projects: tuple[float, tuple[str, ...]] | None = None
        self._rotation = 0
        self._polls = 0
        # Projects a listing request asks: halved for an hour (SMALLER_FOR) when W&B takes
        # too long to answer one but answers the halves (it may answer each aliased project
        # in turn), then tried at full size again.
        self._per_listing = PROJECTS_PER_LISTING
        self._smaller_until = 0.0
        self._configured: set[str] = set()  # runs whose config this process has read
        self._configs_after = -math.inf  # (a failed config query puts the next off)

    def __repr__(self) -> str:
        return f"WandbApiSource({self.name!r}, {self.spec.base_url!r})"

    def close(self) -> None:
        self.client.close()

    # --- the tick ---------------------------------------------------------------------------

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float,
             *, keys_for: KeysFor | None = None, needs_config: bool = True,
             window: Window = NONE) -> Poll:
        state = _SourceState.load(cursors.get(STATE_KEY))
        # Half an interval of slack: ticks come about an interval apart, with jitter.
        if state.retry_at is not None and now + self.interval / 2 < state.retry_at:
            return self._result(state, now, errors=[
                f"source {self.name}: W&B has not answered for {_ago(state.failing_since, now)}"
                f" ({state.last_error}); next attempt in {math.ceil(state.retry_at - now)} s"])
        tick = _Tick(source=self, state=state, cursors=cursors, now=now,
                     deadline=self.clock() + self.tick_timeout,
                     keys_for=keys_for or (lambda s: wanted_keys & s.keys),
                     needs_config=needs_config, window=self.spec.first_read | window)
        tick.run()
        self._polls += 1
        if tick.reached:
            state.failing_since, state.failures, state.retry_at = None, 0, None
            state.last_error = ""
        elif tick.failed:
            state.failing_since = state.failing_since if state.failing_since is not None else now
            state.failures += 1
            state.retry_at = now + min(self.interval * 2 ** (state.failures - 1), MAX_BACKOFF)
            state.last_error = tick.last_error
        # The next try: after the backoff if this tick failed, else on the next tick.
        retry_in = state.retry_at - now if state.retry_at is not None else self.interval
        return self._result(state, now, snapshots=tick.snapshots, cursors=tick.new_cursors,
                            errors=tick.report(retry_in))

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

    def projects(self, now: float, deadline: Callable[[], float]) -> tuple[str, ...]:
        if self.spec.projects != "all":
            return tuple(self.spec.projects)
        if self._projects and now - self._projects[0] < PROJECTS_TTL:
            return self._projects[1]
        names: list[str] = []
        cursor = None
        while True:
            data = self.client.execute(PROJECTS_QUERY, {"entity": self.entity, "cursor": cursor},
                                       timeout=deadline())
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
        """One line per problem a user must fix — a rejected key, an unknown project — all
        within ``timeout``; W&B being down is one line too, and ends the check."""
        where = f"source {self.name}"
        end = self.clock() + timeout

        def left() -> float:
            return max(0.1, end - self.clock())

        try:
            self.client.execute(VIEWER_QUERY, {}, timeout=left())
            if self.spec.projects == "all":
                if not self.projects(time.time(), left):
                    return [f"{where}: entity {self.entity!r} has no projects this API key can"
                            " see (unknown entity?)"]
                return []
            problems = []
            for project in self.spec.projects:
                data = self.client.execute(PROJECT_QUERY,
                                           {"entity": self.entity, "project": project},
                                           timeout=left())
                if not data.get("project"):
                    problems.append(f"{where}: unknown project {self.entity}/{project}"
                                    f" at {self.spec.base_url}")
            return problems
        except WandbError as exc:
            return [f"{where}: {exc}"]


class _Tick:
    """One poll's work, kept apart so the source holds no per-tick state."""

    def __init__(self, *, source: WandbApiSource, state: _SourceState,
                 cursors: Mapping[str, str], now: float, deadline: float,
                 keys_for: KeysFor, needs_config: bool, window: Window) -> None:
        self.source = source
        self.state = state
        self.now = now
        self.deadline = deadline
        self.keys_for = keys_for
        self.needs_config = needs_config
        self.window = window  # what a run's first read takes
        # Every run cursor parsed once: the open-run lookup and the history plans share them.
        self.run_cursors = {key: RunCursor.load(text) for key, text in cursors.items()
                            if key != STATE_KEY}
        self.snapshots: list[RunSnapshot] = []
        self.new_cursors: dict[str, str] = {}
        self.errors: list[str] = []
        self._rate_limited: list[int] = []  # errors to complete with the next try's time
        self.failed = 0
        self.last_error = ""
        self._configs_left = CONFIGS_PER_TICK if source._polls else 0
        self._runs_ok = 0
        self._refused = False  # the API key was refused: nothing more is asked this tick
        self._said: set[str] = set()  # projects whose listing failed, said so
        self._slow = 0  # the chunk being listed: its first request W&B was too slow for
        self._history_ok = 0
        self._history_failed = 0

    @property
    def reached(self) -> bool:
        """W&B answered: a runs query did, and so did a history read if any failed (a server
        whose history reads all fail leaves every run unjudged: that is unreachable too)."""
        return self._runs_ok > 0 and (self._history_ok > 0 or self._history_failed == 0)

    def left(self) -> float:
        return self.deadline - self.source.clock()

    def fail(self, what: str, exc: WandbError) -> None:
        self.failed += 1
        self.last_error = str(exc)
        if exc.kind == "rate-limited":
            self._rate_limited.append(len(self.errors))
        self.errors.append(f"source {self.source.name}: {what}: {exc}")

    def report(self, retry_in: float) -> list[str]:
        """The tick's error lines, a rate limit's saying when the source tries again
        (known only once the tick is over: it depends on whether anything answered)."""
        lines = list(self.errors)
        for i in self._rate_limited:
            lines[i] += f", retrying after {max(0, math.ceil(retry_in))} s"
        return lines

    def run(self) -> None:
        src = self.source
        try:
            projects = src.projects(self.now, self.left)
        except WandbError as exc:
            self.fail(f"listing the projects of {src.entity}", exc)
            return
        order = src.rotate(projects)
        if self.now >= src._smaller_until:
            src._per_listing = PROJECTS_PER_LISTING
        # Ten projects listed, then read, then the next ten: a budget spent early still
        # reads the first (and the rotation starts each tick one project further). The size
        # may shrink while a chunk is listed: the next chunk starts after this one.
        start = 0
        while start < len(order):
            size = src._per_listing
            chunk = order[start:start + size]
            self._slow = 0
            listed = self.list_runs(chunk) if self.left() > 0 else {}
            if self._refused:
                return  # every other request would be refused the same way
            if src._per_listing < size:
                self.errors.append(
                    f"source {src.name}: W&B did not list {self._slow} projects in one"
                    f" request within {src.spec.request_timeout:g} s; listing"
                    f" {src._per_listing} a request for the next {format_duration(SMALLER_FOR)}")
            for i, project in enumerate(chunk):
                if self.left() <= 0:
                    waiting = [p for p in order[start + i:] if p not in self._said]
                    if waiting:
                        self.errors.append(
                            f"source {src.name}: tick budget of {src.tick_timeout:g} s"
                            f" spent; {', '.join(waiting)} wait for the next tick")
                    return
                if project not in listed:
                    continue  # its listing failed: said so
                try:
                    nodes = listed[project] + self.open_runs(project, listed[project])
                except WandbError as exc:
                    self.fail(f"project {src.entity}/{project}", exc)
                    if exc.kind == "auth":
                        return
                    continue
                if self.read_history(project, nodes):
                    # Only a project read completely moves its "ended since" mark: a run
                    # that ended while its history could not be read is asked again.
                    self.state.answered[project] = self.now
                self.add_configs(project)
            start += len(chunk)

    def list_runs(self, projects: Sequence[str], *,
                  per_request: int | None = None) -> dict[str, list[RunNode]]:
        """Each project's running runs and those whose heartbeat moved since its last
        complete read: ``per_request`` projects a request, each paged on its own (a
        project's next page rides with the others' still to read). A project whose
        listing failed is left out, said so; a spent budget leaves the rest out unsaid (the
        caller says which projects wait). A request of several projects that W&B refused
        for a reason that may be one project's (an error on one alias comes back as the
        whole request's) is asked again one project at a time, so only that one fails; one
        that timed out is asked again in halves (see :meth:`list_in_halves`); a rate limit
        or a server error is the same for all."""
        src = self.source
        per_request = per_request or src._per_listing
        listed: dict[str, list[RunNode]] = {}
        for start in range(0, len(projects), per_request):
            chunk = projects[start:start + per_request]
            pages: dict[str, str | None] = dict.fromkeys(chunk)  # project: its next page
            found: dict[str, list[RunNode]] = {project: [] for project in pages}
            while pages:
                if self.left() <= 0:
                    return listed
                asked = list(pages)
                variables: dict[str, Any] = {"entity": src.entity, "perPage": PER_PAGE,
                                             "withConfig": self.needs_config}
                for i, project in enumerate(asked):
                    variables[f"p{i}"] = project
                    variables[f"f{i}"] = json.dumps(self.listing_filter(project))
                    variables[f"c{i}"] = pages[project]
                given = self.left()  # a timeout within less than a request's own is the tick's
                try:
                    data = src.client.execute(listing_query(len(asked)), variables,
                                              timeout=given)
                except WandbError as exc:
                    if len(asked) > 1 and exc.kind == "timeout" \
                            and given >= src.spec.request_timeout:
                        listed |= self.list_in_halves(asked, per_request)
                    elif len(asked) > 1 and _maybe_one_project(exc):
                        listed |= self.list_runs(asked, per_request=1)
                    else:
                        names = ", ".join(f"{src.entity}/{project}" for project in asked)
                        self.fail(f"project{'s' if len(asked) > 1 else ''} {names}", exc)
                        self._said.update(asked)
                        self._refused = exc.kind == "auth"
                    if self._refused:
                        return listed
                    break
                self._runs_ok += 1
                pages = {}
                for i, project in enumerate(asked):
                    try:
                        nodes, cursor = self._page(project, data.get(f"p{i}"))
                    except WandbError as exc:
                        self.fail(f"project {src.entity}/{project}", exc)
                        self._said.add(project)
                        del found[project]
                        continue
                    found[project] += nodes
                    if cursor is None:
                        listed[project] = found.pop(project)
                    else:
                        pages[project] = cursor
        return listed

    def list_in_halves(self, projects: Sequence[str], size: int) -> dict[str, list[RunNode]]:
        """``projects``, whose listing ``size`` a request timed out, listed half as many a
        request; if W&B answers those, the source keeps listing that many for an hour (it
        may answer each aliased project in turn; :meth:`run` says so). If it does not (it
        is down, not slow), the size stays: the halves' own failures are what is said."""
        src = self.source
        answered, before = self._runs_ok, src._per_listing
        self._slow = self._slow or len(projects)  # the first request found slow
        src._per_listing = max(1, min(before, size // 2))
        listed = self.list_runs(projects, per_request=src._per_listing)
        if self._runs_ok == answered:
            src._per_listing = before
        else:
            src._smaller_until = self.now + SMALLER_FOR
        return listed

    def listing_filter(self, project: str) -> dict[str, Any]:
        lookback = self.source.spec.lookback
        since = max(self.state.answered.get(project, self.now - lookback) - SKEW,
                    self.now - lookback)
        return runs_filter(updated_after=since, **self.source.narrow)

    def open_runs(self, project: str, listed: Sequence[RunNode]) -> list[RunNode]:
        """The runs this source still has open that the listing left out (W&B may mark a
        dead run crashed long after its last heartbeat), asked for by name."""
        seen = {node.snapshot.ref.path for node in listed}
        prefix = f"{self.source.entity}/{project}/"
        open_runs = {key[len(prefix):]: cursor for key, cursor in self.run_cursors.items()
                     if key.startswith(prefix) and key not in seen
                     and cursor is not None and not cursor.ended}
        missing = sorted(open_runs)
        nodes: list[RunNode] = []
        for i in range(0, len(missing), NAMES_PER_QUERY):
            names = missing[i:i + NAMES_PER_QUERY]
            found = self._query(project, {"name": {"$in": names}})
            nodes += found
            for gone in set(names) - {node.snapshot.ref.id for node in found}:
                key = prefix + gone  # deleted (or moved): stop asking for it
                self.new_cursors[key] = replace(open_runs[gone], ended=True).dump()
                self.errors.append(f"run {key}: gone from W&B; no longer watched")
        return nodes

    def add_configs(self, project: str) -> None:
        """Give this tick's snapshots of ``project`` whose config this process has not
        read yet their config (up to what is left of ``CONFIGS_PER_TICK``), when the
        listing left configs out: after the history reads, only while half the tick's
        budget is left, and a failure only puts the next try off (``CONFIG_BACKOFF``) —
        they are for the status pages, not for any rule."""
        src = self.source
        prefix = f"{src.entity}/{project}/"
        mine = [i for i, snap in enumerate(self.snapshots)
                if snap.ref.path.startswith(prefix)]
        if self.needs_config:
            src._configured.update(self.snapshots[i].ref.path for i in mine)
            return
        if self.now < src._configs_after or self.left() < src.tick_timeout / 2:
            return
        missing = [i for i in mine if self.snapshots[i].ref.path not in src._configured
                   ][:self._configs_left]
        if not missing:
            return
        self._configs_left -= len(missing)
        names = [self.snapshots[i].ref.id for i in missing]
        try:
            found = self._query(project, {"name": {"$in": names}}, with_config=True)
        except WandbError:
            src._configs_after = self.now + CONFIG_BACKOFF
            return
        configs = {n.snapshot.ref.id: n.snapshot.config for n in found}
        src._configured.update(n.snapshot.ref.path for n in found)
        for i in missing:
            snap = self.snapshots[i]
            if configs.get(snap.ref.id):
                self.snapshots[i] = replace(snap, config=configs[snap.ref.id])

    def _query(self, project: str, filters: Mapping[str, Any], *,
               with_config: bool = False) -> list[RunNode]:
        src = self.source
        nodes: list[RunNode] = []
        cursor = None
        while True:
            data = src.client.execute(RUNS_QUERY, {
                "entity": src.entity, "project": project, "filters": json.dumps(filters),
                "cursor": cursor, "perPage": PER_PAGE,
                "withConfig": self.needs_config or with_config,
            }, timeout=self.left())
            found, cursor = self._page(project, data.get("project"))
            nodes += found
            if cursor is None:
                return nodes

    def _page(self, project: str, found: Any) -> tuple[list[RunNode], str | None]:
        """A project's page of runs, and the cursor of its next page (None: the last)."""
        src = self.source
        if not isinstance(found, dict):
            raise WandbError(f"unknown project {src.entity}/{project}", kind="not-found")
        runs = found.get("runs") or {}
        nodes = []
        for edge in runs.get("edges") or ():
            node = edge.get("node") if isinstance(edge, dict) else None
            if isinstance(node, dict) and node.get("name"):
                nodes.append(read_node(node, source=src.name, entity=src.entity,
                                       project=project, app_url=src.app_url))
        page = runs.get("pageInfo") or {}
        more = page.get("hasNextPage") and page.get("endCursor")
        return nodes, str(page["endCursor"]) if more else None

    def read_history(self, project: str, nodes: Sequence[RunNode]) -> bool:
        """Read and finish every run of the project; False if some could not be."""
        reads: list[_Read] = []
        for node in nodes:
            before = self.run_cursors.get(node.snapshot.ref.path)
            plan: Plan = plan_read(before, node, tuple(sorted(self.keys_for(node.snapshot))),
                                   self.window)
            if plan.skip:
                continue
            if plan.read is None:
                self.finish(node, plan.after, history=None)
            else:
                reads.append((node, before, plan.read))
        complete = True
        for batch in _batches(reads):
            if self.left() <= 0:
                names = ", ".join(n.snapshot.ref.path for n, _, _ in batch)
                self.errors.append(f"source {self.source.name}: tick budget spent before the"
                                   f" history of {names}; read on the next tick")
                complete = False
                continue
            complete &= self.read_batch(project, batch)
        return complete

    def read_batch(self, project: str, batch: Sequence[_Read], *, again: bool = True) -> bool:
        """Read ``batch`` in one request and finish its runs. A run whose spec of several
        keys came back short (they do not share their rows) is read again, its keys apart,
        before it is judged (once: ``again``)."""
        src = self.source
        try:
            data = src.client.execute(
                history_query(len(batch)),
                history_variables(src.entity, project, [read for _, _, read in batch]),
                timeout=self.left())
        except WandbError as exc:
            # Not evaluated this tick: their new rows are read on the next one.
            self.fail(f"history of {len(batch)} runs in {src.entity}/{project}", exc)
            self._history_failed += 1
            return False
        self._history_ok += 1
        retry: list[_Read] = []
        for i, (node, before, read) in enumerate(batch):
            rows = history_rows(data, i, read.specs_keys)
            if rows is None:
                self.errors.append(f"run {node.snapshot.ref.path}: gone from W&B")
                continue
            doubted = doubted_keys(before, node, read, [len(rows.get(group[0], ()))
                                                        for group in read.specs_keys])
            if doubted:
                if again:
                    retry.append((node, before, split(read, doubted)))
                    continue
                read = replace(read, apart=read.apart | doubted)
            answer = series_from_rows(rows, after=read.first - 1)
            if answer.unread is not None:
                # Judged up to the row before it; the cursor stays there, so the row is
                # read (and reported) again each tick until W&B answers it readably.
                stop = answer.unread.after
                judged = f"judged up to step {stop}, the rest is" if stop >= read.first \
                    else "none of its new rows judged, they are"
                self.errors.append(f"run {node.snapshot.ref.path}: {answer.unread.describe()};"
                                   f" {judged} read again next tick")
                read = replace(read, last=stop)
            self.finish(node, after_read(before, node, read), history=answer.series,
                        newest=answer.newest)
        return self.read_batch(project, retry, again=False) if retry else True

    def finish(self, node: RunNode, cursor: RunCursor | None, *,
               history: Mapping[str, Any] | None, newest: float | None = None) -> None:
        snapshot = node.snapshot
        progress = snapshot.progress
        if newest is not None and (progress is None or newest > progress):
            progress = newest
        heartbeat = snapshot.heartbeat
        if heartbeat is not None and heartbeat > self.now:
            heartbeat = self.now  # a server clock ahead of ours does not make a run younger
        self.snapshots.append(replace(snapshot, history=history or {}, progress=progress,
                                      heartbeat=heartbeat))
        if cursor is not None:
            self.new_cursors[snapshot.ref.path] = cursor.dump()


def _batches(reads: Sequence[_Read]) -> Iterator[list[_Read]]:
    """Reads grouped into requests of at most RUNS_PER_HISTORY_QUERY runs and, unless one
    read alone is bigger, ROWS_PER_HISTORY_QUERY values."""
    batch: list[_Read] = []
    rows = 0
    for item in reads:
        size = item[2].expected
        if batch and (len(batch) >= RUNS_PER_HISTORY_QUERY or rows + size > ROWS_PER_HISTORY_QUERY):
            yield batch
            batch, rows = [], 0
        batch.append(item)
        rows += size
    if batch:
        yield batch


def _maybe_one_project(exc: WandbError) -> bool:
    """Whether a failed request of several projects may have failed for one of them: W&B
    answers an error on one alias (a project it cannot list) as the whole request's, with
    no HTTP status. A timeout, a rate limit, a server error or a refused key is not."""
    return exc.kind in ("query", "not-found") or (exc.kind == "unavailable"
                                                  and exc.status is None)


def _ago(since: float | None, now: float) -> str:
    return format_duration(max(0.0, now - since)) if since is not None else "?"
