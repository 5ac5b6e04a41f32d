"""The engine's lifecycle: pending → firing after `for:`, resolve, run end, summaries."""

from __future__ import annotations

import dataclasses
import math

import pytest

from builders import T0, rule, series, snapshot
from runwatch.engine import SEEN_EVERY, evaluate
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import (
    AlertState,
    AlertStatus,
    RunRef,
    RunState,
    Severity,
    evolve,
    fingerprint,
)

N, P, F, R = AlertStatus.INACTIVE, AlertStatus.PENDING, AlertStatus.FIRING, AlertStatus.RESOLVED


def run_ticks(r, ticks):
    """Feed (now, snapshot) pairs through the engine; return the status after each tick and
    every transition as (tick index, previous, new)."""
    previous, statuses, transitions = {}, [], []
    for i, (now, snap) in enumerate(ticks):
        result = evaluate([r], snap, previous, now, DEFAULT_ALIASES)
        previous |= {a.fingerprint: a for a in result.alerts}  # what a store would keep
        statuses.append(next(iter(previous.values())).status if previous else None)
        transitions += [(i, t.previous, t.status) for t in result.transitions]
    return statuses, transitions, previous


def grad(values, start_step=0, state=RunState.RUNNING, heartbeat=T0):
    return snapshot({"grad_norm": series(values, start_step=start_step)}, state=state,
                    heartbeat=heartbeat)


def test_fires_at_once_without_for_and_resolves_when_it_clears():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, severity="critical")
    statuses, transitions, _ = run_ticks(r, [
        (T0, grad([1, 2])),
        (T0 + 60, grad([11], 2)),
        (T0 + 120, grad([], 3)),  # nothing new: keeps firing
        (T0 + 180, grad([3], 3)),
        (T0 + 240, grad([4], 4)),
    ])
    assert statuses == [N, F, F, R, R]
    assert transitions == [(1, N, F), (3, F, R)]


def test_for_duration_goes_through_pending():
    r = rule(kind="heartbeat", older_than="10m", **{"for": "5m"})
    stale = snapshot(heartbeat=T0 - 11 * 60)
    statuses, transitions, _ = run_ticks(r, [
        (T0, stale),  # stale since T0 - 60
        (T0 + 120, stale),  # held 3 min
        (T0 + 300, stale),  # held 6 min
    ])
    assert statuses == [P, P, F]
    assert transitions == [(0, N, P), (2, P, F)]


def test_pending_that_clears_goes_back_to_inactive_without_a_transition():
    r = rule(kind="heartbeat", older_than="10m", **{"for": "30m"})
    statuses, transitions, _ = run_ticks(r, [
        (T0, snapshot(heartbeat=T0 - 11 * 60)),
        (T0 + 60, snapshot(heartbeat=T0 + 30)),
    ])
    assert statuses == [P, N]
    assert transitions == [(0, N, P)]


def test_for_steps_counts_the_run_s_own_steps():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, **{"for": "50 steps"})
    statuses, _, previous = run_ticks(r, [
        (T0, grad([11] * 30)),  # steps 0..29 above
        (T0 + 60, grad([11] * 30, 30)),  # 30..59: held 59 steps
    ])
    assert statuses == [P, F]
    (alert,) = previous.values()
    assert alert.since_step == 0 and alert.fired_at == T0 + 60


def test_a_firing_alert_resolves_when_its_run_ends():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    statuses, _, _ = run_ticks(r, [
        (T0, grad([11])),
        (T0 + 60, grad([12], 1, state=RunState.FINISHED)),
    ])
    assert statuses == [F, R]


def test_news_on_a_run_s_final_tick_fires_and_resolves():
    r = rule(kind="nonfinite", metric="loss")
    snap = snapshot({"loss": series([1.0, math.nan])}, state=RunState.FAILED)
    statuses, transitions, _ = run_ticks(r, [(T0, snap)])
    # fired and, the run being over, resolved with it: nothing stays firing for a run
    # that will never be read again
    assert statuses == [R] and transitions == [(0, N, F), (0, F, R)]


