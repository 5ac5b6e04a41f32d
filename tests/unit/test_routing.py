"""Labels, selectors, routes, inhibition and silences: case tables over plain values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runwatch.config.models import Inhibit, Route
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify.routing import (
    alert_labels,
    inhibit_rules,
    matching_routes,
    mute,
    route_specs,
    rule_name_problems,
    selector,
)
from runwatch.store.base import Matcher, new_silence

T0 = 1_700_000_000.0


def alert(rule="run-stalled", run="r1", *, severity="critical", status=AlertStatus.FIRING,
          labels=None, project="pretrain") -> AlertState:
    ref = RunRef(source="rundir", id=run, name=f"name-{run}", project=project, entity="team")
    return AlertState(fingerprint=fingerprint(rule, ref), rule=rule, run=ref,
                      severity=Severity(severity), status=status, fired_at=T0,
                      labels=labels or {}, metric="grad_norm")


def test_alert_labels():
    a = alert(labels={"team": "vision", "rule": "spoofed"})
    assert alert_labels(a) == {
        "team": "vision", "rule": "run-stalled", "severity": "critical",
        "run": "team/pretrain/r1", "run_id": "r1", "run_name": "name-r1",
        "project": "pretrain", "entity": "team", "source": "rundir", "metric": "grad_norm",
    }


LABELS = {"rule": "run-stalled", "severity": "critical", "project": "llm-7b", "team": ""}


@pytest.mark.parametrize(("spec", "hit"), [
    ({}, True),
    ({"rule": "run-stalled"}, True),
    ({"rule": "run-stalled*"}, True),
    ({"rule": "run-*", "severity": "critical"}, True),
    ({"rule": "run-*", "severity": "warning"}, False),
    ({"rule": "run-stalle?"}, True),
    ({"rule": "RUN-STALLED"}, False),  # case-sensitive
    ({"rule": ("run-slow", "run-stalled*")}, True),  # any one of a list
    ({"rule": ("run-slow", "progress-stalled")}, False),
    ({"project": "llm-[0-9]*"}, True),
    ({"missing": ""}, True),  # an absent label is the empty string
    ({"missing": "*"}, True),
    (["severity=critical"], True),
    (["severity!=critical"], False),
    (["rule=~run-(stalled|slow)", "project!~scratch.*"], True),
    (["rule=~run"], False),  # regexes are anchored
    (["team="], True),
])
def test_selector(spec, hit):
    assert selector(spec).matches(LABELS) is hit


def test_selector_rejects_a_plain_string():
    with pytest.raises(ValueError, match="expected a mapping"):
        selector("severity=critical")


def routes(*specs, receivers=("a", "b")):
    return route_specs([Route.model_validate(s) for s in specs], list(receivers),
                       repeat_interval=4 * 3600, send_resolved=True)


ROUTES = (
    {"match": {"severity": "critical"}, "receivers": ["pager"], "continue": True},
    {"match": {"rule": "run-*"}, "receivers": ["slack"]},
    {"match": ["project=~llm-.*"], "receivers": ["llm-team"]},
    {"receivers": ["catch-all"]},
)


@pytest.mark.parametrize(("labels", "receivers"), [
    ({"severity": "critical", "rule": "run-stalled"}, ["pager", "slack"]),  # continue
    ({"severity": "critical", "rule": "loss-nan"}, ["pager", "catch-all"]),
    ({"severity": "warning", "rule": "run-slow", "project": "llm-7b"}, ["slack"]),  # first wins
    ({"severity": "warning", "rule": "loss-nan", "project": "llm-7b"}, ["llm-team"]),
    ({"severity": "info", "rule": "x"}, ["catch-all"]),
])
def test_routes_first_match_wins_unless_continue(labels, receivers):
    taken = matching_routes(routes(*ROUTES), labels)
    assert [r for route in taken for r in route.receivers] == receivers


def test_no_route_matches_nothing_is_sent():
    assert matching_routes(routes({"match": {"rule": "x"}, "receivers": ["a"]}), LABELS) == []


def test_without_routes_everything_goes_to_every_receiver():
    (default,) = route_specs([], ["a", "b"], repeat_interval=60, send_resolved=False)
    assert default.receivers == ("a", "b")
    assert default.match.matches({}) and default.group_by == ("rule",)
    assert (default.repeat_interval, default.send_resolved) == (60, False)
    assert route_specs([], [], repeat_interval=60, send_resolved=True) == ()


@pytest.mark.parametrize(("group_by", "expected"), [
    (None, {"rule": "run-stalled"}),  # the default: one group per rule
    ([], {}),  # one group for everything
    (["run", "severity"], {"run": "team/pretrain/r1", "severity": "critical"}),
    (["nope"], {"nope": ""}),
])
def test_group_labels(group_by, expected):
    spec = {"receivers": ["a"]} | ({} if group_by is None else {"group_by": group_by})
    (route,) = routes(spec)
    assert route.group_labels(alert_labels(alert())) == expected


def test_group_by_dots_is_one_group_per_alert():
    (route,) = routes({"receivers": ["a"], "group_by": ["..."]})
    one, two = alert(run="r1"), alert(run="r2")
    keys = {route.group_key(route.group_labels(alert_labels(a))) for a in (one, two)}
    assert len(keys) == 2


def test_group_keys_are_stable_and_name_the_route():
    (route,) = routes({"match": {"severity": "critical"}, "receivers": ["a"]})
    key = route.group_key({"rule": 'run-"x"'})
    assert key == '{severity=critical}:{rule="run-\\"x\\""}'
    (moved,) = routes({"match": {"severity": "critical"}, "receivers": ["a", "b"]})
    assert moved.group_key({"rule": 'run-"x"'}) == key  # receivers are not part of the key


def test_route_defaults_come_from_the_config():
    a, b = routes({"receivers": ["a"]},
                  {"receivers": ["b"], "repeat_interval": "1h", "send_resolved": False})
    assert (a.repeat_interval, a.send_resolved) == (4 * 3600, True)
    assert (b.repeat_interval, b.send_resolved) == (3600, False)


# --- muting -------------------------------------------------------------------------------

EXAMPLE_INHIBIT = inhibit_rules([
    Inhibit.model_validate({"source": {"rule": "run-crashed"},
                            "target": {"rule": ["run-stalled*", "run-slow", "progress-stalled"]},
                            "equal": ["run"]}),
    Inhibit.model_validate({"source": {"rule": "grad-norm-exploding"},
                            "target": {"rule": "grad-norm-spiky"}, "equal": ["run"]}),
])


def muted_by(alerts, inhibit=EXAMPLE_INHIBIT, silences=(), now=T0):
    labels = {a.fingerprint: alert_labels(a) for a in alerts}
    found = mute(alerts, labels, inhibit=inhibit, silences=silences, now=now)
    names = {a.fingerprint: f"{a.rule}@{a.run.id}" for a in alerts}
    return {names[fp]: m.by.split()[0] for fp, m in found.items()}


RESOLVED = AlertStatus.RESOLVED


@pytest.mark.parametrize(("alerts", "expected"), [
    ([alert("run-crashed"), alert("run-stalled"), alert("run-slow"),
      alert("progress-stalled")],
     {"run-stalled@r1": "inhibit", "run-slow@r1": "inhibit", "progress-stalled@r1": "inhibit"}),
    ([alert("run-crashed", "r1"), alert("run-stalled", "r2")], {}),  # equal: [run] differs
    ([alert("run-crashed", status=RESOLVED), alert("run-stalled")], {}),  # source not firing
    ([alert("run-crashed"), alert("run-stalled", status=RESOLVED)],
     {"run-stalled@r1": "inhibit"}),  # a resolved target is muted too
    ([alert("grad-norm-exploding"), alert("grad-norm-spiky", severity="warning")],
     {"grad-norm-spiky@r1": "inhibit"}),
    ([alert("grad-norm-spiky", severity="warning")], {}),
    ([alert("run-stalled")], {}),
])
def test_inhibition(alerts, expected):
    assert muted_by(alerts) == expected


def test_an_alert_never_inhibits_itself():
    rules = inhibit_rules([Inhibit.model_validate(
        {"source": {"severity": "critical"}, "target": {"rule": "run-*"}, "equal": ["run"]})])
    lone = alert("run-stalled")
    assert muted_by([lone], rules) == {}
    # Two that match both sides mute each other, as in Alertmanager.
    assert muted_by([lone, alert("run-slow")], rules) == {"run-stalled@r1": "inhibit",
                                                           "run-slow@r1": "inhibit"}


def silence(*matchers, start=T0, end=T0 + 3600):
    return new_silence(matchers=[Matcher.parse(m) for m in matchers], starts_at=start,
                       ends_at=end, now=start)


@pytest.mark.parametrize(("silences", "now", "expected"), [
    ([silence("run=team/pretrain/r1")], T0, {"run-stalled@r1": "silence"}),
    ([silence("run=team/pretrain/r1", "rule=run-slow")], T0, {}),
    ([silence("rule=~run-.*")], T0 + 10, {"run-stalled@r1": "silence",
                                          "run-stalled@r2": "silence"}),
    ([silence("rule=~run-.*")], T0 + 3600, {}),  # ended
    ([silence("rule=~run-.*", start=T0 + 60)], T0, {}),  # not started
    ([silence("project=pretrain", "run!=team/pretrain/r1")], T0, {"run-stalled@r2": "silence"}),
])
def test_silences(silences, now, expected):
    assert muted_by([alert("run-stalled", "r1"), alert("run-stalled", "r2")],
                    silences=silences, now=now) == expected


def test_a_silenced_source_still_inhibits():
    crashed, stalled = alert("run-crashed"), alert("run-stalled")
    assert muted_by([crashed, stalled], silences=[silence("rule=run-crashed")]) == {
        "run-crashed@r1": "silence", "run-stalled@r1": "inhibit"}


def test_rule_name_problems_point_at_typos():
    config_routes = [SimpleNamespace(match={"rule": "run-stalld"}), SimpleNamespace(match={})]
    inhibit = [SimpleNamespace(source=["rule=run-crashed"], target={"rule": "run-stalled*"})]
    assert rule_name_problems(config_routes, inhibit, ["run-crashed", "run-stalled"]) == [
        "routes[0].match: rule=run-stalld matches none of the loaded rules"]


def test_an_alert_muted_while_it_fired_stays_quiet_once_resolved():
    import dataclasses

    from runwatch.config.models import default_inhibit
    from runwatch.notify.routing import inhibited_while_firing

    def span(a, fired, resolved=None):
        status = RESOLVED if resolved is not None else AlertStatus.FIRING
        return dataclasses.replace(a, status=status, fired_at=fired, resolved_at=resolved)

    rules = inhibit_rules(default_inhibit())
    exploding = span(alert("grad-norm-exploding"), T0 + 10, T0 + 100)
    spiky = span(alert("grad-norm-spiky", severity="warning"), T0, T0 + 100)
    other_run = span(alert("grad-norm-spiky", "r2", severity="warning"), T0, T0 + 100)
    before = span(alert("grad-norm-spiky", "r3", severity="warning"), T0, T0 + 5)
    later = span(alert("grad-norm-exploding", "r3"), T0 + 50)  # began after it resolved
    alerts = [exploding, spiky, other_run, before, later]
    labels = {a.fingerprint: alert_labels(a) for a in alerts}
    assert inhibited_while_firing(alerts, labels, rules) == {spiky.fingerprint}
    assert inhibited_while_firing(alerts, labels, ()) == set()
