"""Case tables for every condition kind: rule × snapshot × memory → verdict."""

from __future__ import annotations

import math

import pytest

from builders import T0, rule, series, snapshot
from runwatch.checks import Context
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import RunState

NAN, INF = math.nan, math.inf


def verdict(r, snap, *, now=T0, memory=None, holding=False):
    return r.evaluate(Context(snapshot=snap, now=now, aliases=DEFAULT_ALIASES, memory=memory,
                              holding=holding))


# --- threshold -------------------------------------------------------------------------

THRESHOLD_CASES = [
    # (rule fields, values, expected active, expected value, expected step)
    ({"op": ">", "value": 10}, [1, 2, 3], False, 3.0, 2),
    ({"op": ">", "value": 10}, [1, 50, 12, 3], True, 50.0, 1),  # worst crossing point
    ({"op": ">", "value": 10}, [10, 10], False, 10.0, 1),  # strict
    ({"op": ">=", "value": 10}, [10, 9], True, 10.0, 0),
    ({"op": "<", "value": 1e-4}, [0.5, 1e-6, 0.3], True, 1e-6, 1),
    ({"op": "<", "value": 1e-4}, [0.5, 0.3], False, 0.3, 1),
    ({"op": ">", "value": 10}, [NAN, 11], True, 11.0, 1),  # NaN first must not hide 11
    ({"op": ">", "value": 10}, [NAN, NAN], None, None, None),  # nothing judgeable
    ({"op": "<", "value": 1e-4}, [1.0, -INF], False, 1.0, 0),  # nonfinite's business
    ({"op": ">", "value": 10}, [INF, 12], True, 12.0, 1),
    ({"op": ">", "value": 10, "mode": "last"}, [50, 3], False, 3.0, 1),
    ({"op": ">", "value": 10, "mode": "last"}, [3, 50], True, 50.0, 1),
    ({"op": "==", "value": 0}, [1, 0, 1], True, 0.0, 1),
    ({"op": "!=", "value": 0}, [0, 0], False, 0.0, 1),
    ({"op": ">", "value": 10, "mode": "mean", "window": 3}, [1, 1, 30, 30], True, 61 / 3, 3),
    ({"op": ">", "value": 10, "mode": "mean", "window": 3}, [30, 1, 1, 1], False, 1.0, 3),
    ({"op": ">", "value": 10, "mode": "max", "window": 2}, [30, 1, 1], False, 1.0, 2),
    ({"op": "<", "value": 0.5, "mode": "min", "window": 10}, [0.9, 0.4, 0.9], True, 0.4, 2),
]


@pytest.mark.parametrize(("fields", "values", "active", "value", "step"), THRESHOLD_CASES)
def test_threshold(fields, values, active, value, step):
    r = rule(kind="threshold", metric="grad_norm", **fields)
    v = verdict(r, snapshot({"train/grad_norm": series(values)}))
    assert v.active is active
    assert v.metric == "train/grad_norm"
    assert v.step == step
    assert v.value == (None if value is None else pytest.approx(value))


def test_threshold_without_new_points_decides_nothing():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    assert verdict(r, snapshot({"train/grad_norm": series([])})).active is None
    assert verdict(r, snapshot({})).active is None  # metric never logged


def test_threshold_window_is_carried_in_memory_across_ticks():
    r = rule(kind="threshold", metric="loss", op=">", value=5, mode="mean", window=4)
    first = verdict(r, snapshot({"loss": series([9, 9])}))
    assert first.active is True and first.memory == [9.0, 9.0]
    second = verdict(r, snapshot({"loss": series([1, 1], start_step=2)}), memory=first.memory)
    assert second.value == pytest.approx(5.0) and second.active is False
    third = verdict(r, snapshot({"loss": series([1] * 10, start_step=4)}),
                    memory=second.memory)
    assert len(third.memory) == 4  # bounded


def test_a_nonfinite_point_neither_fires_nor_clears_a_threshold():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, mode="last")
    fired = verdict(r, snapshot({"grad_norm": series([50])}))
    after = verdict(r, snapshot({"grad_norm": series([INF, NAN], start_step=1)}),
                    memory=fired.memory, holding=True)
    assert after.active is None and after.memory == fired.memory


