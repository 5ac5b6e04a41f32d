"""Cheap reads of W&B runs for on-demand health reports: one run, the runs of a project
that are running or ended lately, and their histories — without cursors or the store.

A report looks further back than a tick, but must not cost a run's whole history (what
``scan_history`` downloads). So each wanted key is read twice, through the tick's
aliased ``sampledHistory`` query: once over the whole run thinned to ``samples`` evenly
spaced rows (the shape of the curve), once over the newest ``recent`` steps unthinned
(what the run does now: a range of ``recent`` steps cannot hold more than ``recent``
rows). The two are merged per key into one series. Both reads end at the run's last step
as its metadata gave it, so a run that logs on in between still yields a series whose
newest steps are exact and contiguous. A request's size so grows with the runs and keys
read, never with the runs' length.

The two reads of a run are two :class:`HistoryRead` under two aliases of the same run,
so the tick's query, variables and answer parsing serve reports unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from runwatch.model import RunSnapshot
from runwatch.sources.wandb_client import WandbClient, WandbError
from runwatch.sources.wandb_graphql import (
    PROJECTS_QUERY,
    RUNS_QUERY,
    HistoryRead,
    RunNode,
    history_query,
    history_rows,
    history_variables,
    read_node,
    row_step,
    runs_filter,
    series_from_rows,
)

SAMPLES = 300  # points per key over the whole run
RECENT = 200  # exact newest rows per key
MAX_KEYS = 32  # keys a run's report reads when the caller does not choose them
PER_PAGE = 100

RUN_QUERY = """
query RunwatchRun($entity: String!, $project: String!, $name: String!) {
  project(name: $project, entityName: $entity) {
    run(name: $name) { name displayName state createdAt heartbeatAt tags group
                       historyLineCount historyKeys summaryMetrics config }
  }
}
"""

KeysFor = Callable[[RunSnapshot], Iterable[str]]


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportRead:
    """What a report read cost, for the CLI's progress and the benchmark: the difference
    of two readings of a client's counters, ``ReportRead.of(client).since(before)``. The
    counters count every request of the client, so read one thing at a time to attribute
    them."""

    requests: int = 0
    bytes_received: int = 0

    @classmethod
    def of(cls, client: WandbClient) -> ReportRead:
        """The client's counters so far."""
        return cls(requests=client.requests, bytes_received=client.bytes_received)

    def since(self, before: ReportRead) -> ReportRead:
        return ReportRead(requests=self.requests - before.requests,
                          bytes_received=self.bytes_received - before.bytes_received)


def read_run(client: WandbClient, *, entity: str, project: str, run_id: str, source: str,
             app_url: str, keys: KeysFor | None = None, samples: int = SAMPLES,
             recent: int = RECENT, timeout: float = 60.0) -> RunSnapshot:
    """One run with its history, in at most 2 requests whatever its length: its metadata,
    then every key's two reads. ``keys`` picks the keys from the snapshot without history;
    by default :func:`numeric_keys` of the run. ``timeout`` is per request. Raises
    :class:`WandbError` (``not-found`` for an unknown project or run)."""
    path = f"{entity}/{project}/{run_id}"
    node, raw = _run_node(client, entity=entity, project=project, run_id=run_id,
                          source=source, app_url=app_url, timeout=timeout)
    wanted = tuple(keys(node.snapshot)) if keys else numeric_keys(raw.get("historyKeys"))
    read = read_histories(client, entity=entity, project=project, nodes=[node],
                          keys=lambda _snapshot: wanted, samples=samples, recent=recent,
                          timeout=timeout)
    if path not in read:
        raise WandbError(f"run {path} disappeared from W&B while being read",
                         kind="not-found")
    return read[path]


def run_node(client: WandbClient, *, entity: str, project: str, run_id: str, source: str,
             app_url: str, timeout: float = 60.0) -> RunNode:
    """One run without its history, in one request; WandbError (``not-found``) if there is
    no such project or run."""
    return _run_node(client, entity=entity, project=project, run_id=run_id, source=source,
                     app_url=app_url, timeout=timeout)[0]


def _run_node(client: WandbClient, *, entity: str, project: str, run_id: str, source: str,
              app_url: str, timeout: float) -> tuple[RunNode, Mapping[str, Any]]:
    data = client.execute(RUN_QUERY, {"entity": entity, "project": project, "name": run_id},
                          timeout=timeout)
    found = data.get("project")
    if not isinstance(found, dict):
        raise WandbError(f"unknown project {entity}/{project}", kind="not-found")
    raw = found.get("run")
    if not isinstance(raw, dict):
        raise WandbError(f"no run {entity}/{project}/{run_id} in W&B", kind="not-found")
    return read_node(raw, source=source, entity=entity, project=project, app_url=app_url), raw


