"""One tick end to end over plain sources and the memory/SQLite stores."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from builders import T0, rule, series, snapshot
from runwatch.checks.state import StateRule
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertStatus, RunState
from runwatch.sources.base import Poll
from runwatch.store.base import StoreError, open_store
from runwatch.store.memory import MemoryStore
from runwatch.tick import keys_for_run, run_tick, wanted_keys


class ListSource:
    """A source that hands out prepared polls, one per tick, and records what it was given."""

    def __init__(self, name: str, polls: list[Poll | Exception]):
        self.name = name
        self.polls = polls
        self.seen_cursors: list[Mapping[str, str]] = []
        self.seen_keys: list[frozenset[str]] = []

    def poll(self, cursors, wanted, now, **_):
        self.seen_cursors.append(dict(cursors))
        self.seen_keys.append(wanted)
        item = self.polls.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


RULES = [
    rule(name="grad-high", kind="threshold", metric="grad_norm", op=">", value=10,
         severity="critical"),
    rule(name="crashed", kind="state"),
]


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = open_store("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def poll(*snaps, cursors=None, errors=()):
    return Poll(snapshots=tuple(snaps), cursors=cursors or {}, errors=tuple(errors))


def tick(sources, store, now, **kw):
    return run_tick(sources=sources, rules=RULES, aliases=DEFAULT_ALIASES, store=store,
                    now=now, **kw)


def test_wanted_keys_expand_aliases_of_every_rule():
    keys = wanted_keys(RULES, DEFAULT_ALIASES)
    assert keys == {"train/grad_norm", "grad_norm", "gradient_norm"}


def test_transitions_are_reported_once_and_state_survives_a_new_store_handle(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    exploding = snapshot({"grad_norm": series([1, 50])})
    src = ListSource("a", [poll(exploding, cursors={"run": "c1"}),
                           poll(snapshot({"grad_norm": series([], start_step=2)}))])
    first = open_store(url)
    report = tick([src], first, T0)
    first.close()
    assert [(t.alert.rule, t.status) for t in report.transitions] == [
        ("grad-high", AlertStatus.FIRING)]
    again = open_store(url)  # a restart: same file, new process state
    report = tick([src], again, T0 + 60)
    assert report.transitions == ()  # still firing, not announced twice
    assert src.seen_cursors == [{}, {"run": "c1"}]
    (alert,) = again.alerts(status=AlertStatus.FIRING)
    assert alert.value == 50.0 and alert.step == 1
    again.close()


def test_dry_run_writes_nothing(store):
    src = ListSource("a", [poll(snapshot(state=RunState.CRASHED), cursors={"run": "c1"})] * 2)
    report = tick([src], store, T0, dry_run=True)
    assert len(report.transitions) == 1
    assert store.load_cursors("a") == {} and store.alerts() == []


def test_a_failing_source_is_reported_and_the_others_still_run(store):
    broken = ListSource("broken", [PermissionError(13, "Permission denied", "/runs")])
    fine = ListSource("fine", [poll(snapshot(state=RunState.FAILED),
                                    errors=["/runs/x.wandb: bad CRC at offset 40"])])
    report = tick([broken, fine], store, T0)
    assert report.errors == (
        "source broken: [Errno 13] Permission denied: '/runs'",
        "/runs/x.wandb: bad CRC at offset 40",
    )
    assert report.runs_checked == 1
    assert [t.alert.rule for t in report.transitions] == ["crashed"]


def test_nan_values_reach_the_store_intact(store):
    nan_rule = rule(name="nan", kind="nonfinite", metric="loss")
    src = ListSource("a", [poll(snapshot({"loss": series([math.nan])}))])
    run_tick(sources=[src], rules=[nan_rule], aliases=DEFAULT_ALIASES, store=store, now=T0)
    (alert,) = store.alerts()
    assert math.isnan(alert.value)


def test_an_ended_run_resolves_what_fired_while_it_ran(store):
    src = ListSource("a", [
        poll(snapshot({"grad_norm": series([50])})),
        poll(snapshot({"grad_norm": series([], start_step=1)}, state=RunState.FINISHED)),
    ])
    tick([src], store, T0)
    report = tick([src], store, T0 + 60)
    assert [(t.alert.rule, t.previous, t.status) for t in report.transitions] == [
        ("grad-high", AlertStatus.FIRING, AlertStatus.RESOLVED)]
    assert report.transitions[0].alert.run_state == "finished"  # what repeats look at


def test_a_rule_reading_a_key_no_matched_run_logs_is_a_warning(store):
    typo = rule(name="typo", kind="threshold", metric="train/gradnorm", op=">", value=1)
    aliased = rule(name="aliased", kind="threshold", metric="grad_norm", op=">", value=1)
    elsewhere = rule(name="elsewhere", kind="nonfinite", metric="train/gradnorm",
                     match={"project": "other"})
    src = ListSource("a", [poll(snapshot({"train/grad_norm": series([1.0])}),
                                snapshot({"loss": series([1.0])}, run_id="b"))])
    report = run_tick(sources=[src], rules=[typo, aliased, elsewhere],
                      aliases=DEFAULT_ALIASES, store=store, now=T0)
    assert report.warnings == (
        "rule 'typo': metric 'train/gradnorm' is logged by none of the 2 runs it matched",)


def test_alerts_of_a_rule_no_longer_loaded_resolve(store):
    src = ListSource("a", [poll(snapshot(state=RunState.CRASHED)), poll()])
    tick([src], store, T0)
    report = run_tick(sources=[src], rules=RULES[:1], aliases=DEFAULT_ALIASES, store=store,
                      now=T0 + 60)
    assert [(t.alert.rule, t.previous, t.status) for t in report.transitions] == [
        ("crashed", AlertStatus.FIRING, AlertStatus.RESOLVED)]
    assert store.alerts(status=AlertStatus.FIRING) == []


def test_holding_alerts_are_looked_up_for_retiring_only_when_the_rules_change():
    """An idle tick asks the store for firing and pending alerts (to resolve those of
    rules no longer loaded) only on a store's first tick and after the rules change."""
    asked = []

    class Counting(MemoryStore):
        def alerts(self, **filters):
            asked.append(filters)
            return super().alerts(**filters)

    store = Counting()
    src = ListSource("a", [poll(snapshot(state=RunState.CRASHED)), poll(), poll(), poll()])
    for n in range(3):
        tick([src], store, T0 + 60 * n)
    assert len(asked) == 1
    report = run_tick(sources=[src], rules=RULES[:1], aliases=DEFAULT_ALIASES, store=store,
                      now=T0 + 240)
    assert len(asked) == 2
    assert [(t.alert.rule, t.status) for t in report.transitions] == [
        ("crashed", AlertStatus.RESOLVED)]


