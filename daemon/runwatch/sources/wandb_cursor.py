"""Where a W&B run's reading stands, and what to read of it next. Pure.

A run's cursor is the last history step read, the ``historyLineCount`` that reading had
reached, and whether the run's final evaluation is done. Steps are not rows: runs that
log with ``step=tokens`` have steps thousands apart, so a read is sized in rows — from the
run's new ``historyLineCount`` — and turned into a step range in proportion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from runwatch.sources.wandb_graphql import HistoryRead, RunNode

ROWS_PER_RUN = 10_000  # a run further behind catches up over several ticks
FIRST_READ_ROWS = 1_000  # a run first seen is read from about this many rows before its newest
# Room for rows spread unevenly over a range: ``samples`` is what a range is expected to
# hold, times this, plus a margin — and never more than the range has steps.
SAMPLES_FACTOR = 2
SAMPLES_MARGIN = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class RunCursor:
    step: int = -1  # last history step read
    lines: int = 0  # historyLineCount that reading had reached
    ended: bool = False  # the run's final evaluation is done

    @classmethod
    def load(cls, text: str | None) -> RunCursor | None:
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What a tick does with one run: skip it, evaluate it as it is (``read`` None, the
    cursor ``after`` stored), or read ``read`` first (then :func:`after_read`)."""

    skip: bool = False
    read: HistoryRead | None = None
    after: RunCursor | None = None


def plan_read(before: RunCursor | None, node: RunNode, wanted: tuple[str, ...]) -> Plan:
    """The next read of ``node`` given its cursor and the keys its rules read."""
    ended = node.snapshot.state.ended
    lines, last = node.history_lines, node.snapshot.last_step
    if before is not None and before.ended and ended and before.lines == lines:
        return Plan(skip=True)  # its final evaluation is done and nothing changed since
    if before is None:
        if last is None:
            return Plan(after=RunCursor(step=-1, lines=lines, ended=ended))
        new_lines = min(lines, FIRST_READ_ROWS)
        first = 0 if lines <= FIRST_READ_ROWS else max(
            0, last + 1 - -(-(last + 1) * FIRST_READ_ROWS // max(lines, 1)))
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
    return Plan(read=HistoryRead(run_id=node.snapshot.ref.id, keys=wanted, first=first,
                                 last=first + span - 1, samples=samples,
                                 expected_rows=min(span, expected)))


def after_read(before: RunCursor | None, node: RunNode, read: HistoryRead) -> RunCursor:
    """The cursor once ``read`` of ``node`` succeeded."""
    last = node.snapshot.last_step if node.snapshot.last_step is not None else read.last
    if read.last >= last:
        return RunCursor(step=read.last, lines=node.history_lines,
                         ended=node.snapshot.state.ended)
    # A slice of a run far behind: count the lines it covered in proportion.
    start = before.lines if before is not None else 0
    first = before.step + 1 if before is not None else read.first
    covered = (read.last - first + 1) / max(1, last - first + 1)
    lines = start + int((node.history_lines - start) * covered)
    return RunCursor(step=read.last, lines=min(lines, node.history_lines), ended=False)
