"""The code_alert kind through the engine: levels and their remapping, match.title, the
wait of the alert told, max_age on a first read, and the rule's own validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runwatch.checks import RULE_ADAPTER
from runwatch.engine import evaluate, fingerprints
from runwatch.model import AlertStatus, CodeAlert, RunRef, RunSnapshot, RunState, status_word

T0 = 1_796_000_000.0
REF = RunRef(source="rundir", id="r1", name="r1", location="/runs/r1")


def rule(**fields):
    return RULE_ADAPTER.validate_python({"name": "code", "kind": "code_alert", **fields})


def tick(rules, raised, previous, now):
    snap = RunSnapshot(ref=REF, state=RunState.RUNNING, code_alerts=tuple(raised))
    wanted = set(fingerprints(rules, snap))
    result = evaluate(rules, snap, {fp: a for fp, a in previous.items() if fp in wanted},
                      now, {})
    previous.update((a.fingerprint, a) for a in result.alerts)
    return [(t.alert.labels["title"], str(t.alert.severity), status_word(t.alert))
            for t in result.transitions]


def test_levels_map_to_severities_and_a_rule_may_remap_them():
    raised = [CodeAlert(title=level.lower(), level=level, time=T0) for level in
              ("INFO", "WARN", "ERROR", "DEBUG")]
    assert tick([rule()], raised, {}, T0) == [
        ("info", "info", "told"), ("warn", "warning", "told"), ("error", "critical", "told"),
        ("debug", "warning", "told")]  # a level the SDK does not write: the rule's severity
    assert [s for _, s, _ in tick([rule(levels={"warn": "critical"})], raised, {}, T0)] == [
        "info", "critical", "critical", "warning"]


def test_the_same_title_waits_the_wait_of_the_one_told():
    rules, stored = [rule()], {}
    assert tick(rules, [CodeAlert(title="slow", wait=300, time=T0)], stored, T0) == [
        ("slow", "info", "told")]
    assert tick(rules, [CodeAlert(title="slow", wait=1, time=T0 + 299)], stored, T0 + 300) == []
    assert tick(rules, [CodeAlert(title="other", time=T0 + 299)], stored, T0 + 300) == [
        ("other", "info", "told")]  # a new title is a new alert
    assert tick(rules, [CodeAlert(title="slow", time=T0 + 300)], stored, T0 + 360) == [
        ("slow", "info", "told")]
    [again] = [a for a in stored.values() if a.labels["title"] == "slow"]
    assert (again.fired_at, again.status, again.resolution) == (
        T0 + 360, AlertStatus.RESOLVED, "told once")


def test_match_title_and_max_age():
    raised = [CodeAlert(title="nccl timeout", time=T0), CodeAlert(title="eval done", time=T0),
              CodeAlert(title="nccl hang", time=T0 - 7200)]  # read long after: not told
    assert tick([rule(match={"title": "nccl*"})], raised, {}, T0 + 60) == [
        ("nccl timeout", "info", "told")]
    assert len(tick([rule(max_age="3h")], raised, {}, T0 + 60)) == 3


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "threshold", "metric": "loss", "op": ">", "value": 1, "severity": "critical",
      "match": {"title": "x*"}}, "match.title is for code_alert rules"),
    ({"kind": "code_alert", "levels": {"FATAL": "critical"}}, "unknown level FATAL"),
    ({"kind": "code_alert", "for": "10m"}, "cannot have for:"),
])
def test_what_the_rule_refuses(fields, message):
    with pytest.raises(ValidationError, match=message):
        RULE_ADAPTER.validate_python({"name": "bad", **fields})
