"""Rule files: one testdata file per error with its exact message; the shipped rules load."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwatch import keys
from runwatch.checks import KINDS
from runwatch.config import ConfigError, RuleSet, default_rules_path, load_rules
from runwatch.model import Severity

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
ALL_KINDS = ", ".join(KINDS)

# file → every line of the error, exactly.
ERRORS = {
    "unknown-kind.yaml": [
        "rules/unknown-kind.yaml:10: rule 'grad-spike': unknown kind 'thresold'"
        f" (expected one of {ALL_KINDS})",
    ],
    "missing-kind.yaml": [
        "rules/missing-kind.yaml:2: rule 'loss-high': missing required field 'kind'"
        f" (one of {ALL_KINDS})",
    ],
    "bad-duration.yaml": [
        "rules/bad-duration.yaml:4: rule 'stall': older_than: invalid duration '10 parsecs':"
        " expected a number with a unit like 30s, 10m, 2h, 1d",
    ],
    "unknown-field.yaml": ["rules/unknown-field.yaml:3: rule 'g': unknown field 'bogus'"],
    "field-typo.yaml": [
        "rules/field-typo.yaml:2: rule 'stall': missing required field 'older_than'",
        "rules/field-typo.yaml:4: rule 'stall': unknown field 'older_then'"
        " (did you mean 'older_than'?)",
    ],
    "missing-field.yaml": [
        "rules/missing-field.yaml:2: rule 'loss-high': missing required field 'metric'",
    ],
    "bad-severity.yaml": [
        "rules/bad-severity.yaml:5: rule 'loss-nan': severity: expected 'info', 'warning'"
        " or 'critical', got 'fatal'",
    ],
    "bad-op.yaml": [
        "rules/bad-op.yaml:5: rule 'loss-high': op: expected '>', '>=', '<', '<=', '==' or"
        " '!=', got '=>'",
    ],
    "bad-value.yaml": [
        "rules/bad-value.yaml:6: rule 'loss-high': value: expected a number, got 'ten'",
    ],
    "bad-summary.yaml": [
        "rules/bad-summary.yaml:6: rule 'loss-nan': summary: template 'loss is"
        " {value} on {hostname}': unknown field {hostname} (allowed: age, entity,"
        " first_value, for, group, latest, latest_step, metric, path, project, rule, run,"
        " run_id, severity, since_step, state, step, text, threshold, title, value)",
    ],
    "bad-match.yaml": [
        "rules/bad-match.yaml:7: rule 'loss-nan': match: unknown field 'projects'"
        " (did you mean 'project'?)",
    ],
    "bad-match-config.yaml": [
        "rules/bad-match-config.yaml:8: rule 'loss-nan': match.config.lr: expected a string,"
        " an integer, a number or a boolean, got a list",
    ],
    "ambiguous-hold.yaml": [
        "rules/ambiguous-hold.yaml:7: rule 'loss-high': for: ambiguous hold 5: write a"
        " duration like '10m' or a count like '5 steps'",
    ],
    "bad-window.yaml": [
        "rules/bad-window.yaml:8: rule 'loss-high': window: must be >= 1, got 0",
    ],
    "bad-hysteresis.yaml": [
        "rules/bad-hysteresis.yaml:2: rule 'loss-high': resolve_value 12.0 must be <= value"
        " 10.0 for '>'",
    ],
    "bad-name.yaml": [
        "rules/bad-name.yaml:2: rule 'loss high': name: invalid rule name 'loss high':"
        " letters, digits and - _ . : only",
    ],
    "bad-state.yaml": [
        "rules/bad-state.yaml:4: rule 'run-crashed': states[1]: expected 'running',"
        " 'finished', 'failed', 'crashed', 'killed', 'preempted' or 'unknown', got 'exploded'",
    ],
    "missing-name.yaml": ["rules/missing-name.yaml:2: rules[0]: missing required field 'name'"],
    "item-not-a-mapping.yaml": [
        "rules/item-not-a-mapping.yaml:2: rules[0]: expected a mapping, got 'loss-nonfinite'",
    ],
    "duplicate-name.yaml": [
        "rules/duplicate-name.yaml:7: rule 'loss-nan' already defined at"
        " rules/duplicate-name.yaml:2",
    ],
    "empty-alias.yaml": [
        "rules/empty-alias.yaml:4: rule 'reward-nan': metric 'reward' is an alias with no keys",
    ],
    "invalid-yaml.yaml": [
        "rules/invalid-yaml.yaml:6: invalid YAML: found unexpected end of stream"
        " (while scanning a quoted scalar at line 4)",
    ],
    "empty.yaml": [
        "rules/empty.yaml:1: empty rule file: expected a mapping with a 'rules:' list",
    ],
    "top-level-list.yaml": [
        "rules/top-level-list.yaml:1: expected a mapping with a 'rules:' list at the top"
        " level, got a list",
    ],
    "no-rules-key.yaml": [
        "rules/no-rules-key.yaml:1: unknown top-level key 'rule' (expected 'rules')",
        "rules/no-rules-key.yaml:1: missing 'rules:' (a rule file is a mapping with a"
        " 'rules:' list)",
    ],
    "rules-not-a-list.yaml": [
        "rules/rules-not-a-list.yaml:1: rules: expected a list, got a mapping",
    ],
    "three-errors.yaml": [
        "rules/three-errors.yaml:3: rule 'grad-spike': unknown kind 'thresold'"
        f" (expected one of {ALL_KINDS})",
        "rules/three-errors.yaml:8: rule 'stall': older_than: invalid duration '10 parsecs':"
        " expected a number with a unit like 30s, 10m, 2h, 1d",
        "rules/three-errors.yaml:14: rule 'g': unknown field 'bogus'",
    ],
}

# A configured alias with no keys cannot come from a valid config; load_rules still refuses
# a rule that reads one.
ALIASES = {"reward": ()}


@pytest.fixture(autouse=True)
def in_testdata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Error messages show paths relative to the working directory."""
    monkeypatch.chdir(TESTDATA)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_message(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules([f"rules/{name}"], TESTDATA, ALIASES)
    assert caught.value.errors == ERRORS[name]
    assert str(caught.value) == "\n".join(ERRORS[name])


def test_every_error_file_has_a_case() -> None:
    assert sorted(p.name for p in (TESTDATA / "rules").glob("*.yaml")) == sorted(ERRORS)


def test_duplicate_names_across_files() -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules(["rules/duplicate-across/*.yaml"], TESTDATA)
    assert caught.value.errors == [
        "rules/duplicate-across/b.yaml:6: rule 'run-stalled' already defined at"
        " rules/duplicate-across/a.yaml:2",
    ]


def test_every_file_and_pattern_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules(["rules/empty.yaml", "rules/no-such-*.yaml", "rules/bad-op.yaml"],
                   TESTDATA)
    assert caught.value.errors == [
        "rules: no rule file matches 'rules/no-such-*.yaml'",
        "rules/empty.yaml:1: empty rule file: expected a mapping with a 'rules:' list",
        "rules/bad-op.yaml:5: rule 'loss-high': op: expected '>', '>=', '<', '<=', '==' or"
        " '!=', got '=>'",
    ]


def test_a_rule_set(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.yaml").write_text("""\
rules:
  - name: reward-nan
    kind: nonfinite
    metric: reward
    severity: critical
""")
    (tmp_path / "b.yaml").write_text("""\
# comment
rules:
  - name: stall
    kind: heartbeat
    older_than: 15m
    for: 2m
    severity: warning
    labels: {team: rl}
""")
    rules = load_rules(["**/*.yaml"], tmp_path, {"reward": ["rollout/reward"]})
    assert isinstance(rules, RuleSet)
    assert [r.name for r in rules.rules] == ["stall", "reward-nan"]  # sorted file order
    assert dict(rules.origins) == {"stall": f"{tmp_path}/b.yaml:3",
                                   "reward-nan": f"{tmp_path}/team/a.yaml:2"}
    assert rules.files == (f"{tmp_path}/b.yaml", f"{tmp_path}/team/a.yaml")
    assert rules.aliases["reward"] == ("rollout/reward",)
    assert rules.aliases["loss"] == keys.DEFAULT_ALIASES["loss"]
    stall = rules.rules[0]
    assert (stall.older_than, stall.hold.seconds, stall.labels) == (900.0, 120.0, {"team": "rl"})
    with pytest.raises(AttributeError):
        rules.rules = ()  # type: ignore[misc]


def test_an_empty_list_of_rules_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("rules: []\n")
    assert load_rules(["none.yaml"], tmp_path).rules == ()


def test_the_packaged_default_rules_load() -> None:
    rules = load_rules([default_rules_path()], Path("/"))
    by_name = {r.name: r for r in rules.rules}
    # The seed thresholds DESIGN.md promises.
    assert by_name["grad-norm-exploding"].value == 10
    assert by_name["grad-norm-exploding"].severity is Severity.CRITICAL
    assert by_name["grad-norm-spiky"].value == 5
    assert by_name["grad-norm-vanishing"].value == 1e-4
    assert by_name["run-stalled"].older_than == 30 * 60
    assert by_name["run-slow"].older_than == 10 * 60
    assert by_name["loss-nonfinite"].kind == "nonfinite"
    assert by_name["run-crashed"].kind == "state"
    assert by_name["progress-stalled"].kind == "progress"
    assert all(origin.split(":")[0].endswith("default.yaml")
               for origin in rules.origins.values())