def test_state_rule_keeps_firing_after_the_end():
    r = rule(kind="state", severity="critical")
    crashed = snapshot(state=RunState.CRASHED)
    statuses, transitions, _ = run_ticks(r, [(T0, crashed), (T0 + 60, crashed)])
    assert statuses == [F, F] and transitions == [(0, N, F)]


def test_a_resolved_alert_can_fire_again():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    statuses, transitions, _ = run_ticks(r, [
        (T0, grad([11])), (T0 + 60, grad([1], 1)), (T0 + 120, grad([12], 2)),
    ])
    assert statuses == [F, R, F]
    assert transitions == [(0, N, F), (1, F, R), (2, R, F)]


def test_rules_that_do_not_match_leave_no_state():
    r = rule(kind="state", match={"project": "other"})
    result = evaluate([r], snapshot(state=RunState.CRASHED), {}, T0, DEFAULT_ALIASES)
    assert result.alerts == () and result.transitions == ()


def test_alert_carries_identity_value_and_rendered_summary():
    r = rule(name="grad-norm-exploding", kind="threshold", metric="grad_norm", op=">",
             value=10, severity="critical", labels={"team": "llm"},
             summary="{run}: grad norm {value:.3g} > {threshold:g} at step {step}")
    snap = grad([3, 42.123, 5])
    result = evaluate([r], snap, {}, T0, DEFAULT_ALIASES)
    (t,) = result.transitions
    a = t.alert
    assert a.fingerprint == fingerprint("grad-norm-exploding", snap.ref)
    assert (a.rule, a.severity, a.metric, a.value, a.step) == (
        "grad-norm-exploding", "critical", "grad_norm", 42.123, 1)
    assert a.summary == "llama-7b: grad norm 42.1 > 10 at step 1"
    assert a.labels == {"team": "llm"} and a.fired_at == T0 and a.first_seen == T0


def test_default_summary_formats_ages_as_durations():
    r = rule(kind="heartbeat", older_than="30m")
    result = evaluate([r], snapshot(heartbeat=T0 - 5400), {}, T0, DEFAULT_ALIASES)
    assert result.alerts[0].summary == "no heartbeat for 1h30m (run running)"


def test_summary_with_a_spec_that_does_not_fit_falls_back():
    r = rule(kind="state", summary="value {value:.3g} at {step}; run {run:.3f} {run!r:>12}")
    result = evaluate([r], snapshot(state=RunState.CRASHED), {}, T0, DEFAULT_ALIASES)
    assert result.alerts[0].summary == "value n/a at n/a; run llama-7b   'llama-7b'"


@pytest.mark.parametrize("template", ["{run.__class__}", "{config[secret]}", "{0}", "{nope}"])
def test_summary_template_cannot_reach_beyond_documented_fields(template):
    with pytest.raises(ValueError, match="template"):
        rule(kind="state", summary=template)


def test_memory_survives_between_ticks_through_the_previous_states():
    r = rule(kind="threshold", metric="loss", op=">", value=5, mode="mean", window=4)
    _, _, previous = run_ticks(r, [(T0, snapshot({"loss": series([9, 9])}))])
    result = evaluate([r], snapshot({"loss": series([1, 1], start_step=2)}), previous,
                      T0 + 60, DEFAULT_ALIASES)
    assert result.alerts[0].value == pytest.approx(5.0)
    assert result.alerts[0].status is R


def test_a_pending_alert_never_fires_once_its_run_has_ended():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, **{"for": "10 steps"})
    statuses, transitions, _ = run_ticks(r, [
        (T0, grad([11] * 3)),
        (T0 + 60, grad([11] * 3, 3, state=RunState.FINISHED)),
    ])
    assert statuses == [P, N] and transitions == [(0, N, P)]