def test_a_store_failure_fails_the_tick_instead_of_passing_for_a_source_error():
    class LockedStore(MemoryStore):
        def load_cursors(self, source):
            raise StoreError("database is locked", store="sqlite:///s.db", temporary=True)

    src = ListSource("a", [poll(snapshot(state=RunState.CRASHED))])
    with pytest.raises(StoreError, match="database is locked"):
        tick([src], LockedStore(), T0)


class ExplodingRule(StateRule):
    def evaluate(self, ctx):
        if ctx.snapshot.ref.id == "bad":
            raise ZeroDivisionError("division by zero")
        return super().evaluate(ctx)


def test_one_run_failing_evaluation_leaves_the_others(store):
    src = ListSource("a", [poll(snapshot(run_id="bad", state=RunState.CRASHED),
                                snapshot(run_id="good", state=RunState.CRASHED))])
    exploding = ExplodingRule(name="exploding", kind="state", severity="critical")
    report = run_tick(sources=[src], rules=[exploding], aliases=DEFAULT_ALIASES,
                      store=store, now=T0)
    assert report.errors == (
        "run team/pretrain/bad: evaluation failed: ZeroDivisionError: division by zero;"
        " its cursor stays, so it is read again next tick",)
    assert [t.alert.run.id for t in report.transitions] == ["good"]


