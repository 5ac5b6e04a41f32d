"""What is known of one run, and how a read of its log fills that in.

``RunLog`` is everything the ``rundir`` source has learned about one run from its
``.wandb`` log up to a byte offset; its cursor text carries it from one tick (and one
process) to the next. ``LogRead`` is one incremental read: it folds the records after
that offset into a copy of the state and collects the new history points. Finding the
logs and deciding when to read them is ``rundir``'s part.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

from runwatch.model import CodeAlert, RunRef, RunState, Series
from runwatch.sources import wandbfile, wandbitems
from runwatch.sources.firstread import Head
from runwatch.sources.wandbfile import (
    ALERT,
    CONFIG,
    EXIT,
    HISTORY,
    METRIC,
    OUTPUT,
    OUTPUT_RAW,
    PREEMPTING,
    RUN,
    STATS,
    STEP_SUMMARY,
    SUMMARY,
    Corruption,
    LogReader,
    intact,
)

# The record kinds a LogRead consumes: what the reader is asked for.
KINDS = frozenset({
    HISTORY, SUMMARY, STEP_SUMMARY, METRIC, STATS, OUTPUT, OUTPUT_RAW, RUN, CONFIG, EXIT,
    PREEMPTING, ALERT,
})
# Kept per read of what the training code raised: this many titles, and of each title its
# first raises and its newest (a loop raising one every step, throttled by its wait, is
# told by those; another title is never crowded out by it).
MAX_CODE_TITLES = 1000
MAX_RAISES_PER_TITLE = 10
_TEXT_LIMIT = 4000  # characters of a raised alert's title or text kept
_CURSOR_VERSION = 1
MAX_SHAPES = 256  # row shapes a run keeps (RunLog.shapes); a real run logs a few
_COMPILED_TARGETS = 64  # step_columns takes at most this many wanted keys (MAX_TARGETS)
_STEP = b"_step"
_TIMESTAMP = b"_timestamp"
# A step summary waiting to be folded: the reader's Record (kind, data, start, end,
# unchecked, seq, offset).
_Pending = tuple[int, bytes, int, int, int, int, int]
_SEQ = 5


# --- per-run state, which the cursor serialises ------------------------------------------


@dataclass(kw_only=True, slots=True)
class RunLog:
    """Everything known about one run after reading its log up to ``offset``.

    Mutable while a read fills it in; once published with a cursor it is only copied.
    """

    key: str
    log: str
    offset: int = 0
    size: int = -1
    mtime_ns: int = -1
    # The log's identity (st_dev, st_ino) when read: another file at the same path is
    # read from the start. -1: not known (a cursor written before it was kept).
    dev: int = -1
    ino: int = -1
    run_id: str = ""
    name: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[bytes, bytes] = field(default_factory=dict)  # raw key -> raw JSON
    keys: dict[bytes, str] = field(default_factory=dict)  # raw key -> text
    exit_code: int | None = None
    preempting: bool = False
    last_step: int | None = None
    progress: float | None = None
    heartbeat: float | None = None  # from records only
    started: float | None = None
    corrupt_at: int | None = None
    told_dead: bool = False  # taken as crashed for its silence, and told so (rundir.py)
    # Its rows come in a few shapes: each row's keys, in order -> (key set, bytes of the
    # items that are not values), so a shape seen before costs no set arithmetic. Every
    # key of a shape here is in ``keys``. Kept in memory only (a cursor starts afresh).
    shapes: dict[bytes, tuple[frozenset[bytes], int]] = field(default_factory=dict)
    # Derived views, rebuilt lazily; shared with the snapshots already handed out.
    _summary_view: SummaryView | None = None
    _keys_view: frozenset[str] | None = None
    _ref: RunRef | None = None

    @property
    def state(self) -> RunState:
        if self.exit_code is None:
            return RunState.PREEMPTED if self.preempting else RunState.RUNNING
        if self.exit_code == 0:
            return RunState.FINISHED
        if self.preempting:
            return RunState.PREEMPTED
        if self.exit_code == 255:
            return RunState.KILLED
        return RunState.FAILED

    def copy(self) -> RunLog:
        new = RunLog(key=self.key, log=self.log)
        for name in RunLog.__slots__:
            setattr(new, name, getattr(self, name))
        new.summary = dict(self.summary)
        new.keys = dict(self.keys)
        new.shapes = dict(self.shapes)
        return new

    def ref(self, source: str) -> RunRef:
        if self._ref is None:
            self._ref = RunRef(
                source=source,
                id=self.run_id or id_from_dir(self.key),
                name=self.name,
                project=self.project,
                entity=self.entity,
                location=self.key,
            )
        return self._ref

    def summary_view(self) -> Mapping[str, Any]:
        """The summary as text keys and JSON values, decoded when first looked at: most
        ticks' snapshots are judged without it."""
        if self._summary_view is None:
            self._summary_view = SummaryView(self.summary)
        return self._summary_view

    def keys_view(self) -> frozenset[str]:
        if self._keys_view is None:
            self._keys_view = frozenset(self.keys.values())
        return self._keys_view

    def to_cursor(self) -> str:
        return json.dumps({
            "v": _CURSOR_VERSION,
            "log": self.log,
            "offset": self.offset,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "dev": self.dev,
            "ino": self.ino,
            "id": self.run_id,
            "name": self.name,
            "project": self.project,
            "entity": self.entity,
            "group": self.group,
            "tags": list(self.tags),
            "config": self.config,
            # Raw bytes as latin-1 text: a lossless round trip through JSON.
            "summary": {k.decode("latin-1"): v.decode("latin-1") for k, v in self.summary.items()},
            "keys": [k.decode("latin-1") for k in self.keys],
            "exit_code": self.exit_code,
            "preempting": self.preempting,
            "last_step": self.last_step,
            "told_dead": self.told_dead,
            "progress": self.progress,
            "heartbeat": self.heartbeat,
            "started": self.started,
            "corrupt_at": self.corrupt_at,
        }, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, key: str, log: str, text: str) -> RunLog | None:
        """The state a cursor describes, or None if it is not one of ours for this log."""
        try:
            data = json.loads(text)
            if data.get("v") != _CURSOR_VERSION or data.get("log") != log:
                return None
            keys = [k.encode("latin-1") for k in data["keys"]]
            return cls(
                key=key,
                log=log,
                offset=int(data["offset"]),
                size=int(data["size"]),
                mtime_ns=int(data["mtime_ns"]),
                dev=int(data.get("dev", -1)),
                ino=int(data.get("ino", -1)),
                run_id=data["id"],
                name=data["name"],
                project=data["project"],
                entity=data["entity"],
                group=data["group"],
                tags=tuple(data["tags"]),
                config=data["config"],
                summary={
                    k.encode("latin-1"): v.encode("latin-1") for k, v in data["summary"].items()
                },
                keys={k: wandbitems.key_text(k) for k in keys},
                exit_code=data["exit_code"],
                preempting=bool(data["preempting"]),
                last_step=data["last_step"],
                progress=data["progress"],
                heartbeat=data["heartbeat"],
                started=data["started"],
                corrupt_at=data["corrupt_at"],
                told_dead=bool(data.get("told_dead", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            return None


class SummaryView(Mapping[str, Any]):
    """A run's summary (raw key -> raw JSON) seen as text keys and values, decoded on
    first use. The raw mapping is a published RunLog's, which no read changes (a read
    works on a copy)."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: Mapping[bytes, bytes]):
        self._raw = raw
        self._decoded: dict[str, Any] | None = None

    def _view(self) -> dict[str, Any]:
        if self._decoded is None:
            view = {}
            for raw, value in self._raw.items():
                text = wandbitems.key_text(raw)
                if not text.startswith("_wandb"):
                    view[text] = wandbitems.json_value(value)
            self._decoded = view
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __repr__(self) -> str:
        return repr(self._view())


def id_from_dir(path: str) -> str:
    return os.path.basename(path).rsplit("-", 1)[-1]


# --- one read of a log, which fills the state in -----------------------------------------


class LogRead:
    """One read of one log: folds its records into a run's state and collects new points.

    Summary records are the expensive part of a log: wandb-core writes one per logged
    step (the reader's STEP_SUMMARY, right before the step's history record) holding the
    summary of every key in that row that has one. So of the step summaries for rows
    with the same keys only the newest matters: they stay unparsed, the newest per key
    set, and are folded in file order at the end. Anything that could break that rule
    (any other summary record, a metric definition) folds what is deferred first.

    The reader hands step summaries out unchecked: one is CRC-verified only when folded,
    so the superseded ones cost nothing. One found damaged then is skipped and noted in
    ``damaged``.
    """

    __slots__ = (
        "changed", "columns", "damaged", "deferred", "last_step", "last_time", "output",
        "raises", "rows_steps", "rows_times", "run", "stats", "wanted",
    )

    def __init__(self, run: RunLog, wanted: Container[str]):
        self.run = run
        self.wanted = wanted
        # text key -> (indexes into rows_*, values) of its new points
        self.columns: dict[str, tuple[list[int], list[float]]] = {}
        self.rows_steps: list[int] = []
        self.rows_times: list[float] = []
        # row keys -> the newest step summary for such rows, as _Pending
        self.deferred: dict[frozenset[bytes], _Pending] = {}
        # records skipped: step summaries that failed their checksum, records that do
        # not parse (intact framing and checksum, but not the message they claim to be)
        self.damaged: list[Corruption] = []
        self.stats: bytes | None = None
        self.output: tuple[Any, bytes] | None = None
        self.changed = False
        self.last_step = run.last_step
        self.last_time = run.progress
        # raised by the training code: per title, (position in the log, alert)
        self.raises: dict[str, list[tuple[int, CodeAlert]]] = {}

    def consume(self, reader: LogReader | Head) -> None:
        # The per-record loop; everything it touches per row is a local. A history row
        # is only taken apart here: its columns are read out a batch at a time.
        run = self.run
        keys = run.keys
        known = keys.keys()
        wanted = self.wanted
        summary = run.summary
        targets: dict[str, list[bytes]] = {}  # wanted text key -> its raw keys
        for raw, text in keys.items():
            if text in wanted:
                targets.setdefault(text, []).append(raw)
        deferred = self.deferred
        findall = wandbitems.find_items
        join = b"".join
        names_of = b"\n".join  # unambiguous: no key the pattern finds holds a control byte
        update_items = wandbitems.items
        pending: _Pending | None = None  # a step summary, until its row comes
        shapes = run.shapes
        compiled = wandbfile.compiled
        history_row = compiled.history_row if compiled is not None else None
        steps = compiled.steps if compiled is not None else None
        step_columns = getattr(compiled, "step_columns", None)
        for batch in reader.batches():
            rows: list[dict[bytes, bytes]] = []  # the batch's history rows, raw key -> JSON
            step_fields: dict[int, int | None] = {}  # row -> step.num, for rows without _step
            i, count = 0, len(batch)
            while i < count:
                if steps is not None and pending is None:
                    # The compiled loop below for the common (summary, row) pairs, up to
                    # the first record it leaves to it: straight into the columns when
                    # each wanted key has one raw form, else as rows.
                    if step_columns is not None and len(targets) <= _COMPILED_TARGETS and all(
                            len(raws) == 1 for raws in targets.values()):
                        if rows:  # the rows before go first, in order
                            self._add_rows(rows, step_fields, targets)
                            rows, step_fields = [], {}
                        columns = {raws[0]: self._column(text) for text, raws in targets.items()}
                        before = len(self.rows_steps)
                        i = step_columns(batch, i, shapes, deferred, _STEP, _TIMESTAMP,
                                         columns, self.rows_steps, self.rows_times)
                        if len(self.rows_steps) > before:
                            self.last_step, self.last_time = (self.rows_steps[-1],
                                                              self.rows_times[-1])
                    else:
                        i = steps(batch, i, shapes, rows, deferred, _STEP)
                    if i == count:
                        break
                record = batch[i]
                kind, data, start, end, _, seq, at = record
                i += 1
                if kind == HISTORY:
                    # wandbitems.history_items, inlined: this runs once per logged step.
                    plain = history_row(data, start, end) if history_row else None
                    if plain is not None:  # compiled, and the record checked as it went
                        row, names = plain
                    else:
                        row = dict(findall(data, start, end))
                        names = names_of(row)
                    shape = shapes.get(names)
                    fresh = shape is None  # a shape not seen before may hold new keys
                    if fresh:
                        if len(shapes) >= MAX_SHAPES:  # a run whose every row differs:
                            shapes.clear()  # a cache, not a record; kept from growing
                        shape = shapes[names] = (frozenset(row), 7 * len(row) + len(join(row)))
                    keyset, framing = shape
                    # The items must tile the record; what is left must be the step field,
                    # `12 L 08 <varint>` (the compiled path checked that already).
                    rest = 0 if plain is not None else (
                        end - start - framing - len(join(row.values())))
                    tail = end - rest
                    if rest and not (
                        1 < rest < 13 and data[tail] == 18 and data[tail + 1] == rest - 2
                    ):
                        try:
                            row, step_fields[len(rows)] = wandbitems.parse_history(
                                data[start:end]
                            )
                        except DecodeError:
                            self._undecodable(at)
                            continue
                        keyset, fresh = frozenset(row), True
                    elif _STEP not in row:
                        step_fields[len(rows)] = wandbitems.history_step(data, start, end)
                    rows.append(row)
                    if fresh and not known >= keyset:
                        for raw in keyset - known:
                            text = keys[raw] = wandbitems.key_text(raw)
                            if text in wanted:
                                targets.setdefault(text, []).append(raw)
                        run._keys_view = None
                    if pending is not None:
                        if seq == pending[_SEQ] + 1:
                            # `pending` is this row's summary: defer it under the row's keys.
                            deferred[keyset] = pending
                        else:
                            self._fold_deferred()
                            self._fold_pending(pending)
                        pending = None
                elif kind == ALERT:
                    if rows:  # the rows before it first: its step is the newest of them
                        self._add_rows(rows, step_fields, targets)
                        rows, step_fields = [], {}
                    try:
                        self._alert(pb.AlertRecord.FromString(data[start:end]), at)
                    except DecodeError:
                        self._undecodable(at)
                elif kind == STEP_SUMMARY:
                    if pending is not None:
                        self._fold_deferred()
                        self._fold_pending(pending)
                    pending = record
                elif kind in (SUMMARY, METRIC):
                    # In file order after everything deferred; a metric definition may
                    # change which keys later step summaries carry, so it is a barrier too.
                    if pending is not None:
                        self._fold_deferred()
                        self._fold_pending(pending)
                        pending = None
                    self._fold_deferred()
                    if kind == METRIC:
                        continue
                    updates = update_items(data, start, end)
                    if updates is None:
                        self._fold_summary(data, start, end)
                    else:
                        summary.update(updates)
                        run._summary_view = None
                else:
                    try:
                        self._other(kind, data[start:end])
                    except DecodeError:
                        self._undecodable(at)
            if rows:
                self._add_rows(rows, step_fields, targets)
        if pending is not None:
            self._fold_deferred()
            self._fold_pending(pending)

    def _alert(self, record: Any, at: int) -> None:
        title = record.title[:_TEXT_LIMIT]
        kept = self.raises.get(title)
        if kept is None:
            if len(self.raises) >= MAX_CODE_TITLES:
                return
            kept = self.raises[title] = []
        wait = record.wait_duration / 1000 if record.wait_duration > 0 else 60.0  # (SDK's)
        raised = (at, CodeAlert(title=title, text=record.text[:_TEXT_LIMIT],
                                level=record.level or "INFO", wait=wait, step=self.last_step,
                                time=self._now()))
        if len(kept) < MAX_RAISES_PER_TITLE:
            kept.append(raised)
        else:
            kept[-1] = raised

    def _now(self) -> float | None:
        """The log's time at this point of the read: the newest of the rows, system stats
        and console output read so far (only the newest record of each timed kind counts),
        the reads before and the run's start. An alert record, which carries no time,
        takes it; at the end of a read it is the run's heartbeat."""
        times = [self.last_time, self.run.heartbeat, self.run.started]
        with contextlib.suppress(DecodeError):
            if self.stats is not None:
                times.append(_seconds(pb.StatsRecord.FromString(self.stats).timestamp))
            if self.output is not None:
                kind, data = self.output
                times.append(_seconds(kind.FromString(data).timestamp))
        present = [t for t in times if t is not None]
        return max(present) if present else None

    @property
    def alerts(self) -> list[CodeAlert]:
        """What the training code raised, in log order (as kept: see ``MAX_CODE_TITLES``)."""
        return [a for _, a in sorted(r for kept in self.raises.values() for r in kept)]

    def _undecodable(self, at: int) -> None:
        self.damaged.append(Corruption(offset=at, reason="undecodable record", skipped=True))

    def _add_rows(
        self,
        rows: list[dict[bytes, bytes]],
        step_fields: dict[int, int | None],
        targets: dict[str, list[bytes]],
    ) -> None:
        """Append the steps, times and wanted values of ``rows`` to the new points.

        A column at a time, at C speed when every row holds a plain number; rows with
        a value missing or in another form take the slower loops.
        """
        steps = None if step_fields else _all_of(int, _STEP, rows)
        if steps is None:
            raws = [row.get(_STEP) for row in rows]
            steps = _steps_column(raws, step_fields, self.last_step)
        times = _all_of(float, _TIMESTAMP, rows)
        if times is None:
            times = _times_column([row.get(_TIMESTAMP) for row in rows], self.last_time)
        first = len(self.rows_steps)
        self.rows_steps += steps
        self.rows_times += times
        self.last_step, self.last_time = steps[-1], times[-1]
        for text, raw_keys in targets.items():
            indexes, values = self._column(text)
            raw, *others = raw_keys
            numbers = None if others else _all_of(float, raw, rows)
            if numbers is not None:
                values += numbers
                indexes += range(first, first + len(rows))
            else:
                raws = [row.get(raw) for row in rows]
                for other in others:  # the same text under two raw forms: the later one wins
                    raws = [row.get(other, value) for row, value in zip(rows, raws, strict=True)]
                for index, value in enumerate(raws, first):
                    if value is not None and (number := wandbitems.number(value)) is not None:
                        indexes.append(index)
                        values.append(number)

    def _column(self, text: str) -> tuple[list[int], list[float]]:
        column = self.columns.get(text)
        if column is None:
            column = self.columns[text] = ([], [])
        return column

    def _fold_summary(
        self, data: bytes, start: int, end: int, unchecked: int = -1, at: int = 0
    ) -> None:
        """Apply a summary record; ``unchecked``/``at`` as the reader gave them."""
        if unchecked >= 0 and not intact(data, unchecked):
            self.damaged.append(Corruption(offset=at, reason="bad CRC", skipped=True))
            return
        summary = self.run.summary
        updates = wandbitems.items(data, start, end)
        if updates is None:
            try:
                updates, removed = wandbitems.parse_updates(data[start:end], pb.SummaryRecord)
            except DecodeError:
                return  # a summary update lost is no reason to stop reading the run
            for raw in removed:
                summary.pop(raw, None)
        summary.update(updates)
        self.run._summary_view = None

    def _fold_pending(self, record: _Pending) -> None:
        _, data, start, end, unchecked, _, at = record
        self._fold_summary(data, start, end, unchecked, at)

    def _fold_deferred(self) -> None:
        if self.deferred:
            for pending in sorted(self.deferred.values(), key=_seq):
                self._fold_pending(pending)
            self.deferred.clear()

    def _other(self, kind: int, data: bytes) -> None:
        run = self.run
        if kind == STATS:
            self.stats = data
        elif kind == OUTPUT_RAW:
            self.output = (pb.OutputRawRecord, data)
        elif kind == OUTPUT:
            self.output = (pb.OutputRecord, data)
        elif kind == RUN:
            _apply_run(run, pb.RunRecord.FromString(data))
            self.changed = True
        elif kind == CONFIG:
            _apply_config(run, pb.ConfigRecord.FromString(data))
            self.changed = True
        elif kind == EXIT:
            run.exit_code = pb.RunExitRecord.FromString(data).exit_code
            self.changed = True
        elif kind == PREEMPTING:
            run.preempting = True
            self.changed = True

    def finish(self) -> None:
        """Settle what the records read imply: deferred summaries, progress, heartbeat."""
        self._fold_deferred()
        run = self.run
        if self.rows_steps:
            run.last_step, run.progress = self.last_step, self.last_time
            self.changed = True
        run.heartbeat = self._now()  # the newest time any record read so far carries

    def series(self) -> dict[str, Series]:
        history: dict[str, Series] = {}
        if not self.rows_steps:
            return history
        all_steps, all_times = tuple(self.rows_steps), tuple(self.rows_times)
        for text, (rows, values) in self.columns.items():
            if len(values) == len(all_steps):  # in every row: share the row columns
                steps, times = all_steps, all_times
            elif len(values) == 1:
                steps, times = (all_steps[rows[0]],), (all_times[rows[0]],)
            elif values:
                pick = operator.itemgetter(*rows)
                steps, times = pick(all_steps), pick(all_times)
            else:
                continue
            history[text] = Series(steps=steps, times=times, values=tuple(values))
        history["_timestamp"] = Series(steps=all_steps, times=all_times, values=all_times)
        return history


_seq = operator.itemgetter(_SEQ)


def _float_or(raw: bytes, default: float | None) -> float | None:
    number = wandbitems.number(raw)
    return default if number is None else number


def _int_or(raw: bytes, default: int | None) -> int | None:
    number = wandbitems.number(raw)
    return int(number) if number is not None and math.isfinite(number) else default


def _all_of(convert: Any, key: bytes, rows: list[dict[bytes, bytes]]) -> list[Any] | None:
    """Every row's value of ``key`` converted, or None if one is missing or not plain."""
    try:
        return list(map(convert, map(operator.itemgetter(key), rows)))
    except (KeyError, TypeError, ValueError):
        return None


def _steps_column(
    raws: list[bytes | None], step_fields: dict[int, int | None], step: int | None
) -> list[int | None]:
    """Row steps: ``_step``, else the record's ``step.num``, else one past the last."""
    steps = []
    for index, value in enumerate(raws):
        if value is not None:
            try:
                step = int(value)
            except ValueError:
                step = _int_or(value, step)
        else:
            field = step_fields.get(index)
            step = field if field is not None else (step or 0) + 1
        steps.append(step)
    return steps


def _times_column(raws: list[bytes | None], when: float | None) -> list[float | None]:
    """Row times: ``_timestamp``, else the time of the row before."""
    times = []
    for value in raws:
        if value is not None:
            try:
                when = float(value)
            except ValueError:
                when = _float_or(value, when)
        times.append(when)
    return times


def _seconds(stamp: Any) -> float | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.seconds + stamp.nanos / 1e9


def _apply_run(run: RunLog, record: Any) -> None:
    run.run_id = record.run_id or run.run_id
    run.name = record.display_name or run.name
    run.project = record.project or run.project
    run.entity = record.entity or run.entity
    run.group = record.run_group or run.group
    run.tags = tuple(record.tags) or run.tags
    if record.HasField("start_time"):
        run.started = _seconds(record.start_time)
    if record.HasField("config"):
        _apply_config(run, record.config)
    run._ref = None


def _apply_config(run: RunLog, record: Any) -> None:
    config = dict(run.config)
    for item in record.update:
        path = list(item.nested_key) or [item.key]
        if path[0] == "_wandb":
            continue
        value = wandbitems.json_value(item.value_json.encode())
        target = config
        for part in path[:-1]:
            nested = target.get(part)
            target[part] = nested = dict(nested) if isinstance(nested, dict) else {}
            target = nested
        target[path[-1]] = value
    for item in record.remove:
        path = list(item.nested_key) or [item.key]
        target = config
        for part in path[:-1]:
            nested = target.get(part)
            if not isinstance(nested, dict):
                break
            target[part] = nested = dict(nested)
            target = nested
        else:
            target.pop(path[-1], None)
    run.config = config
