"""What the W&B source asks the W&B GraphQL API, and how it reads the answers. Pure.

Two operations carry a tick: a listing of runs, ten projects a request (each paged on its
own) with exactly the fields a tick needs, and history queries that read many runs' new
rows at once — one aliased ``run(name:) { sampledHistory(specs:) }`` per run, each spec
bounded to the steps after the run's cursor. ``sampledHistory`` treats ``maxStep`` as
inclusive, returns only rows that hold *every* key of a spec, and at most ``samples`` of
them (evenly thinned), so ``samples`` is never below the rows the range can hold, and one
spec holds only keys logged in the same rows (see
:func:`runwatch.sources.wandb_cursor.group_keys`): each point, and each row's ``_step``
and ``_timestamp``, is then sent once.

The all-keys rule is W&B's own: wandb's ``Run.scan_history`` documents that "the scan only
returns rows that contain all of the requested keys", and W&B's staff say the same of
``history(keys=…)`` and ``sampledHistory`` (wandb/wandb#1742, #2266, #5391).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runwatch.model import RunRef, RunSnapshot, RunState, Series

# What a runs query reads of each run.
RUN_FIELDS = """name displayName state createdAt heartbeatAt tags group
                     historyLineCount historyKeys summaryMetrics
                     config @include(if: $withConfig)"""

RUNS_QUERY = f"""
query RunwatchRuns($entity: String!, $project: String!, $filters: JSONString,
                   $cursor: String, $perPage: Int!, $withConfig: Boolean!) {{
  project(name: $project, entityName: $entity) {{
    runs(filters: $filters, after: $cursor, first: $perPage, order: "+created_at") {{
      edges {{ node {{ {RUN_FIELDS} }} }}
      pageInfo {{ endCursor hasNextPage }}
    }}
  }}
}}
"""


def listing_query(count: int) -> str:
    """One query listing a page of runs of each of ``count`` projects, aliased ``p0…``:
    project ``$p{i}``, filters ``$f{i}``, page cursor ``$c{i}`` (what RUNS_QUERY asks of
    one project). A tick lists its projects in one request, not one each."""
    params = "".join(f", $p{i}: String!, $f{i}: JSONString, $c{i}: String"
                     for i in range(count))
    fields = "\n".join(
        f"  p{i}: project(name: $p{i}, entityName: $entity) {{\n"
        f"    runs(filters: $f{i}, after: $c{i}, first: $perPage, order: \"+created_at\") {{\n"
        f"      edges {{ node {{ {RUN_FIELDS} }} }}\n"
        f"      pageInfo {{ endCursor hasNextPage }}\n    }}\n  }}"
        for i in range(count))
    return (f"query RunwatchListing($entity: String!, $perPage: Int!,"
            f" $withConfig: Boolean!{params}) {{\n{fields}\n}}\n")


PROJECTS_QUERY = """
query RunwatchProjects($entity: String!, $cursor: String) {
  models(entityName: $entity, first: 100, after: $cursor) {
    edges { node { name } }
    pageInfo { endCursor hasNextPage }
  }
}
"""

PROJECT_QUERY = """
query RunwatchProject($entity: String!, $project: String!) {
  project(name: $project, entityName: $entity) { name }
}
"""

VIEWER_QUERY = "query RunwatchViewer { viewer { id username entity } }"

# W&B's run states, as runwatch names them. "preempting" is a run told to stop that has
# not yet; it is still alive.
STATES = {
    "running": RunState.RUNNING,
    "pending": RunState.RUNNING,
    "preempting": RunState.RUNNING,
    "finished": RunState.FINISHED,
    "crashed": RunState.CRASHED,
    "failed": RunState.FAILED,
    "killed": RunState.KILLED,
    "preempted": RunState.PREEMPTED,
}

# Non-finite numbers in W&B's JSON objects arrive as these strings (JSON text carries bare
# NaN/Infinity, which json.loads already reads as floats).
_NONFINITE = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf,
              "-Infinity": -math.inf, "-inf": -math.inf}


def number(value: Any) -> float | None:
    """A logged value as the float it stands for; None for what is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _NONFINITE.get(value)
    return None


def wandb_time(text: str | None) -> float | None:
    """W&B's ``2026-11-23T08:00:00`` (UTC, often without a zone) as Unix seconds."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(seconds: float) -> str:
    """Unix seconds as W&B's filter timestamps: UTC, no zone, whole seconds."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%S")