def test_window_hysteresis_holds_until_the_resolve_value():
    r = rule(kind="threshold", metric="loss", op=">", value=5, resolve_value=3, mode="mean",
             window=2)
    v = verdict(r, snapshot({"loss": series([4, 4])}), holding=False)
    assert v.active is False  # mean 4 does not cross 5 ...
    v = verdict(r, snapshot({"loss": series([4, 4])}), holding=True)
    assert v.active is True  # ... but holds a firing alert above 3


def test_threshold_hysteresis_holds_until_the_resolve_value():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, resolve_value=8,
             mode="last")
    fired = verdict(r, snapshot({"grad_norm": series([12])}))
    assert fired.active is True
    still = verdict(r, snapshot({"grad_norm": series([9], start_step=1)}),
                    memory=fired.memory, holding=True)
    assert still.active is True  # 9 is under 10 but above 8
    clear = verdict(r, snapshot({"grad_norm": series([7], start_step=2)}),
                    memory=still.memory, holding=True)
    assert clear.active is False


def test_threshold_with_hold_reports_the_trailing_run_across_ticks():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, **{"for": "3 steps"})
    first = verdict(r, snapshot({"grad_norm": series([1, 11, 12])}))
    assert (first.active, first.since_step) == (True, 1)
    second = verdict(r, snapshot({"grad_norm": series([13, 14], start_step=3)}),
                     memory=first.memory)
    assert (second.active, second.since_step) == (True, 1)  # the run goes on
    broken = verdict(r, snapshot({"grad_norm": series([1], start_step=5)}),
                     memory=second.memory)
    assert broken.active is False and broken.memory is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"op": ">", "value": 10, "resolve_value": 12}, "resolve_value 12.0 must be <= value 10.0"),
    ({"op": "<", "value": 1, "resolve_value": 0.5}, "resolve_value 0.5 must be >= value 1.0"),
    ({"op": "==", "value": 1, "resolve_value": 0.5}, "resolve_value needs an ordering op"),
])
def test_threshold_rejects_hysteresis_on_the_wrong_side(fields, message):
    with pytest.raises(ValueError, match=message):
        rule(kind="threshold", metric="x", **fields)


# --- nonfinite -------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "active", "step"), [
    ([1.0, 2.0], False, 1),
    ([1.0, NAN, 2.0], True, 1),
    ([INF], True, 0),
    ([-INF, 1.0], True, 0),
    ([1e308, 1e308], False, 1),  # a sum that overflows is not a non-finite point
])
def test_nonfinite(values, active, step):
    v = verdict(rule(kind="nonfinite", metric="loss"), snapshot({"train/loss": series(values)}))
    assert (v.active, v.step) == (active, step)


def test_nonfinite_reads_through_every_loss_alias():
    r = rule(kind="nonfinite", metric="loss")
    for key in DEFAULT_ALIASES["loss"]:
        v = verdict(r, snapshot({key: series([NAN])}))
        assert v.active is True and v.metric == key


def test_alias_prefers_the_first_key_the_run_logs():
    r = rule(kind="nonfinite", metric="loss")
    both = snapshot({"train/loss": series([1.0]), "loss": series([NAN])})
    assert verdict(r, both).metric == "train/loss"


# --- heartbeat, state ------------------------------------------------------------------

@pytest.mark.parametrize(("state", "heartbeat_age", "active"), [
    (RunState.RUNNING, 31 * 60, True),
    (RunState.RUNNING, 29 * 60, False),
    (RunState.FINISHED, 99 * 60, False),
    (RunState.CRASHED, 99 * 60, False),
    (RunState.RUNNING, None, None),
])
def test_heartbeat(state, heartbeat_age, active):
    hb = None if heartbeat_age is None else T0 - heartbeat_age
    v = verdict(rule(kind="heartbeat", older_than="30m"),
                snapshot(state=state, heartbeat=hb))
    assert v.active is active
    if active:
        assert v.age == heartbeat_age and v.since == hb + 1800