def numeric_keys(history_keys: Any, limit: int = MAX_KEYS) -> tuple[str, ...]:
    """The keys W&B has seen a number logged under (``historyKeys`` type counts), without
    W&B's own ``_step``/``_timestamp``/``_runtime``; the ``limit`` shortest names when
    there are more, since short names are the headline metrics (``loss``, ``lr``) and long
    ones the per-layer or per-class detail."""
    data = history_keys
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return ()
    found = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        return ()
    numeric = [key for key, info in found.items()
               if isinstance(key, str) and not key.startswith("_") and isinstance(info, dict)
               and any(isinstance(c, dict) and c.get("type") == "number" and c.get("count")
                       for c in info.get("typeCounts") or ())]
    return tuple(sorted(numeric, key=lambda k: (len(k), k))[:limit])


def list_runs(client: WandbClient, *, entity: str, project: str, source: str, app_url: str,
              ended_since: float, timeout: float = 60.0) -> list[RunNode]:
    """The project's running runs and the runs whose heartbeat is newer than
    ``ended_since`` (so those that ended since), with their config. ``timeout`` is per
    request. Raises :class:`WandbError` (``not-found`` for an unknown project)."""
    def runs(data: Mapping[str, Any]) -> Mapping[str, Any]:
        found = data.get("project")
        if not isinstance(found, dict):
            raise WandbError(f"unknown project {entity}/{project}", kind="not-found")
        return found.get("runs") or {}

    variables = {"entity": entity, "project": project, "perPage": PER_PAGE,
                 "filters": json.dumps(runs_filter(updated_after=ended_since)),
                 "withConfig": True}
    return [read_node(node, source=source, entity=entity, project=project, app_url=app_url)
            for node in _paged(client, RUNS_QUERY, variables, runs, timeout)
            if node.get("name")]


def project_names(client: WandbClient, *, entity: str, timeout: float = 60.0) -> list[str]:
    """Every project of the entity this API key can see (none for an unknown entity)."""
    nodes = _paged(client, PROJECTS_QUERY, {"entity": entity},
                   lambda data: data.get("models") or {}, timeout)
    return [str(node["name"]) for node in nodes if node.get("name")]


def read_histories(client: WandbClient, *, entity: str, project: str,
                   nodes: Sequence[RunNode], keys: KeysFor, samples: int = SAMPLES,
                   recent: int = RECENT, timeout: float = 60.0,
                   runs_per_request: int = 50) -> dict[str, RunSnapshot]:
    """The snapshots of ``nodes`` (runs of one project) with the history of the keys
    ``keys`` picks, by run path, in one request per ``runs_per_request`` runs. A run whose
    history came back missing (deleted meanwhile) is left out; a run with nothing to read
    (no keys, no step logged) is returned without history, at no cost."""
    out: dict[str, RunSnapshot] = {}
    planned: list[tuple[RunSnapshot, tuple[HistoryRead, ...]]] = []
    for node in nodes:
        snapshot = node.snapshot
        reads = _reads(snapshot, keys(snapshot), samples=samples, recent=recent)
        if reads:
            planned.append((snapshot, reads))
        else:
            out[snapshot.ref.path] = snapshot
    for start in range(0, len(planned), max(1, runs_per_request)):
        batch = planned[start:start + max(1, runs_per_request)]
        reads = [read for _, run_reads in batch for read in run_reads]
        data = client.execute(history_query(len(reads)),
                              history_variables(entity, project, reads), timeout=timeout)
        index = 0
        for snapshot, run_reads in batch:
            answers = [history_rows(data, index + i, read.keys)
                       for i, read in enumerate(run_reads)]
            index += len(run_reads)
            if all(answer is not None for answer in answers):
                out[snapshot.ref.path] = _with_history(snapshot, answers)
    return out


PAGE = 10_000  # steps a whole read asks per page: never thinned (see read_whole)
PAGES_PER_REQUEST = 10


