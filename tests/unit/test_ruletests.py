"""`runwatch test-rules`: the series notation, the shipped rules' own tests (they pass,
and a wrong expectation about any shipped rule fails with a readable diff), bad files."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from runwatch.cli import main
from runwatch.config import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.ruletests import parse_series

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TESTS = REPO / "rules" / "tests" / "default.test.yaml"


@pytest.mark.parametrize(("text", "values"), [
    ("1 2 3", [1, 2, 3]),
    ("1+0.5x3", [1, 1.5, 2]),
    ("10-2x3 _", [10, 8, 6, None]),
    ("50x2 _x3 NaN", [50, 50, None, None, None, math.nan]),
    ("Inf -Inf 1e-6", [math.inf, -math.inf, 1e-6]),
    ("nanx2", [math.nan, math.nan]),
])
def test_series_notation(text, values):
    assert repr(parse_series(text)) == repr([None if v is None else float(v) for v in values])


@pytest.mark.parametrize(("text", "why"), [
    ("1+x3", "'1+x3'"), ("abc", "'abc'"), ("5x0", "'5x0'"), ("", "empty"),
    ("1x2000000", "'1x2000000'"),
])
def test_series_notation_errors_name_the_token(text, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_series(text)


def test_the_shipped_rules_pass_their_tests(capsys):
    assert main(["test-rules", str(SHIPPED_TESTS)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("9 tests, ok")


def test_every_shipped_rule_is_tested():
    tested = {alert["rule"] for test in yaml.safe_load(SHIPPED_TESTS.read_text())["tests"]
              for expect in test["expect"] for alert in expect.get("alerts", ())}
    shipped = {r.name for r in load_rules([default_rules_path()], REPO).rules}
    assert tested == shipped


def shipped_with(tmp_path: Path, rule: str) -> tuple[Path, int, str, str]:
    """The shipped tests with the first expectation of ``rule`` firing (or told) changed
    to pending: the file, the line of the changed expectation, its test's name, and the
    status it had."""
    lines = SHIPPED_TESTS.read_text().splitlines()
    lines = [line.replace("rule_files: [../default.yaml]",
                          f"rule_files: [{default_rules_path()}]") for line in lines]
    target, status = next((i, status) for i, line in enumerate(lines)
                          for status in ("firing", "told")
                          if f"rule: {rule}," in line and f"status: {status}" in line)
    lines[target] = lines[target].replace(f"status: {status}", "status: pending")
    at = next(i for i in range(target, 0, -1) if lines[i].strip().startswith("- at:"))
    name = next(lines[i].split("name: ", 1)[1] for i in range(target, 0, -1)
                if lines[i].strip().startswith("- name:"))
    path = tmp_path / "changed.test.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1, name, status


@pytest.mark.parametrize("rule", sorted(
    r.name for r in load_rules([default_rules_path()], REPO).rules))
def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path, capsys, monkeypatch, rule):
    path, line, name, status = shipped_with(tmp_path, rule)
    monkeypatch.chdir(tmp_path)
    assert main(["test-rules", path.name]) == 1
    out = capsys.readouterr().out
    assert f"{path.name}:{line}: test '{name}', at " in out
    expected = next(text for text in out.splitlines() if f"expected {rule} pending" in text)
    got = out.splitlines()[out.splitlines().index(expected) + 1]
    assert got.split()[:3] == ["got", rule, status]
    assert out.strip().endswith("1 FAILED")


def test_missing_and_unexpected_alerts_are_told(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(f"""\
rule_files: [{default_rules_path()}]
tests:
  - name: spiky only
    run:
      series: {{grad_norm: "1x30 50x3"}}
    expect:
      - at: 5m
        alerts:
          - {{rule: grad-norm-spiky, status: firing}}
          - {{rule: loss-nonfinite, status: firing}}
""")
    assert main(["test-rules", str(path)]) == 1
    out = capsys.readouterr().out
    assert "missing  loss-nonfinite firing" in out
    assert "unexpected grad-norm-exploding firing step=30 severity=critical value=50" in out


@pytest.mark.parametrize(("body", "message"), [
    ('series: {loss: "1 2 x"}', "token 'x' is not a number"),
    ('series: {loss: "1 2"}\n      colour: red', "unknown field 'colour'"),
    ("interval: 0s\n      series: {loss: '1'}", "interval"),
    ("series: {loss: '1'}\n    tick: 0.01ms", "over 1,000,000 ticks"),
])
def test_a_bad_test_file_is_one_line_per_problem_with_its_line(tmp_path, capsys, body,
                                                               message):
    path = tmp_path / "bad.test.yaml"
    path.write_text(f"""\
tests:
  - name: bad
    run:
      {body}
    expect:
      - at: 1m
""")
    assert main(["test-rules", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err and all(re.match(r".*bad\.test\.yaml:\d+: ", line) for line in err.splitlines())


def test_an_expectation_about_an_unknown_rule_is_an_error(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("""\
tests:
  - name: typo
    run: {series: {loss: "1x10"}}
    expect:
      - at: 1m
        alerts: [{rule: los-nonfinite, status: firing}]
""")
    assert main(["test-rules", str(path)]) == 2
    assert "t.yaml:6: test 'typo': no rule 'los-nonfinite' in the rule files" in (
        capsys.readouterr().err)