@pytest.mark.parametrize(("states", "state", "active"), [
    (None, RunState.CRASHED, True),
    (None, RunState.FAILED, True),
    (None, RunState.KILLED, True),
    (None, RunState.FINISHED, False),
    (None, RunState.RUNNING, False),
    (["finished"], RunState.FINISHED, True),
])
def test_state(states, state, active):
    fields = {"kind": "state"} | ({"states": states} if states else {})
    assert verdict(rule(**fields), snapshot(state=state)).active is active


# --- spike -----------------------------------------------------------------------------

def test_spike_fires_on_a_robust_outlier_only():
    r = rule(kind="spike", metric="loss", k=6, window=20, min_points=10)
    calm = [1.0 + 0.01 * (i % 5) for i in range(30)]
    assert verdict(r, snapshot({"loss": series(calm)})).active is False
    v = verdict(r, snapshot({"loss": series([*calm, 5.0, 1.01])}))
    assert (v.active, v.value, v.step) == (True, 5.0, 30)
    assert v.threshold == 6


def test_spike_needs_min_points_and_carries_its_window():
    r = rule(kind="spike", metric="loss", window=20, min_points=10)
    early = verdict(r, snapshot({"loss": series([1, 1, 1, 100])}))
    assert early.active is False  # too few points to judge
    calm = verdict(r, snapshot({"loss": series([1.0, 1.1, 0.9] * 10)}))
    assert len(calm.memory) == 20
    later = verdict(r, snapshot({"loss": series([9.0], start_step=30)}), memory=calm.memory)
    assert later.active is True


def test_spike_direction_down_ignores_upward_jumps():
    r = rule(kind="spike", metric="loss", direction="down", min_points=5)
    base = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]
    assert verdict(r, snapshot({"loss": series([*base, 50.0])})).active is False
    assert verdict(r, snapshot({"loss": series([*base, -50.0])})).active is True


# --- plateau ---------------------------------------------------------------------------

def test_plateau_by_steps():
    r = rule(kind="plateau", metric="loss", patience="5 steps", min_delta=0.01)
    improving = verdict(r, snapshot({"loss": series([5, 4, 3, 2, 1, 0.5])}))
    assert improving.active is False
    flat = verdict(r, snapshot({"loss": series([0.5, 0.499, 0.5, 0.5, 0.5], start_step=6)}),
                   memory=improving.memory)
    assert (flat.active, flat.value, flat.step) == (True, 0.5, 5)


def test_plateau_by_duration_and_direction_max():
    r = rule(kind="plateau", metric="eval_accuracy", patience="1h", direction="max")
    v = verdict(r, snapshot({"eval/accuracy": series([0.5, 0.6, 0.6, 0.6], interval=1800)}))
    assert v.active is True and v.step == 1  # best at step 1, 1h of no gain since


# --- absent, progress ------------------------------------------------------------------

def test_absent_counts_from_the_last_point_or_the_run_start():
    r = rule(kind="absent", metric="eval_loss", older_than="1h")
    never = verdict(r, snapshot({}, started=T0 - 7200))
    assert never.active is True and never.age == 7200
    recent = verdict(r, snapshot({"eval_loss": series([1.0], start_time=T0 - 60)}))
    assert recent.active is False and recent.memory == T0 - 60
    later = verdict(r, snapshot({}), now=T0 + 3600, memory=recent.memory)
    assert later.active is True
    ended = verdict(r, snapshot({}, state=RunState.FINISHED), now=T0 + 9999,
                    memory=recent.memory)
    assert ended.active is False


def test_progress_stalls_on_both_bounds():
    r = rule(kind="progress", older_than="30m", factor=10)
    rows = series([0] * 20, start_time=T0 - 20 * 10 - 3600, interval=10)  # rows every 10 s
    times = {"_timestamp": rows}
    hung = verdict(r, snapshot(times, heartbeat=T0))  # heartbeat fresh, rows an hour old
    assert hung.active is True and hung.threshold == 1800
    fresh = verdict(r, snapshot(times, heartbeat=T0), now=rows.times[-1] + 60)
    assert fresh.active is False


