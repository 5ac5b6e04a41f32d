"""What the W&B source reads of a run next, from its cursor: a case table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from builders import snapshot
from runwatch.model import RunState
from runwatch.sources.wandb_cursor import (
    FIRST_READ_ROWS,
    ROWS_PER_RUN,
    RunCursor,
    after_read,
    plan_read,
)
from runwatch.sources.wandb_graphql import RunNode

KEYS = ("loss",)


def node(last: int | None, lines: int, state: RunState = RunState.RUNNING) -> RunNode:
    return RunNode(snapshot=replace(snapshot(state=state, run_id="r"), last_step=last),
                   history_lines=lines)


def cursor(step: int, lines: int, ended: bool = False) -> RunCursor:
    return RunCursor(step=step, lines=lines, ended=ended)


CASES = [
    # (name, cursor before, run now, keys, expected: "skip" | cursor | (first, last, samples))
    ("first seen, short: every row", None, node(99, 100), KEYS, (0, 99, 100)),
    ("first seen, long: about its last 1,000 rows", None, node(9_999, 10_000), KEYS,
     (9_000, 9_999, 1_000)),
    ("first seen, steps 1,000 apart: the last 1,000 rows' steps", None,
     node(99_999_000, 100_000), KEYS, (98_999_010, 99_999_000, 2 * FIRST_READ_ROWS + 100)),
    ("first seen, nothing logged yet", None, node(None, 0), KEYS, cursor(-1, 0)),
    ("new rows after the cursor", cursor(99, 100), node(199, 200), KEYS, (100, 199, 100)),
    ("sparse steps: the whole range, samples by rows", cursor(99_000, 100),
     node(199_000, 200), KEYS, (99_001, 199_000, 300)),
    ("far behind: a slice of ROWS_PER_RUN rows' steps", cursor(-1, 0),
     node(4 * ROWS_PER_RUN - 1, 4 * ROWS_PER_RUN), KEYS, (0, ROWS_PER_RUN - 1, ROWS_PER_RUN)),
    ("nothing new", cursor(99, 100), node(99, 100), KEYS, cursor(99, 100)),
    ("no key to read: skip ahead", cursor(9, 10), node(99, 100), (), cursor(99, 100)),
    ("ended and read to the end: skipped", cursor(99, 100, ended=True),
     node(99, 100, RunState.CRASHED), KEYS, "skip"),
    ("ended, nothing new, not yet final", cursor(99, 100),
     node(99, 100, RunState.CRASHED), KEYS, cursor(99, 100, ended=True)),
    ("ended with rows left: read them", cursor(99, 100), node(149, 150, RunState.FINISHED),
     KEYS, (100, 149, 50)),
]


@pytest.mark.parametrize(("name", "before", "run", "keys", "want"), CASES,
                         ids=[c[0] for c in CASES])
def test_plan_read(name, before, run, keys, want):
    plan = plan_read(before, run, keys)
    if want == "skip":
        assert plan.skip
    elif isinstance(want, RunCursor):
        assert (plan.skip, plan.read, plan.after) == (False, None, want)
    else:
        assert plan.read is not None and plan.after is None
        assert (plan.read.first, plan.read.last, plan.read.samples) == want


def test_samples_cover_every_row_the_range_can_hold():
    plan = plan_read(cursor(99, 100), node(199, 200), KEYS)
    assert plan.read.samples >= plan.read.last - plan.read.first + 1


def test_a_run_far_behind_catches_up_over_ticks_and_then_ends():
    run = node(3 * ROWS_PER_RUN - 1, 3 * ROWS_PER_RUN, RunState.FINISHED)
    before, reads = None, []
    while True:
        plan = plan_read(before, run, KEYS) if before is not None else plan_read(
            cursor(-1, 0), run, KEYS)
        if plan.skip:
            break
        if plan.read is None:
            before = plan.after
            continue
        reads.append((plan.read.first, plan.read.last))
        before = after_read(before or cursor(-1, 0), run, plan.read)
        assert len(reads) < 10
    assert reads == [(0, 9_999), (10_000, 19_999), (20_000, 29_999)]
    assert before == cursor(29_999, 3 * ROWS_PER_RUN, ended=True)