def read_whole(client: WandbClient, *, entity: str, project: str, nodes: Sequence[RunNode],
               keys: KeysFor, page: int = PAGE, pages_per_request: int = PAGES_PER_REQUEST,
               timeout: float = 60.0,
               progress: Callable[[int, int], None] | None = None) -> dict[str, RunSnapshot]:
    """The snapshots of ``nodes`` (runs of one project) with every row of the keys ``keys``
    picks, by run path — for backtests, which replay a run's whole history. Each run is
    read once, in pages of at most ``page`` rows through the tick's ``sampledHistory``
    query, ``pages_per_request`` pages a request: its steps are cut into as many ranges as
    its row count (``historyLineCount``) needs with a tenth to spare, each asking ``page``
    samples, and a range that comes back full — thinned, perhaps, where a run logs
    unevenly — is asked again as two halves. So a run that counts its steps in tokens
    costs its rows, not its steps. ``progress(done, total)`` is told of the pages read. A
    run deleted meanwhile is left out."""
    queue: list[tuple[RunSnapshot, HistoryRead]] = []
    out: dict[str, RunSnapshot] = {}
    for node in nodes:
        snapshot = node.snapshot
        wanted = tuple(dict.fromkeys(keys(snapshot)))
        last = snapshot.last_step
        if not wanted or last is None or last < 0:
            out[snapshot.ref.path] = snapshot
            continue
        # A tenth of each page to spare: a range of exactly ``page`` rows would come back
        # full, as if thinned, and be asked again in halves.
        ranges = max(1, -(-max(node.history_lines, 1) // max(1, page - page // 10)))
        span = max(1, -(-(last + 1) // ranges))
        queue += [(snapshot, HistoryRead(run_id=snapshot.ref.id, keys=wanted, first=first,
                                         last=min(last, first + span - 1), samples=page))
                  for first in range(0, last + 1, span)]
    answers: dict[str, list[Any]] = {}
    done = 0
    while queue:
        batch, queue = queue[:max(1, pages_per_request)], queue[max(1, pages_per_request):]
        data = client.execute(history_query(len(batch)),
                              history_variables(entity, project, [r for _, r in batch]),
                              timeout=timeout)
        for i, (snapshot, read) in enumerate(batch):
            answer = history_rows(data, i, read.keys)
            full = [rows for rows in (answer or {}).values() if len(rows) >= read.samples]
            if full and read.last > read.first:  # perhaps thinned: asked again in halves
                middle = _middle_step(full[0], read.first, read.last)
                queue += [(snapshot, replace(read, last=middle - 1)),
                          (snapshot, replace(read, first=middle))]
            else:
                answers.setdefault(snapshot.ref.path, []).append(answer)
        done += len(batch)
        if progress is not None:
            progress(done, done + len(queue))
    snapshots = {node.snapshot.ref.path: node.snapshot for node in nodes}
    for path, found in answers.items():
        if all(answer is not None for answer in found):
            out[path] = _with_history(snapshots[path], found)
    return out


def _middle_step(rows: Sequence[Mapping[str, Any]], first: int, last: int) -> int:
    """Where to cut ``first``..``last`` so that each part holds about half its rows: the
    step of the middle row of the (evenly thinned) rows it answered, else its middle."""
    steps = sorted(s for s in (row_step(row.get("_step")) for row in rows) if s is not None)
    middle = steps[len(steps) // 2] if steps else None
    if middle is None or not first < middle <= last:
        middle = (first + last) // 2 + 1
    return middle


def _reads(snapshot: RunSnapshot, keys: Iterable[str], *, samples: int,
           recent: int) -> tuple[HistoryRead, ...]:
    """A run's whole-run read and its newest-steps read, both ending at its last step (a
    run with fewer steps than ``samples`` needs only the first: it comes back whole)."""
    wanted = tuple(dict.fromkeys(keys))
    last = snapshot.last_step
    if not wanted or last is None or last < 0:
        return ()
    run_id = snapshot.ref.id
    reads = []
    if samples > 0:
        reads.append(HistoryRead(run_id=run_id, keys=wanted, first=0, last=last,
                                 samples=samples))
    if recent > 0 and (samples <= 0 or last + 1 > samples):
        reads.append(HistoryRead(run_id=run_id, keys=wanted, first=max(0, last - recent + 1),
                                 last=last, samples=recent))
    return tuple(reads)


def _with_history(snapshot: RunSnapshot,
                  answers: Iterable[Mapping[str, Iterable[Mapping[str, Any]]]]) -> RunSnapshot:
    """The reads' rows merged per key, one row per step, as the snapshot's history; its
    progress the newest row's time when that is newer than the summary's."""
    by_key: dict[str, dict[int, Mapping[str, Any]]] = {}
    for answer in answers:
        for key, rows in answer.items():
            steps = by_key.setdefault(key, {})
            for row in rows:
                # 512.0 is step 512; a report is a view, not a cursor: an unreadable step
                # leaves out that row only.
                step = row_step(row.get("_step"))
                if step is not None:
                    steps[step] = row
    merged = series_from_rows({key: [steps[s] for s in sorted(steps)]
                               for key, steps in by_key.items()})
    series, newest = merged.series, merged.newest
    progress = snapshot.progress
    if newest is not None and (progress is None or newest > progress):
        progress = newest
    return replace(snapshot, history=series, progress=progress)


def _paged(client: WandbClient, query: str, variables: Mapping[str, Any],
           connection: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           timeout: float) -> Iterator[Mapping[str, Any]]:
    """The nodes of every page of a Relay connection (``connection`` finds it in an
    answer), following ``pageInfo.endCursor``."""
    cursor = None
    while True:
        data = client.execute(query, {**variables, "cursor": cursor}, timeout=timeout)
        found = connection(data)
        for edge in found.get("edges") or ():
            node = edge.get("node") if isinstance(edge, dict) else None
            if isinstance(node, dict):
                yield node
        page = found.get("pageInfo") or {}
        if not page.get("hasNextPage") or not page.get("endCursor"):
            return
        cursor = page["endCursor"]