def test_editing_a_rule_under_the_same_name_starts_its_memory_afresh():
    window = rule(name="g", kind="threshold", metric="grad_norm", op=">", value=10,
                  mode="mean", window=3)
    _, _, previous = run_ticks(window, [(T0, grad([1, 2, 3]))])
    plateau = rule(name="g", kind="plateau", metric="grad_norm", patience="2 steps")
    result = evaluate([plateau], grad([5], 3), previous, T0 + 60, DEFAULT_ALIASES)
    (alert,) = result.alerts
    assert alert.memory == [plateau.memory_tag, [5.0, 3, T0]]


def test_check_memory_is_stored_with_its_rule_s_tag():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, mode="mean", window=2)
    _, _, previous = run_ticks(r, [(T0, grad([1, 2, 3]))])
    (alert,) = previous.values()
    assert alert.memory == [r.memory_tag, [2.0, 3.0]]


def test_a_quiet_alert_that_stays_quiet_is_not_rewritten():
    hb = rule(kind="heartbeat", older_than="30m")
    grad_rule = rule(name="g", kind="threshold", metric="grad_norm", op=">", value=10)
    snap = grad([1, 2])
    first = evaluate([hb, grad_rule], snap, {}, T0, DEFAULT_ALIASES)
    assert len(first.alerts) == 2  # new: stored once
    previous = {a.fingerprint: a for a in first.alerts}
    idle = evaluate([hb, grad_rule], dataclasses.replace(snap, history={}), previous, T0 + 60,
                    DEFAULT_ALIASES)
    assert idle.alerts == ()  # nothing new: nothing to write
    # New points that leave it inactive: not rebuilt for the point it read, nothing to hold
    # or write — until one to two SEEN_EVERY after it was last renewed, when its values and
    # last_seen are brought up to date (what garbage collection reads).
    new_points = evaluate([hb, grad_rule], grad([3], 2), previous, T0 + 120, DEFAULT_ALIASES)
    assert new_points.alerts == ()
    later = T0 + 2 * SEEN_EVERY
    renewed = evaluate([hb, grad_rule], grad([4], 3, heartbeat=later), previous, later,
                       DEFAULT_ALIASES)
    assert {a.rule: (a.step, a.last_seen) for a in renewed.alerts} == {
        "r": (3, later), "g": (3, later)}
    assert renewed.alerts[1].value == 4.0


def test_an_idle_alert_keeps_its_moving_memory_and_is_renewed_when_its_run_ends():
    window = rule(name="w", kind="threshold", metric="grad_norm", op=">", value=10,
                  mode="mean", window=2)
    first = evaluate([window], grad([1, 2]), {}, T0, DEFAULT_ALIASES)
    previous = {a.fingerprint: a for a in first.alerts}
    (moved,) = evaluate([window], grad([3], 2), previous, T0 + 60, DEFAULT_ALIASES).alerts
    assert moved.memory == [window.memory_tag, [2.0, 3.0]]
    assert (moved.step, moved.last_seen) == (1, T0)  # only the memory moved
    previous = {moved.fingerprint: moved}
    (ended,) = evaluate([window], grad([4], 3, state=RunState.FINISHED), previous, T0 + 120,
                        DEFAULT_ALIASES).alerts
    assert (ended.run_state, ended.step, ended.last_seen) == (RunState.FINISHED, 3, T0 + 120)


@pytest.mark.parametrize(("end", "why"), [
    (grad([3], 1), "condition cleared"),
    (grad([12], 1, state=RunState.KILLED), "run ended: killed"),
    (grad([12], 1, state=RunState.FINISHED), "run ended: finished"),
    (grad([12], 1, state=RunState.CRASHED), "run ended: crashed"),
])
def test_a_resolution_says_why(end, why):
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    _, _, previous = run_ticks(r, [(T0, grad([11])), (T0 + 60, end)])
    (alert,) = previous.values()
    assert (alert.status, alert.resolution) == (R, why)


