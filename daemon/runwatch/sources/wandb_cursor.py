"""Where a W&B run's reading stands, and what to read of it next. Pure.

A run's cursor is the last history step read, the ``historyLineCount`` that reading had
reached, how many rows held each key read then, and whether the run's final evaluation is
done. Steps are not rows: runs that log with ``step=tokens`` have steps thousands apart, so
a read is sized in rows — from the run's new ``historyLineCount`` — and turned into a step
range in proportion.

A run seen for the first time (or whose cursor is gone) is read from the start of the
rules' window (:mod:`runwatch.window`), not from its first row: the window's rows and
seconds become steps at the run's own pace (last step over history lines, over runtime).

Keys logged in the same rows are asked in one spec (W&B answers a spec with the rows
holding all its keys): ``historyKeys`` counts each key's rows, and keys with the same count
are taken to share them. The count is checked against what came back — exactly on later
reads, from the counts kept in the cursor — and keys that turn out not to share their rows
are split, read again and kept apart from then on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from runwatch.model import RunSnapshot
from runwatch.sources.wandb_graphql import ROW_KEYS, HistoryRead, RunNode, number
from runwatch.window import DEFAULT_FIRST_READ, Window

ROWS_PER_RUN = 10_000  # a run further behind catches up over several ticks
# Room for rows spread unevenly over a range: ``samples`` is what a range is expected to
# hold, times this, plus a margin — and never more than the range has steps.
SAMPLES_FACTOR = 2
SAMPLES_MARGIN = 100
# A run's pace is its average: a window in seconds reads this much more than the average
# pace says, so a run that sped up still has its window covered.
SECONDS_MARGIN = 1.5


@dataclass(frozen=True, kw_only=True, slots=True)
class RunCursor:
    step: int = -1  # last history step read
    lines: int = 0  # historyLineCount that reading had reached
    ended: bool = False  # the run's final evaluation is done
    rows: Mapping[str, int] = field(default_factory=dict)  # rows holding each key, then
    apart: frozenset[str] = frozenset()  # keys found not to share rows: a spec each

    @classmethod
    def load(cls, text: str | None) -> RunCursor | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(step=int(data["step"]), lines=int(data["lines"]),
                       ended=bool(data.get("ended", False)),
                       rows={str(k): int(v) for k, v in data.get("rows", {}).items()},
                       apart=frozenset(map(str, data.get("apart", ()))))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def dump(self) -> str:
        data: dict = {"step": self.step, "lines": self.lines, "ended": self.ended}
        if self.rows:
            data["rows"] = dict(sorted(self.rows.items()))
        if self.apart:
            data["apart"] = sorted(self.apart)
        return json.dumps(data)


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What a tick does with one run: skip it, evaluate it as it is (``read`` None, the
    cursor ``after`` stored), or read ``read`` first (then :func:`after_read`)."""

    skip: bool = False
    read: HistoryRead | None = None
    after: RunCursor | None = None