def test_progress_respects_a_slow_run_s_own_pace():
    r = rule(kind="progress", older_than="30m", factor=10)
    slow = series([0] * 5, start_time=T0 - 5 * 600, interval=600)  # a row every 10 min
    v = verdict(r, snapshot({"_timestamp": slow}), now=slow.times[-1] + 40 * 60)
    assert v.active is False and v.threshold == 6000  # 10 × 10 min beats 30 min
    now = slow.times[-1] + 101 * 60
    v = verdict(r, snapshot({"_timestamp": slow}, heartbeat=now - 15), now=now)  # alive
    assert v.active is True


def test_progress_keeps_its_window_when_no_rows_arrive():
    r = rule(kind="progress", older_than="30m", window=5)
    first = verdict(r, snapshot({"_timestamp": series([0] * 8)}))
    assert len(first.memory) == 5
    again = verdict(r, snapshot({}, progress=first.memory[-1], heartbeat=T0 + 3500),
                    memory=first.memory, now=T0 + 3600)
    assert again.active is True and again.memory == first.memory


# --- where a replay may let a quiet rule sleep ------------------------------------------

_QUIET_POINTS = [1.0] * 300


@pytest.mark.parametrize(("fields", "at", "value"), [
    ({"kind": "threshold", "op": ">", "value": 10}, 250, 11.0),
    ({"kind": "threshold", "op": ">", "value": 10}, 0, 50.0),
    ({"kind": "threshold", "op": ">=", "value": 10}, 299, 10.0),
    ({"kind": "threshold", "op": "<", "value": 1e-4}, 130, 1e-6),
    ({"kind": "threshold", "op": ">", "value": 10}, 64, 12.0),  # a stretch's first point
    ({"kind": "threshold", "op": ">", "value": 10}, 63, 12.0),  # and its last
    ({"kind": "nonfinite"}, 200, NAN),
    ({"kind": "nonfinite"}, 5, -INF),
])
def test_a_quiet_rule_wakes_at_the_first_point_that_might_stir_it(fields, at, value):
    r = rule(metric="loss", **fields)
    values = [*_QUIET_POINTS[:at], value, *_QUIET_POINTS[at + 1:], value]
    assert r.wakes_at(values, 0) == at
    assert r.wakes_at(values, at + 1) == len(values) - 1  # the next one
    assert r.wakes_at(_QUIET_POINTS, 17) == len(_QUIET_POINTS)  # none


def test_a_threshold_wakes_no_later_than_a_crossing_behind_a_nan_or_an_infinity():
    r = rule(kind="threshold", metric="loss", op=">", value=10)
    for bad in (NAN, INF, -INF):  # max() may hide a point behind a NaN: never past it
        values = [*_QUIET_POINTS[:100], bad, 11.0, *_QUIET_POINTS[:100]]
        woke = r.wakes_at(values, 0)
        assert woke in (100, 101)
        assert all(not v > 10 for v in values[:woke])


@pytest.mark.parametrize("fields", [
    {"kind": "threshold", "op": ">", "value": 10, "mode": "mean"},  # a window: can't tell
    {"kind": "threshold", "op": "==", "value": 10},
    {"kind": "spike"},
])
def test_kinds_that_cannot_tell_wake_at_once(fields):
    assert rule(metric="loss", **fields).wakes_at(_QUIET_POINTS, 7) == 7


def test_heartbeat_and_state_rest_until_their_answer_could_change():
    hb = rule(kind="heartbeat", older_than="10m")
    assert hb.rests_until(snapshot(heartbeat=T0 + 5)) == T0 + 5 + 600
    assert hb.rests_until(snapshot(heartbeat=None)) == -INF  # nothing to age yet
    assert hb.rests_until(snapshot(state=RunState.CRASHED)) == -INF
    assert rule(kind="state").rests_until(snapshot()) == INF  # until the run's state moves