def test_firing_again_forgets_the_old_resolution_and_retiring_says_so():
    from runwatch.engine import retire

    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    _, _, previous = run_ticks(r, [
        (T0, grad([11])), (T0 + 60, grad([1], 1)), (T0 + 120, grad([12], 2))])
    (alert,) = previous.values()
    assert (alert.status, alert.resolution) == (F, "")
    (gone,) = retire([alert], {"other-rule"}, T0 + 180).alerts
    assert (gone.status, gone.resolution) == (R, "rule removed")
    (moved,) = retire([alert], (), T0 + 180, reason="source removed").alerts
    assert moved.resolution == "source removed"


def test_an_alert_names_the_step_where_it_began_the_worst_and_the_newest():
    from runwatch.config.models import default_rules_path
    from runwatch.config.rules import load_rules

    exploding = next(r for r in load_rules([default_rules_path()], __import__("pathlib").Path(
        ".")).rules if r.name == "grad-norm-exploding")
    values = [1.0] * 35 + [12.0, 30.0, 80.0, 150.0, 220.0, 300.0, 390.0, 410.0, 450.0, 420.0]
    _, _, previous = run_ticks(exploding, [(T0, grad(values))])
    (alert,) = previous.values()
    assert (alert.since_step, alert.first_value) == (35, 12.0)  # where it began
    assert (alert.step, alert.value) == (43, 450.0)  # the worst point
    assert (alert.latest_step, alert.latest_value) == (44, 420.0)  # the newest
    assert alert.summary == "grad norm > 10 since step 35, now 420 (worst 450 at step 43)"
    # the next tick: still above; where it began stays, the newest moves on
    result = evaluate([exploding], grad([380.0], 45), previous, T0 + 60, DEFAULT_ALIASES)
    (later,) = result.alerts
    assert (later.since_step, later.first_value, later.latest_value) == (35, 12.0, 380.0)
    assert later.summary == "grad norm > 10 since step 35, now 380 (worst 380 at step 45)"


def test_memory_written_before_first_values_were_kept_still_reads():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10, **{"for": "3 steps"})
    fp = fingerprint("r", grad([1]).ref)
    snap = grad([12, 13, 14], 5)
    before = {fp: dataclasses.replace(
        evaluate([r], grad([12], 4), {}, T0, DEFAULT_ALIASES).alerts[0],
        memory=[r.memory_tag, [4, T0]])}  # [step, time]: no value remembered
    (after,) = evaluate([r], snap, before, T0 + 60, DEFAULT_ALIASES).alerts
    assert after.status == F and after.since_step == 4


# --- a tick that brought no point: history-only checks are not asked ------------------------

QUIET_RULES = [
    rule(kind="threshold", metric="grad_norm", op=">", value=10),
    rule(kind="threshold", metric="grad_norm", op=">", value=10, **{"for": "10m"}),
    rule(kind="threshold", metric="grad_norm", op=">", value=10, mode="mean", window=5),
    rule(kind="nonfinite", metric="grad_norm"),
    rule(kind="spike", metric="grad_norm", window=20, min_points=5),
    rule(kind="plateau", metric="grad_norm", patience="5 steps"),
]


def always_asked(r):
    """The same rule, evaluated on every tick (what the engine did before it skipped)."""
    twin = type(f"Always{type(r).__name__}", (type(r),), {"history_only": False})
    return twin.model_construct(**{name: getattr(r, name) for name in type(r).model_fields})


def quiet_variants(alert, r):
    """Stored states a quiet tick may meet: as left, held, resolved, edited, renamed."""
    yield alert
    yield dataclasses.replace(alert, status=P)
    yield dataclasses.replace(alert, status=F)
    yield dataclasses.replace(alert, status=R)
    yield dataclasses.replace(alert, memory=None)
    yield dataclasses.replace(alert, memory=["another-shape", [1.0]])
    yield dataclasses.replace(alert, severity="critical")
    yield dataclasses.replace(alert, labels={"team": "x"})
    yield dataclasses.replace(alert, run=dataclasses.replace(alert.run, name="renamed"))