def plan_read(before: RunCursor | None, node: RunNode, wanted: tuple[str, ...],
              window: Window = DEFAULT_FIRST_READ) -> Plan:
    """The next read of ``node`` given its cursor and the keys its rules read; ``window``:
    how much of a run's newest history a first read takes."""
    ended = node.snapshot.state.ended
    lines, last = node.history_lines, node.snapshot.last_step
    if before is not None and before.ended and ended and before.lines == lines:
        return Plan(skip=True)  # its final evaluation is done and nothing changed since
    if before is None:
        if last is None:
            return Plan(after=RunCursor(step=-1, lines=lines, ended=ended))
        first = first_step(node, window)
        if first > last:  # a window of nothing: start from here
            return Plan(after=RunCursor(step=last, lines=lines, ended=ended))
        new_lines = min(lines, math.ceil(lines * (last - first + 1) / (last + 1)))
    else:
        first, new_lines = before.step + 1, max(0, lines - before.lines)
    if last is None or last < first:
        step = before.step if before is not None else -1
        return Plan(after=RunCursor(step=step, lines=lines, ended=ended))
    if not wanted:  # nothing to read: nothing to read again later
        return Plan(after=RunCursor(step=last, lines=lines, ended=ended))
    span = last - first + 1
    expected = max(new_lines, 1)
    if expected > ROWS_PER_RUN:  # far behind: this tick reads a proportional slice
        span = max(1, span * ROWS_PER_RUN // expected)
        expected = ROWS_PER_RUN
    samples = min(span, SAMPLES_FACTOR * expected + SAMPLES_MARGIN)
    apart = before.apart if before is not None else frozenset()
    # A spec's answer is checked exactly only when the read starts where the counts kept
    # in the cursor (or the run's start) leave off and reaches the run's newest step.
    whole = first + span - 1 >= last
    exact = whole and (first == 0 if before is None
                       else bool(before.rows) and first == before.step + 1)
    return Plan(read=HistoryRead(run_id=node.snapshot.ref.id, keys=wanted, first=first,
                                 last=first + span - 1, samples=samples,
                                 expected_rows=min(span, expected),
                                 groups=group_keys(wanted, node, apart, exact=exact),
                                 apart=apart))


def first_step(node: RunNode, window: Window) -> int:
    """The step a first read of ``node`` starts at so that it covers ``window``: its rows
    at the run's steps per row, its steps as they are, its seconds at the run's steps per
    second (with :data:`SECONDS_MARGIN`; a run whose pace is unknown is read whole)."""
    last = node.snapshot.last_step
    if last is None or window.full:
        return 0
    start = last + 1  # a window of nothing reads nothing
    if window.rows:
        per_row = (last + 1) / max(1, node.history_lines)
        start = min(start, last + 1 - math.ceil(window.rows * per_row))
    if window.steps:
        start = min(start, last - window.steps)
    if window.seconds:
        runtime = run_seconds(node.snapshot)
        if runtime is None:
            return 0
        start = min(start, last - math.ceil(window.seconds * SECONDS_MARGIN * (last + 1)
                                            / runtime))
    return max(0, start)


def run_seconds(snapshot: RunSnapshot) -> float | None:
    """How long the run has been logging, in seconds: its summary's ``_runtime``, else its
    newest row's time less its start; None if neither is known."""
    runtime = number(snapshot.summary.get("_runtime"))
    if runtime is not None and math.isfinite(runtime) and runtime > 0:
        return runtime
    if snapshot.progress is not None and snapshot.started is not None \
            and snapshot.progress > snapshot.started:
        return snapshot.progress - snapshot.started
    return None


def group_keys(keys: Sequence[str], node: RunNode, apart: frozenset[str] = frozenset(), *,
               exact: bool = True) -> tuple[tuple[str, ...], ...]:
    """``keys`` grouped into specs: the keys that as many rows hold (``_step`` and
    ``_timestamp``: every row) go together; a key whose count is unknown, or found not to
    share its rows (``apart``), goes alone. Unless the answer can be checked ``exact``ly
    (see :func:`doubted_keys`), only keys in every row are grouped — that proves they share
    them —; two keys of equal counts in different rows would come back empty, unnoticed."""
    together: dict[int, list[str]] = {}
    alone: list[tuple[str, ...]] = []
    lines = node.history_lines
    for key in dict.fromkeys(keys):
        count = lines if key in ROW_KEYS else node.key_rows.get(key)
        if key in apart or not count or (not exact and count != lines):
            alone.append((key,))
        else:
            together.setdefault(count, []).append(key)
    return tuple(sorted([tuple(group) for group in together.values()] + alone))


def doubted_keys(before: RunCursor | None, node: RunNode, read: HistoryRead,
                 returned: Sequence[int]) -> frozenset[str]:
    """The keys of the specs of ``read`` that came back with fewer rows than one of their
    keys has in the range (``returned``: rows per spec, in :attr:`HistoryRead.specs_keys`
    order): they do not share their rows, and points would be lost. Exact when the read
    starts at the cursor (or the run's start) and reaches the run's last step; otherwise
    the range's share of each key's rows, estimated, must at least half come back."""
    last = node.snapshot.last_step
    whole = last is None or read.last >= last
    since: Mapping[str, int] | None = None  # rows each key had before the range
    if whole and before is not None and before.rows and read.first == before.step + 1:
        # (a cursor without counts ended a slice: its lines are an estimate too)
        since = {**before.rows, **dict.fromkeys(ROW_KEYS, before.lines)}
    elif whole and before is None and read.first == 0:
        since = {}
    share = min(1.0, read.expected_rows / max(1, node.history_lines))
    doubted: set[str] = set()
    for group, got in zip(read.specs_keys, returned, strict=False):
        if len(group) < 2 or got >= read.samples:  # alone, or thinned: nothing to tell
            continue
        for key in group:
            now = node.history_lines if key in ROW_KEYS else node.key_rows.get(key, 0)
            if since is not None and (before is None or key in since):
                short = got < now - since.get(key, 0)
            else:
                short = now * share >= 2 and got < now * share / 2
            if short:
                doubted.update(group)
                break
    return frozenset(doubted)


def split(read: HistoryRead, keys: frozenset[str]) -> HistoryRead:
    """``read`` again, with ``keys`` each in a spec of its own."""
    apart = read.apart | keys
    groups = tuple(sorted({(key,) for key in keys}
                          | {group for group in read.specs_keys if not keys & set(group)}))
    return replace(read, groups=groups, apart=apart)


def after_read(before: RunCursor | None, node: RunNode, read: HistoryRead) -> RunCursor:
    """The cursor once ``read`` of ``node`` succeeded."""
    last = node.snapshot.last_step if node.snapshot.last_step is not None else read.last
    if read.last >= last:
        rows = {key: node.history_lines if key in ROW_KEYS else node.key_rows[key]
                for key in read.keys if key in ROW_KEYS or key in node.key_rows}
        return RunCursor(step=read.last, lines=node.history_lines,
                         ended=node.snapshot.state.ended, rows=rows, apart=read.apart)
    # A slice of a run far behind: count the lines it covered in proportion (each key's
    # rows are not known at its end: the next read's check is an estimate).
    start = before.lines if before is not None else 0
    first = before.step + 1 if before is not None else read.first
    covered = (read.last - first + 1) / max(1, last - first + 1)
    lines = start + int((node.history_lines - start) * covered)
    return RunCursor(step=read.last, lines=min(lines, node.history_lines), ended=False,
                     apart=read.apart)
