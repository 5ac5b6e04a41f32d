"""The pure report functions (analysis/): trends, pace and ETA, the verdict and the rules'
agreement, compare's alignment and winner, watch's order — on plain values."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from builders import T0, rule, series, snapshot
from runwatch.analysis import Health, Liveness, characterize, compare, watch
from runwatch.analysis.curves import Direction, step_rate, thin, trend, value_at
from runwatch.analysis.runconfig import MISSING, differences, highlights, total_steps
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertState, AlertStatus, RunState, Series, Severity, fingerprint

RULES = load_rules([default_rules_path()], Path(".")).rules


def falling(n: int, start: float = 2.0) -> list[float]:
    return [start / (1 + 0.05 * i) for i in range(n)]


# --- curves ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "direction"), [
    (falling(100), Direction.IMPROVING),
    ([1.0 + 0.001 * (i % 3) for i in range(100)], Direction.FLAT),
    ([1.0 + 0.002 * i for i in range(100)], Direction.DIVERGING),  # +20 % and rising
    ([1.0] * 80 + [1.05] * 20, Direction.WORSENING),  # +5 %: worse, not diverging
    (falling(60) + [1.0 / 3 * (1 + 0.004 * i) for i in range(100)], Direction.DIVERGING),
    (falling(50) + [math.nan] * 20, Direction.DIVERGING),  # the last window is all NaN
])
def test_trend_direction(values, direction):
    assert trend(series(values)).direction == direction


def test_trend_is_smoothed_over_windows_not_single_points():
    # A falling loss whose first and last points are outliers: windows still see the fall.
    values = falling(200)
    values[0], values[-1] = 0.01, 50.0
    t = trend(series(values))
    assert t.window == 20
    assert t.direction == Direction.IMPROVING
    assert t.first == pytest.approx(statistics.median(values[:20]))
    assert t.change < -0.5


def test_a_sampled_curve_has_the_trend_of_the_whole_one():
    # What a W&B report reads of a 100,000-step run: 300 evenly spaced points and the
    # newest 200 exactly. Windows are spans of steps, so it trends like every row.
    n = 100_000
    whole = series([2.0 / (1 + 1e-3 * i) * (1 + 0.05 * ((i * 7919) % 13 - 6) / 6)
                    for i in range(n)])  # ±5 % noise on a falling loss
    picked = sorted({round(i * (n - 1) / 299) for i in range(300)} | set(range(n - 200, n)))
    sampled = Series(steps=tuple(whole.steps[i] for i in picked),
                     times=tuple(whole.times[i] for i in picked),
                     values=tuple(whole.values[i] for i in picked))
    a, b = trend(whole), trend(sampled)
    assert a.direction == b.direction == Direction.IMPROVING
    assert b.change == pytest.approx(a.change, abs=0.01)
    assert b.first == pytest.approx(a.first, rel=0.05)
    assert b.last == pytest.approx(a.last, rel=0.05)


def test_reports_read_no_step_column():
    from runwatch.analysis import report_keys

    keys = report_keys(RULES, DEFAULT_ALIASES)
    assert "_step" not in keys and "_timestamp" in keys and "train/global_step" in keys
    assert "eval/bleu" in keys and "perf/tokens_seen" in keys and "layer3/act" not in keys
    assert keys.pick(["_step", "_timestamp", "train/loss", "eval/bleu"]) == [
        "train/loss", "eval/bleu"]


def test_trend_of_higher_is_better_reports_real_values():
    t = trend(series([0.5 + 0.004 * i for i in range(100)]), higher_is_better=True)
    assert t.direction == Direction.IMPROVING and t.change > 0 and t.last > t.first


def test_trend_needs_a_finite_point():
    assert trend(series([math.nan, math.inf])) is None
    assert trend(Series()) is None


def test_step_rate_over_recent_rows_and_value_at_aligned_steps():
    s = series(range(1000), interval=2.0)  # a step every 2 s
    assert step_rate(s.steps, s.times) == pytest.approx(0.5)
    assert step_rate((1,), (T0,)) is None
    sparse = Series(steps=(0, 10, 20, 30), times=(T0,) * 4, values=(4.0, 3.0, 2.0, 1.0))
    assert value_at(sparse, 25, window=1) == 2.0  # the newest point at or before the step
    assert value_at(sparse, -1) is None
    assert len(thin(s, 50).values) == 50 and thin(s, 50).steps[-1] == 999


# --- config -------------------------------------------------------------------------------


def test_highlights_nested_and_ordered_by_importance():
    config = {"seed": 3, "optimizer": {"name": "adamw", "lr": 3e-4}, "batch_size": 512,
              "data": {"path": "/x"}, "model": "llama-7b"}
    assert list(highlights(config)) == ["optimizer.lr", "batch_size", "model",
                                        "optimizer.name", "seed"]


@pytest.mark.parametrize(("config", "expected"), [
    ({"max_steps": 5000}, (5000, "max_steps")),
    ({"max_steps": -1, "num_train_epochs": 3, "steps_per_epoch": 200},
     (600, "num_train_epochs × steps_per_epoch")),
    ({"trainer": {"total_steps": 10}}, (10, "trainer.total_steps")),
    ({"epochs": 3}, None),
    ({"max_steps": True}, None),
])
def test_total_steps(config, expected):
    assert total_steps(config) == expected


def test_config_differences_important_first():
    diff = differences({"lr": 1e-3, "zeta": 1, "seed": 1, "model": {"layers": 4}},
                       {"lr": 3e-4, "zeta": 2, "seed": 1, "model": {"layers": 8}, "new": 1})
    assert [k for k, _, _ in diff] == ["lr", "model.layers", "new", "zeta"]
    assert diff[2] == ("new", MISSING, 1)


# --- characterize ------------------------------------------------------------------------


def run(history=None, **kw):
    return snapshot(history, **kw)


def test_healthy_run_is_healthy_with_pace_and_eta():
    n = 500
    h = {"train/loss": series(falling(n)), "train/grad_norm": series([1.0] * n),
         "_timestamp": series([T0 + 10 * i for i in range(n)])}
    snap = run(h, heartbeat=T0 + 10 * (n - 1), config={"max_steps": 1000, "lr": 1e-3})
    r = characterize(snap, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 10 * n)
    assert r.health == Health.HEALTHY and not r.reasons and not r.alerts
    assert r.liveness == Liveness.ALIVE
    assert r.loss.direction == Direction.IMPROVING
    assert r.grad.ok and r.grad.bounds == ("> 10 critical (grad-norm-exploding)",
                                           "> 5 warning (grad-norm-spiky)",
                                           "< 0.0001 warning (grad-norm-vanishing)")
    assert r.pace.step == n - 1 and r.pace.total == 1000 and r.pace.total_from == "max_steps"
    assert r.pace.rate == pytest.approx(0.1)  # one step per 10 s
    assert r.pace.eta == pytest.approx((1000 - (n - 1)) * 10)
    assert r.config == {"lr": 1e-3, "max_steps": 1000}


def test_eta_unknown_without_total_and_for_ended_runs():
    h = {"train/loss": series(falling(50))}
    r = characterize(run(h), rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 500)
    assert r.pace.total is None and r.pace.eta is None
    ended = characterize(run(h, state=RunState.FINISHED, config={"max_steps": 100}),
                         rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 500)
    assert ended.pace.eta is None and ended.liveness == Liveness.ENDED


def test_slowly_diverging_loss_is_a_warning_before_any_alert():
    values = falling(100) + [falling(100)[-1] * (1 + 0.003 * i) for i in range(100)]
    h = {"train/loss": series(values), "train/grad_norm": series([1.0] * 200)}
    snap = run(h, heartbeat=T0 + 1990)
    r = characterize(snap, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 2000)
    assert r.alerts == ()  # no rule fires...
    assert r.health == Health.WARNING  # ...and yet it is not healthy
    [reason] = r.reasons
    assert reason.rule is None and "diverging" in reason.text and reason.severity == "warning"


def test_grad_health_uses_the_loaded_rules_thresholds():
    h = {"grad_norm": series([1.0] * 50 + [4.0] * 5)}
    strict = [rule(name="grad-high", kind="threshold", metric="grad_norm", op=">", value=3,
                   severity="critical")]
    r = characterize(run(h), rules=strict, aliases=DEFAULT_ALIASES, now=T0 + 600)
    assert r.health == Health.CRITICAL and r.grad.holding == ("grad-high",)
    assert r.grad.bounds == ("> 3 critical (grad-high)",)
    # The shipped rules (> 5, > 10) say 4 is fine.
    assert characterize(run(h), rules=RULES, aliases=DEFAULT_ALIASES,
                        now=T0 + 600).health == Health.HEALTHY


def test_replay_on_the_runs_own_clock_lets_an_old_spike_resolve():
    # 2 hours of one row a minute; grad norm 50 at row 10 only.
    grads = [1.0] * 120
    grads[10] = 50.0
    h = {"train/grad_norm": series(grads, interval=60.0)}
    r = characterize(run(h, heartbeat=T0 + 119 * 60), rules=RULES, aliases=DEFAULT_ALIASES,
                     now=T0 + 120 * 60)
    assert r.health == Health.HEALTHY and r.grad.ok
    # The same spike in the newest rows holds.
    grads[-1] = 50.0
    h = {"train/grad_norm": series(grads, interval=60.0)}
    r = characterize(run(h, heartbeat=T0 + 119 * 60), rules=RULES, aliases=DEFAULT_ALIASES,
                     now=T0 + 120 * 60)
    assert r.health == Health.CRITICAL
    assert {a.rule for a in r.alerts} == {"grad-norm-exploding", "grad-norm-spiky"}
    assert r.reasons[0].rule == "grad-norm-exploding" and r.reasons[0].step == 119


def test_hung_versus_dead_as_the_rules_see_it():
    h = {"train/loss": series(falling(100), interval=10.0)}
    last_row = T0 + 990
    hung = characterize(run(h, heartbeat=last_row + 3600), rules=RULES,
                        aliases=DEFAULT_ALIASES, now=last_row + 3600)
    assert hung.liveness == Liveness.HUNG and hung.health == Health.CRITICAL
    assert [a.rule for a in hung.alerts] == ["progress-stalled"]
    dead = characterize(run(h, heartbeat=last_row), rules=RULES, aliases=DEFAULT_ALIASES,
                        now=last_row + 3600)
    assert dead.liveness == Liveness.DEAD
    assert {a.rule for a in dead.alerts} == {"run-stalled", "run-slow"}
    assert dead.heartbeat_age == pytest.approx(3600)


def test_an_ended_run_is_judged_by_how_it_ended():
    loss = [*falling(30), math.nan]
    h = {"loss": series(loss)}
    r = characterize(run(h, state=RunState.FINISHED), rules=RULES, aliases=DEFAULT_ALIASES,
                     now=T0 + 86400)
    assert r.health == Health.CRITICAL and [a.rule for a in r.alerts] == ["loss-nonfinite"]
    crashed = characterize(run({"loss": series(falling(30))}, state=RunState.CRASHED),
                           rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 86400)
    assert [a.rule for a in crashed.alerts] == ["run-crashed"]
    assert crashed.liveness == Liveness.ENDED  # not "dead": it ended


def test_a_stored_firing_alert_counts():
    snap = run({"loss": series(falling(30))})
    stored = AlertState(fingerprint=fingerprint("custom", snap.ref), rule="custom",
                        run=snap.ref, severity=Severity.WARNING, status=AlertStatus.FIRING,
                        summary="told the channel")
    r = characterize(snap, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 300, stored=[stored])
    assert r.health == Health.WARNING and r.reasons[0].text == "told the channel"


def test_evals_latest_and_best_by_direction():
    h = {"eval/loss": series([1.0, 0.5, 0.7]), "eval/accuracy": series([0.5, 0.9, 0.8]),
         "loss": series(falling(3))}
    r = characterize(run(h), rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 60)
    by_key = {e.key: e for e in r.evals}
    assert (by_key["eval/loss"].latest, by_key["eval/loss"].best,
            by_key["eval/loss"].best_step) == (0.7, 0.5, 1)
    assert (by_key["eval/accuracy"].best, by_key["eval/accuracy"].higher_is_better) == (0.9,
                                                                                        True)
    assert [e.key for e in r.evals] == ["eval/loss", "eval/accuracy"]  # losses first


def test_tokens_per_second_from_a_rate_or_a_count():
    rate = {"perf/tokens_per_s": series([1000.0] * 20), "loss": series(falling(20))}
    assert characterize(run(rate), rules=RULES, aliases=DEFAULT_ALIASES,
                        now=T0 + 200).tokens_per_s == pytest.approx(1000.0)
    count = {"train/num_tokens": series([4096.0 * i for i in range(20)], interval=2.0)}
    assert characterize(run(count), rules=RULES, aliases=DEFAULT_ALIASES,
                        now=T0 + 200).tokens_per_s == pytest.approx(2048.0)


# --- compare ------------------------------------------------------------------------------


def test_compare_aligns_by_step_not_row_and_names_the_winner():
    # a logs every step, b every 4th: row i of b is step 4i.
    a = run({"loss": series(falling(400))}, run_id="a", name="run-a",
            config={"lr": 1e-3, "seed": 1})
    b_steps = tuple(range(0, 400, 4))
    b = run({"loss": Series(steps=b_steps, times=tuple(T0 + s for s in b_steps),
                            values=tuple(1.5 / (1 + 0.05 * s) for s in b_steps))},
            run_id="b", name="run-b", config={"lr": 3e-4, "seed": 1})
    c = compare(a, b, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 500)
    assert [p.step for p in c.loss] == [0, 99, 198, 297, 396]  # up to b's last step
    assert all(p.a > p.b for p in c.loss)  # b is 25 % lower at every common step
    assert c.config == (("lr", 1e-3, 3e-4),)
    assert c.winner == "b" and "run-b" in c.reasons[0]


def test_compare_prefers_evals_and_says_no_clear_winner():
    h = {"loss": series(falling(100))}
    a = run(h | {"eval/loss": series([0.9, 0.5])}, run_id="a", name="A")
    b = run(h | {"eval_loss": series([0.9, 0.502])}, run_id="b", name="B")
    c = compare(a, b, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 1000)
    assert [(e.key, e.step) for e in c.evals] == [("eval/loss / eval_loss", 1)]
    assert c.winner is None and c.reasons[0].startswith("no clear winner")


def test_an_unhealthy_run_loses():
    good = run({"loss": series(falling(50))}, run_id="a", name="good")
    bad = run({"loss": series([*falling(49), math.nan])}, run_id="b", name="bad")
    c = compare(good, bad, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 600)
    assert c.winner == "a" and "bad is critical" in c.reasons[0]


# --- watch --------------------------------------------------------------------------------


def test_watch_orders_running_worst_first_and_lists_recent_endings():
    ok = run({"loss": series(falling(50))}, run_id="ok", name="ok")
    nan = run({"loss": series([*falling(49), math.nan])}, run_id="nan", name="nan")
    done = run({"loss": series(falling(50))}, run_id="done", name="done",
               state=RunState.FINISHED, heartbeat=T0 + 3000)
    old = run({"loss": series(falling(50), start_time=T0 - 90000)}, run_id="old",
              name="old", state=RunState.CRASHED, heartbeat=T0 - 86400)
    crashed = run({"loss": series(falling(50))}, run_id="cr", name="cr",
                  state=RunState.CRASHED, heartbeat=T0 + 2000)
    w = watch([ok, nan, done, old, crashed], since=T0, now=T0 + 3600, rules=RULES,
              aliases=DEFAULT_ALIASES)
    assert [r.run.id for r in w.running] == ["nan", "ok"]
    assert [r.run.id for r in w.ended] == ["cr", "done"]  # bad news first; "old" too old
    assert list(w.by_outcome()) == [RunState.CRASHED, RunState.FINISHED]