@pytest.mark.parametrize("r", QUIET_RULES, ids=lambda r: f"{r.kind}-{getattr(r, 'mode', '')}"
                                                     f"-{r.hold or ''}")
@pytest.mark.parametrize("values", [[1, 2, 3, 2, 1, 2, 3], [1, 1, 1, 1, 1, 50], [1, 2, math.nan]])
def test_a_quiet_tick_skips_only_what_would_not_change(r, values):
    previous = {}
    for i, chunk in enumerate((values[:4], values[4:])):
        previous |= {a.fingerprint: a for a in evaluate(
            [r], grad(chunk, 4 * i), previous, T0 + 60 * i, DEFAULT_ALIASES).alerts}
    (alert,) = previous.values()
    quiet = snapshot(heartbeat=T0 + 200)  # no point of any key
    assert not quiet.history
    for before in quiet_variants(alert, r):
        stored = {before.fingerprint: before}
        for now in (T0 + 300, T0 + 3600):
            assert evaluate([r], quiet, stored, now, DEFAULT_ALIASES) == evaluate(
                [always_asked(r)], quiet, stored, now, DEFAULT_ALIASES)


def test_a_quiet_tick_over_an_untouched_alert_evaluates_nothing():
    r = rule(kind="threshold", metric="grad_norm", op=">", value=10)
    result = evaluate([r], grad([1, 2]), {}, T0, DEFAULT_ALIASES)
    stored = {a.fingerprint: a for a in result.alerts}
    quiet = evaluate([r], snapshot(heartbeat=T0 + 60), stored, T0 + 60, DEFAULT_ALIASES)
    assert quiet.alerts == () and quiet.transitions == ()


# --- a run with nothing new: time and state checks are asked again only when due --------

TIMED_RULES = [
    rule(kind="heartbeat", older_than="10m"),
    rule(kind="heartbeat", older_than="10m", **{"for": "5m"}),
    rule(kind="progress", older_than="10m", factor=3),
    rule(kind="state"),
    rule(kind="state", states=["finished"], match={"tags": ["prod"]}),
]


def counted(r, calls):
    """The same rule, counting the times it is asked."""
    def evaluate(self, ctx):
        calls.append(ctx.now)
        return type(r).evaluate(self, ctx)

    twin = type(f"Counted{type(r).__name__}", (type(r),), {"evaluate": evaluate})
    return twin.model_construct(**{name: getattr(r, name) for name in type(r).model_fields})


def idle_ticks(spacing=90):
    """A run that logs rows, goes quiet (heartbeat still beating, then not), is re-tagged,
    logs again, and ends: (now, snapshot) every ``spacing`` seconds, 120 times. Quiet stretches hand
    the engine the very same snapshot object, as a source does for an unchanged run."""
    rows = snapshot({"loss": series([1, 2, 3], interval=30)}, heartbeat=T0 + 60,
                    tags=["prod"])
    quiet = snapshot(heartbeat=T0 + 60, progress=T0 + 60, tags=["prod"])
    beating = [snapshot(heartbeat=T0 + 60 + 90 * i, progress=T0 + 60, tags=["prod"])
               for i in range(120)]
    retagged = snapshot(heartbeat=T0 + 1500, progress=T0 + 60, tags=["dev"])
    ended = snapshot(heartbeat=T0 + 1500, progress=T0 + 60, tags=["prod"],
                     state=RunState.FINISHED)
    for i in range(120):
        now = T0 + 90 + spacing * i
        if i == 0:
            yield now, rows
        elif i < 10:
            yield now, beating[i]
        elif i < 40:
            yield now, quiet
        elif i < 50:
            yield now, retagged
        elif i < 90:
            yield now, quiet
        else:
            yield now, ended