def runs_filter(*, updated_after: float, tags: Sequence[str] = (), group: str | None = None,
                created_after: float | None = None,
                query: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Running runs, and runs whose heartbeat is newer than ``updated_after`` (so a run that
    ended since the last tick is read once more), narrowed by the configured filters."""
    clauses: list[dict[str, Any]] = [
        {"$or": [{"state": "running"}, {"heartbeatAt": {"$gt": iso(updated_after)}}]}
    ]
    if tags:
        clauses.append({"tags": {"$in": list(tags)}})
    if group:
        clauses.append({"group": group})
    if created_after is not None:
        clauses.append({"createdAt": {"$gt": iso(created_after)}})
    if query:
        clauses.append(dict(query))
    return {"$and": clauses}


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def flat_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Nested summary dicts flattened the way their history keys are (``a.b``); media
    objects (dicts carrying ``_type``) stay whole."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and "_type" not in value and value:
            for inner, leaf in flat_summary(value).items():
                flat[f"{key}.{inner}"] = leaf
        else:
            flat[key] = value
    return flat


def plain_config(raw: Any) -> dict[str, Any]:
    """W&B's ``{"lr": {"value": 0.001, "desc": null}}`` as ``{"lr": 0.001}``, without ``_wandb``."""
    config = _json(raw)
    if not isinstance(config, dict):
        return {}
    return {
        key: value.get("value") if isinstance(value, dict) and "value" in value else value
        for key, value in config.items()
        if key != "_wandb"
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class RunNode:
    """One run as the runs query returned it, before its history is read."""

    snapshot: RunSnapshot  # without history; ``last_step`` is the summary's ``_step``
    history_lines: int
    # How many rows hold each key (``historyKeys``' typeCounts): keys logged in the same
    # rows have the same count, which is how a read learns what it may ask in one spec.
    key_rows: Mapping[str, int] = field(default_factory=dict)


def read_node(node: Mapping[str, Any], *, source: str, entity: str, project: str,
              app_url: str) -> RunNode:
    """A runs-query node as a snapshot without history."""
    run_id = str(node.get("name") or "")
    summary = _json(node.get("summaryMetrics"))
    summary = flat_summary(summary) if isinstance(summary, dict) else {}
    step = summary.get("_step")
    step = int(step) if isinstance(step, int | float) and math.isfinite(step) else None
    progress = number(summary.get("_timestamp"))
    ref = RunRef(source=source, id=run_id, name=str(node.get("displayName") or run_id),
                 project=project, entity=entity,
                 location=f"{app_url}/{entity}/{project}/runs/{run_id}")
    state = STATES.get(str(node.get("state") or "").lower(), RunState.UNKNOWN)
    tags = node.get("tags") or ()
    logged = _json(node.get("historyKeys"))  # parsed once: its keys and their row counts
    snapshot = RunSnapshot(
        ref=ref,
        state=state,
        heartbeat=wandb_time(node.get("heartbeatAt")),
        progress=progress if progress is not None and math.isfinite(progress) else None,
        started=wandb_time(node.get("createdAt")),
        last_step=step,
        tags=tuple(str(t) for t in tags if isinstance(t, str)),
        group=str(node.get("group") or ""),
        config=plain_config(node.get("config")),
        summary=summary,
        keys=frozenset(summary) | history_keys(logged),
    )
    lines = node.get("historyLineCount")
    return RunNode(snapshot=snapshot, history_lines=lines if isinstance(lines, int) else 0,
                   key_rows=key_rows(logged))


def history_keys(raw: Any) -> frozenset[str]:
    """The keys a run has logged, from ``historyKeys`` (``{"keys": {"loss": {...}}}``):
    the summary alone misses a metric defined with ``define_metric(summary="min")`` (its
    summary holds ``{"min": …}``) or ``summary="none"``."""
    data = _json(raw)
    keys = data.get("keys") if isinstance(data, dict) else None
    return frozenset(k for k in keys if isinstance(k, str)) if isinstance(keys, dict) \
        else frozenset()


def key_rows(raw: Any) -> dict[str, int]:
    """How many rows hold each key, from ``historyKeys``' ``typeCounts`` (a key logged as a
    number in 90 rows and as NaN's string in 10 holds 100)."""
    data = _json(raw)
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        return {}
    out: dict[str, int] = {}
    for key, info in keys.items():
        counts = info.get("typeCounts") if isinstance(info, dict) else None
        if isinstance(key, str) and isinstance(counts, list):
            out[key] = sum(c["count"] for c in counts
                           if isinstance(c, dict) and isinstance(c.get("count"), int))
    return out


def history_query(count: int) -> str:
    """One query reading the history of ``count`` runs of one project, aliased ``r0…``."""
    params = "".join(f", $n{i}: String!, $s{i}: [JSONString!]!" for i in range(count))
    fields = "\n".join(f"    r{i}: run(name: $n{i}) {{ sampledHistory(specs: $s{i}) }}"
                       for i in range(count))
    return (f"query RunwatchHistory($entity: String!, $project: String!{params}) {{\n"
            f"  project(name: $project, entityName: $entity) {{\n{fields}\n  }}\n}}\n")


# The columns every history row holds: every spec asks them, and they hold no key apart.
ROW_KEYS = ("_step", "_timestamp")


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryRead:
    """One run's slice of a history query: these keys, steps ``first``..``last`` inclusive,
    at most ``samples`` rows per spec (at least as many as the range can hold). ``groups``
    are the keys asked together, one spec each (default: one spec per key); ``apart`` the
    keys found not to share their rows with others, kept in specs of their own."""

    run_id: str
    keys: tuple[str, ...]
    first: int
    last: int
    samples: int
    expected_rows: int = 0  # what the range likely holds: the size of the answer
    groups: tuple[tuple[str, ...], ...] = ()
    apart: frozenset[str] = frozenset()

    @property
    def specs_keys(self) -> tuple[tuple[str, ...], ...]:
        return self.groups or tuple((key,) for key in self.keys)

    @property
    def expected(self) -> int:
        """Values the answer likely carries, for batching reads into requests."""
        values = sum(max(1, len(set(group) - set(ROW_KEYS))) for group in self.specs_keys)
        return max(1, self.expected_rows or self.samples) * values

    def specs(self) -> list[str]:
        """One spec per group: W&B returns only rows holding every key of a spec."""
        return [json.dumps({"keys": list(dict.fromkeys((*ROW_KEYS, *group))),
                            "minStep": self.first, "maxStep": self.last,
                            "samples": self.samples})
                for group in self.specs_keys]


def history_variables(entity: str, project: str,
                      reads: Sequence[HistoryRead]) -> dict[str, Any]:
    variables: dict[str, Any] = {"entity": entity, "project": project}
    for i, read in enumerate(reads):
        variables[f"n{i}"] = read.run_id
        variables[f"s{i}"] = read.specs()
    return variables


def history_rows(data: Mapping[str, Any] | None, index: int,
                 specs: Sequence[str | Sequence[str]]) -> dict[str, list[Mapping[str, Any]]] | None:
    """The ``index``-th aliased run's rows by key, one spec per entry of ``specs`` (a key,
    or the keys of one spec, which then share its rows); None when the run is gone."""
    project = (data or {}).get("project") or {}
    run = project.get(f"r{index}")
    if not isinstance(run, dict):
        return None
    answers = _json(run.get("sampledHistory")) or []
    out: dict[str, list[Mapping[str, Any]]] = {}
    for keys, rows in zip(specs, answers, strict=False):
        rows = [row for row in _json(rows) or [] if isinstance(row, dict)]
        for key in (keys,) if isinstance(keys, str) else keys:
            out[key] = rows
    return out


def row_step(value: Any) -> int | None:
    """A history row's ``_step`` as the whole number it is, else None. W&B's backend
    sometimes sends ``512.0``, which wandb-core's own history reader takes as 512."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class UnreadRow:
    """The first row of a read whose ``_step`` is not a whole number (``"abc"``, 1.5): the
    read is judged up to ``after``, the last step before it, and goes on from there."""

    key: str  # whose rows held it
    step: Any  # its ``_step`` as W&B sent it (None: missing)
    after: int

    def describe(self) -> str:
        shown = "missing" if self.step is None else _short_json(self.step)
        row = f"the history row after step {self.after}" if self.after >= 0 \
            else "the first history row"
        return f"{row} has _step {shown}, not a whole number"


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryAnswer:
    """One run's read rows as columns. With ``unread`` set, every column ends at
    ``unread.after``: what comes after an unreadable row waits for the next read."""

    series: dict[str, Series]
    newest: float | None  # the newest judged row's time
    unread: UnreadRow | None = None


def series_from_rows(rows_by_key: Mapping[str, Iterable[Mapping[str, Any]]], *,
                     after: int = -1) -> HistoryAnswer:
    """Each key's rows (in the step order W&B answers in) as a column sorted by step, and
    the newest row's time. ``after`` is the step before the read's first: where the read
    stops if its first row cannot be read. A row whose value is not a number is passed
    over; a row whose ``_step`` is not a whole number stops the read (see
    :class:`HistoryAnswer`)."""
    columns: dict[str, list[tuple[int, float, float]]] = {}
    unread = None
    for key, rows in rows_by_key.items():
        points = columns[key] = []
        last = after
        for row in rows:
            step = row_step(row.get("_step"))
            if step is None:
                if unread is None or last < unread.after:
                    unread = UnreadRow(key=key, step=row.get("_step"), after=last)
                break
            last = max(last, step)
            value = number(row.get(key))
            if value is None:
                continue
            when = number(row.get("_timestamp"))
            points.append((step, when if when is not None and math.isfinite(when) else math.nan,
                           value))
    series: dict[str, Series] = {}
    newest = None
    for key, points in columns.items():
        if unread is not None:
            points = [p for p in points if p[0] <= unread.after]
        if not points:
            continue
        points.sort(key=lambda p: p[0])
        times = [p[1] for p in points if not math.isnan(p[1])]
        if times:
            newest = max(times) if newest is None else max(newest, *times)
        steps, whens, values = zip(*points, strict=True)
        series[key] = Series(steps=steps, times=whens, values=values)
    return HistoryAnswer(series=series, newest=newest, unread=unread)


def _short_json(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