def test_progress_rests_until_its_newest_row_is_older_than_older_than():
    r = rule(kind="progress", older_than="30m", factor=10, window=5)
    snap = snapshot({"_timestamp": series([0] * 8)}, progress=T0 + 70)
    assert r.rests_until(snap) == T0 + 70 + 1800
    assert r.rests_until(snapshot(state=RunState.FINISHED, progress=T0)) == -INF
    # Its memory after any ticks is its newest rows' times, however the ticks split them.
    times = series([0] * 8).times
    one = verdict(r, snapshot({"_timestamp": series([0] * 8)}))
    assert r.memory_of(times) == one.memory == list(times[-5:])
    with pytest.raises(NotImplementedError):
        rule(kind="heartbeat", older_than="5m").memory_of(times)


# --- match -----------------------------------------------------------------------------

@pytest.mark.parametrize(("match", "active"), [
    ({}, True),
    ({"project": "pre*"}, True),
    ({"project": ["rl-*", "eval"]}, False),
    ({"run": "llama-*"}, True),
    ({"run": "abc123"}, True),  # the id matches too
    ({"tags": ["prod"]}, True),
    ({"tags": ["prod", "gpu"]}, False),
    ({"group": "sweep-?"}, True),
    ({"config": {"optimizer.name": "adamw"}}, True),
    ({"config": {"lr": 0.1}}, False),
    ({"config": {"missing": None}}, False),
])
def test_match(match, active):
    r = rule(kind="state", match=match)
    snap = snapshot(tags=["prod"], group="sweep-1",
                    config={"optimizer": {"name": "adamw"}, "lr": 0.001})
    assert r.match.matches(snap) is active


# --- rules that could never fire are refused at load -----------------------------------

@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "heartbeat", "older_than": "10m", "for": "5 steps"}, "holds by time only"),
    ({"kind": "progress", "older_than": "30m", "for": "5 steps"}, "holds by time only"),
    ({"kind": "state", "for": "10m"}, "cannot have for"),
    ({"kind": "threshold", "metric": "x", "op": ">", "value": "nan"}, "finite number"),
    ({"kind": "heartbeat", "older_than": "inf"}, "finite, positive"),
    ({"kind": "spike", "metric": "x", "window": 5, "min_points": 10}, "exceeds window"),
    ({"kind": "progress", "older_than": "30m", "window": 2}, "greater than or equal to 3"),
    ({"kind": "state", "summary": "{state!x}"}, "unknown conversion"),
])
def test_rules_that_could_never_fire_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        rule(**fields)


def test_spike_on_a_constant_window_ignores_a_change_in_the_fourth_digit():
    r = rule(kind="spike", metric="loss_scale", min_points=5)
    assert verdict(r, snapshot({"loss_scale": series([65536] * 10 + [65537])})).active is False
    assert verdict(r, snapshot({"loss_scale": series([65536] * 10 + [131072])})).active is True


def test_progress_does_not_judge_a_run_before_its_first_row():
    r = rule(kind="progress", older_than="30m")
    assert verdict(r, snapshot({}, started=T0 - 7200, progress=None)).active is None


def test_progress_leaves_a_dead_process_to_the_heartbeat_rule():
    r = rule(kind="progress", older_than="30m")
    rows = series([0] * 5, start_time=T0 - 3600)
    assert verdict(r, snapshot({"_timestamp": rows}, heartbeat=T0 - 60)).active is True
    assert verdict(r, snapshot({"_timestamp": rows}, heartbeat=T0 - 3500)).active is False
    assert verdict(r, snapshot({"_timestamp": rows}, heartbeat=None)).active is True
    # A process that died right after its last row: its heartbeat is a flush newer than
    # the row, and both pass the limit within seconds of each other; it is never "hung".
    last = rows.times[-1]
    for now in (last + 1800.5, last + 1805, last + 1814):
        assert verdict(r, snapshot({"_timestamp": rows}, heartbeat=last + 15),
                       now=now).active is False
    assert verdict(r, snapshot({"_timestamp": rows}, heartbeat=T0 - 899)).active is True