@pytest.mark.parametrize("spacing", [90, 1800])  # 3 hours; 60 (an idle alert renewed)
@pytest.mark.parametrize("r", TIMED_RULES, ids=lambda r: f"{r.kind}-{r.hold or ''}")
def test_quiet_runs_skip_time_and_state_checks_only_until_their_answer_could_change(
        r, spacing):
    asked_memo, asked_always = [], []
    with_memo, always = counted(r, asked_memo), counted(r, asked_always)
    previous_memo, previous_always, quiet_until = {}, {}, {}
    for now, snap in idle_ticks(spacing):
        memo = evaluate([with_memo], snap, previous_memo, now, DEFAULT_ALIASES,
                        quiet_until=quiet_until)
        plain = evaluate([always], snap, previous_always, now, DEFAULT_ALIASES)
        assert memo == plain, now - T0
        previous_memo |= {a.fingerprint: a for a in memo.alerts}
        previous_always |= {a.fingerprint: a for a in plain.alerts}
        assert previous_memo == previous_always
    assert len(asked_memo) < len(asked_always) - 10  # quiet ticks were not asked
    if spacing == 90:  # and the statuses went somewhere: not a test of an alert that
        # never moved
        assert {a.status for a in previous_always.values()} != {N} or r.kind == "state"
    else:  # and over 60 hours an alert that stayed inactive was renewed
        assert max(a.last_seen for a in previous_always.values()) > T0 + SEEN_EVERY


def test_a_changed_stored_state_or_rule_is_asked_again():
    r = rule(kind="heartbeat", older_than="10m")
    calls: list[float] = []
    counting = counted(r, calls)
    quiet = snapshot(heartbeat=T0)
    quiet_until: dict = {}
    first = evaluate([counting], quiet, {}, T0 + 60, DEFAULT_ALIASES, quiet_until=quiet_until)
    stored = {a.fingerprint: a for a in first.alerts}
    evaluate([counting], quiet, stored, T0 + 120, DEFAULT_ALIASES, quiet_until=quiet_until)
    assert len(calls) == 2 and quiet_until  # asked, found unchanged: remembered
    evaluate([counting], quiet, stored, T0 + 180, DEFAULT_ALIASES, quiet_until=quiet_until)
    assert len(calls) == 2  # not asked
    reloaded = {fp: dataclasses.replace(a) for fp, a in stored.items()}  # a store reload
    evaluate([counting], quiet, reloaded, T0 + 240, DEFAULT_ALIASES, quiet_until=quiet_until)
    assert len(calls) == 3
    edited = counted(rule(kind="heartbeat", older_than="10m"), calls)
    evaluate([edited], quiet, stored, T0 + 300, DEFAULT_ALIASES, quiet_until=quiet_until)
    assert len(calls) == 4
    late = evaluate([counting], quiet, stored, T0 + 601, DEFAULT_ALIASES,
                    quiet_until=quiet_until)
    assert len(calls) == 5 and late.alerts[0].status == F  # due: asked, and it fires


def test_evolve_makes_what_dataclasses_replace_makes():
    """The engine's evolve (a faster replace for AlertState) sets every field alike, and
    refuses a field AlertState has not."""
    before = AlertState(fingerprint="fp", rule="r", severity=Severity.WARNING,
                        run=RunRef(source="s", id="r1", name="n"), first_seen=1.0,
                        last_seen=2.0, metric="loss", value=1.5, step=10,
                        run_state=RunState.RUNNING, labels={"a": "b"}, memory=["t", [1.0]])
    for changes in ({}, {"value": None, "step": 11, "memory": None},
                    {f.name: getattr(before, f.name) for f in dataclasses.fields(before)}):
        after = evolve(before, **changes)
        assert after == dataclasses.replace(before, **changes)
        assert all(getattr(after, f.name) is getattr(dataclasses.replace(before, **changes),
                                                      f.name)
                   for f in dataclasses.fields(before))
    with pytest.raises(TypeError, match="no field 'colour'"):
        evolve(before, colour="red")
    with pytest.raises(dataclasses.FrozenInstanceError):
        evolve(before).value = 2.0  # type: ignore[misc]