@pytest.mark.parametrize("key", ["team/pretrain/bad", "/runs/run-bad"])  # W&B, run dir
def test_a_run_whose_evaluation_raises_keeps_its_cursor_and_says_so_each_tick(store, key):
    """Its rows are read again next tick rather than passed over unjudged: the cursor it
    had stays, whichever key its source keeps it under; the other runs move on."""
    mean = rule(name="mean-high", kind="threshold", metric="loss", op=">", value=100,
                mode="mean", window=5)
    huge = {"loss": series([1e308] * 5, start_step=10)}  # finite; their sum is not
    store.commit_tick(source="a", alerts=[], cursors={key: "before"}, now=T0 - 60)
    src = ListSource("a", [
        poll(snapshot(huge, run_id="bad"), snapshot(run_id="good"),
             cursors={key: "after", "team/pretrain/good": "g1"}),
        poll(snapshot(huge, run_id="bad"), cursors={key: "after"}),
        poll(snapshot(huge, run_id="bad"), cursors={key: "after"}),
    ])
    failed = ("run team/pretrain/bad: evaluation failed on steps 10-14: OverflowError:"
              " intermediate overflow in fsum")
    for now in (T0, T0 + 60):
        report = run_tick(sources=[src], rules=[mean], aliases=DEFAULT_ALIASES, store=store,
                          now=now)
        assert report.errors == (f"{failed}; its cursor stays, so it is read again next tick",)
        assert store.load_cursors("a") == {key: "before", "team/pretrain/good": "g1"}
    assert [c[key] for c in src.seen_cursors] == ["before", "before"]
    # The third time the same rows fail, they are skipped: a bug must not blind the run
    # for ever.
    report = run_tick(sources=[src], rules=[mean], aliases=DEFAULT_ALIASES, store=store,
                      now=T0 + 120)
    assert report.errors == (f"{failed}; failed 3 ticks in a row, so these rows are skipped"
                             " and the run is judged from the next ones",)
    assert store.load_cursors("a")[key] == "after"


def test_keys_for_a_run_are_what_its_matching_rules_read_resolved_against_its_keys():
    rules = [*RULES,
             rule(name="loss-nan", kind="nonfinite", metric="loss",
                  match={"project": "nlp-*"})]
    keys_for = keys_for_run(rules, DEFAULT_ALIASES)
    vision = snapshot({"gradient_norm": series([1]), "train/loss": series([1])},
                      project="vision")
    nlp = snapshot({"gradient_norm": series([1]), "train/loss": series([1])},
                   project="nlp-big")
    assert keys_for(vision) == {"gradient_norm"}
    assert keys_for(nlp) == {"gradient_norm", "train/loss"}


def test_an_unreachable_source_fires_one_alert_and_resolves_when_it_answers(store):
    down = Poll(reachable=False, unreachable="W&B has not answered for 10m: HTTP 503")
    src = ListSource("wandb:team", [
        Poll(reachable=False),  # failing, not yet for long: nothing
        down, down,
        poll(snapshot({"grad_norm": series([1])})),
    ])
    statuses = [[(t.alert.rule, t.alert.run.path, t.status)
                 for t in tick([src], store, T0 + i * 60).transitions] for i in range(4)]
    assert statuses == [
        [],
        [("source-unreachable", "wandb:team", AlertStatus.FIRING)],
        [],
        [("source-unreachable", "wandb:team", AlertStatus.RESOLVED)],
    ]
    alert = next(iter(store.load_alerts().values()))
    assert alert.summary == "W&B has not answered for 10m: HTTP 503"
    assert (alert.fired_at, alert.resolved_at) == (T0 + 60, T0 + 180)


def test_a_firing_alert_brings_the_points_it_fired_on_for_charts(store):
    values = [1.0] * 600 + [50.0] + [2.0] * 10
    src = ListSource("a", [poll(snapshot({"grad_norm": series(values)}))])
    report = tick([src], store, T0)
    [(key, drawn)] = report.charts.items()
    assert key == report.transitions[0].alert.fingerprint
    assert drawn.metric == "grad_norm" and drawn.threshold == 10.0
    assert drawn.firing_step == 600 and drawn.steps[-1] == 600
    assert len(drawn.steps) == 500 and drawn.values[-1] == 50.0
