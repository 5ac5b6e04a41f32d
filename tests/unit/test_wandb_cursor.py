"""What the W&B source reads of a run next, from its cursor: a case table."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from builders import snapshot
from runwatch.model import RunState
from runwatch.sources.wandb_cursor import (
    ROWS_PER_RUN,
    SAMPLES_MARGIN,
    RunCursor,
    after_read,
    doubted_keys,
    first_step,
    group_keys,
    plan_read,
    split,
)
from runwatch.sources.wandb_graphql import HistoryRead, RunNode
from runwatch.window import FULL, Window

KEYS = ("loss",)


def node(last: int | None, lines: int, state: RunState = RunState.RUNNING,
         key_rows=None, **summary) -> RunNode:
    snap = replace(snapshot(state=state, run_id="r"), last_step=last, summary=summary)
    return RunNode(snapshot=snap, history_lines=lines,
                   key_rows={"loss": lines} if key_rows is None else key_rows)


def cursor(step: int, lines: int, ended: bool = False, rows=None) -> RunCursor:
    return RunCursor(step=step, lines=lines, ended=ended, rows=rows or {})


CASES = [
    # (name, cursor before, run now, keys, expected: "skip" | cursor | (first, last, samples))
    ("first seen, short: every row", None, node(99, 100), KEYS, (0, 99, 100)),
    ("first seen, long: its last 200 rows (first_read), not its first",
     None, node(999_999, 1_000_000), KEYS, (999_800, 999_999, 200)),
    ("first seen, steps 1,000 apart: the last 200 rows' steps", None,
     node(99_999_999, 100_000), KEYS, (99_800_000, 99_999_999, 2 * 200 + SAMPLES_MARGIN)),
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
    assert before == RunCursor(step=29_999, lines=3 * ROWS_PER_RUN, ended=True,
                               rows={"loss": 3 * ROWS_PER_RUN})


# --- the first read: the window's start ----------------------------------------------------

WINDOWS = [
    # (name, run, window, first step)
    ("rows at one step a row", node(9_999, 10_000), Window(rows=50), 9_950),
    ("rows at ten steps a row", node(99_999, 10_000), Window(rows=50), 99_500),
    ("steps as they are", node(99_999, 10_000), Window(rows=1, steps=20_000), 79_999),
    ("seconds at the run's pace, with the margin", node(9_999, 10_000, _runtime=5_000.0),
     Window(rows=1, seconds=100), 9_999 - 300),
    ("the largest of the three", node(9_999, 10_000, _runtime=10_000.0),
     Window(rows=50, steps=10, seconds=1_000), 9_999 - 1_500),
    ("more than the run has: from its start", node(99, 100), Window(rows=10_000), 0),
    ("full: from its start", node(9_999, 10_000), FULL, 0),
    ("seconds of a run whose pace is unknown: from its start", node(9_999, 10_000),
     Window(rows=1, seconds=60), 0),
]


@pytest.mark.parametrize(("name", "run", "window", "want"), WINDOWS,
                         ids=[c[0] for c in WINDOWS])
def test_first_step_covers_the_window(name, run, window, want):
    assert first_step(run, window) == want


def test_a_first_read_takes_the_window_and_a_later_read_the_new_rows():
    run = node(999_999, 1_000_000)
    first = plan_read(None, run, KEYS, Window(rows=100)).read
    assert (first.first, first.last, first.expected_rows) == (999_900, 999_999, 100)
    later = plan_read(after_read(None, run, first), node(1_000_099, 1_000_100), KEYS,
                      Window(rows=100)).read
    assert (later.first, later.last) == (1_000_000, 1_000_099)


# --- one spec for the keys logged in the same rows ---------------------------------------------


def test_keys_with_as_many_rows_share_a_spec_and_the_rest_go_alone():
    run = node(99, 100, key_rows={"loss": 100, "grad": 100, "eval/acc": 10, "eval/loss": 10,
                                  "lr": 7})
    keys = ("_timestamp", "eval/acc", "eval/loss", "grad", "loss", "lr", "unknown")
    assert group_keys(keys, run) == (("_timestamp", "grad", "loss"), ("eval/acc", "eval/loss"),
                                     ("lr",), ("unknown",))
    assert group_keys(keys, run, frozenset({"grad"})) == (
        ("_timestamp", "loss"), ("eval/acc", "eval/loss"), ("grad",), ("lr",), ("unknown",))


def test_a_read_that_cannot_be_checked_exactly_groups_only_keys_in_every_row():
    """A first read of a window (or a catch-up slice) cannot tell "these keys share rows"
    from "none of their rows is in the range": two keys of equal counts logged in
    different rows would come back empty, unnoticed. So only keys in every row share."""
    run = node(999, 1000, key_rows={"loss": 1000, "grad": 1000, "eval/acc": 2,
                                    "eval/loss": 2})
    keys = ("_timestamp", "eval/acc", "eval/loss", "grad", "loss")
    window = plan_read(None, run, keys, Window(rows=100)).read
    assert window.specs_keys == (("_timestamp", "grad", "loss"), ("eval/acc",),
                                 ("eval/loss",))
    whole = plan_read(None, run, keys, Window(rows=5000)).read  # from step 0: exact
    assert ("eval/acc", "eval/loss") in whole.specs_keys
    later = plan_read(after_read(None, run, whole), node(1099, 1100, key_rows={
        "loss": 1100, "grad": 1100, "eval/acc": 3, "eval/loss": 3}), keys).read
    assert ("eval/acc", "eval/loss") in later.specs_keys  # checked exactly against the cursor


def test_grouped_specs_ask_step_and_time_once():
    read = plan_read(None, node(9, 10, key_rows={"a": 10, "b": 10}), ("_timestamp", "a", "b"),
                     Window(rows=10)).read
    assert [json.loads(s)["keys"] for s in read.specs()] == [["_step", "_timestamp", "a", "b"]]


def _read(groups, first=100, last=199, samples=300, expected=100):
    keys = tuple(k for g in groups for k in g)
    return HistoryRead(run_id="r", keys=keys, first=first, last=last, samples=samples,
                       expected_rows=expected, groups=groups)


DOUBTS = [
    # (name, cursor before, run now, groups, rows per spec, doubted)
    ("same rows: all came back", cursor(99, 100, rows={"a": 100, "b": 100}),
     node(199, 200, key_rows={"a": 200, "b": 200}), (("a", "b"),), [100], set()),
    ("alternate rows, equal counts: nothing came back",
     cursor(99, 100, rows={"a": 50, "b": 50}), node(199, 200, key_rows={"a": 100, "b": 100}),
     (("a", "b"),), [0], {"a", "b"}),
    ("one row short is short", cursor(99, 100, rows={"a": 100, "b": 100}),
     node(199, 200, key_rows={"a": 200, "b": 200}), (("a", "b"), ("c",)), [99, 0], {"a", "b"}),
    ("a key alone is never doubted", cursor(99, 100, rows={"a": 100}),
     node(199, 200, key_rows={"a": 200}), (("a",),), [0], set()),
    ("thinned to samples: cannot tell", cursor(99, 100, rows={"a": 100, "b": 100}),
     node(199, 200, key_rows={"a": 200, "b": 200}), (("a", "b"),), [300], set()),
    ("first read, window: estimated, none came back", None,
     node(199, 200, key_rows={"a": 100, "b": 100}), (("a", "b"),), [0], {"a", "b"}),
    ("first read, window: estimated, most came back", None,
     node(199, 200, key_rows={"a": 100, "b": 100}), (("a", "b"),), [40], set()),
    ("first read, window: a rare key the window may not hold (such keys are not grouped"
     " on a first read of a window: see below)", None,
     node(199, 200, key_rows={"a": 2, "b": 2}), (("a", "b"),), [0], set()),
]


@pytest.mark.parametrize(("name", "before", "run", "groups", "returned", "want"), DOUBTS,
                         ids=[c[0] for c in DOUBTS])
def test_a_spec_that_came_back_short_is_doubted(name, before, run, groups, returned, want):
    assert doubted_keys(before, run, _read(groups), returned) == want


def test_a_first_read_of_the_whole_run_is_checked_exactly():
    run = node(99, 100, key_rows={"a": 100, "b": 100})
    read = _read((("a", "b"),), first=0, last=99, expected=100)
    assert doubted_keys(None, run, read, [99]) == {"a", "b"}
    assert doubted_keys(None, run, read, [100]) == set()


def test_doubted_keys_are_split_and_stay_apart():
    read = split(_read((("a", "b"), ("c", "d"))), frozenset({"a", "b"}))
    assert read.specs_keys == (("a",), ("b",), ("c", "d"))
    cursor_after = after_read(None, node(199, 200, key_rows={"a": 200}), read)
    assert cursor_after.apart == {"a", "b"}
    assert RunCursor.load(cursor_after.dump()) == cursor_after
    again = plan_read(cursor_after, node(299, 300, key_rows={"a": 300, "b": 300}), ("a", "b"))
    assert again.read.specs_keys == (("a",), ("b",))
