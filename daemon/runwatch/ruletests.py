"""``runwatch test-rules``: rules proven on synthetic runs before they page anyone.

A test file gives runs written in a compact notation, evaluation times, and the alerts
expected at each; the runs are replayed through the daemon's own tick (``run_tick``: the
engine, an in-memory store) and every difference is printed with the test file's line::

    rule_files: [../default.yaml]        # relative to this file
    tests:
      - name: exploding grad norm fires at once, resolves when it falls back
        run:
          interval: 10s                  # between steps; steps count from start_step
          series:
            train/grad_norm: "1+0.1x30 50x3 1x30"
        tick: 1m                         # how often the daemon evaluates (default 1m)
        expect:
          - at: 5m                       # time since the run's start
            alerts:
              - {rule: grad-norm-exploding, status: firing, step: 30}
          - at: 10m
            alerts:
              - {rule: grad-norm-exploding, status: resolved}

A series is space-separated values, one per step: a number, ``NaN``, ``Inf``, ``-Inf``;
``_`` for a step that does not log the key; ``VxN`` for V N times (``_x3``: three steps
without it); ``A+BxN`` / ``A-BxN`` for N values from A by B per step (``1+0.1x100``: 1,
1.1, … 10.9). Unlike promtool's notation, ``xN`` is always N values.

At each ``at``, the alerts listed must be exactly those pending or firing then, plus those
that resolved on that tick (``status: resolved``) and those told on that tick of what the
run's code raised (``raised:`` in the run, ``status: told``); ``step``, ``severity`` and
``labels`` are checked when given. ``rules:`` in a test limits the comparison to those rules.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError

from runwatch.checks import Rule
from runwatch.config.document import Document, Problem, display_path, read
from runwatch.config.errors import ConfigError, problems_from
from runwatch.config.fields import StrictModel
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.duration import format_duration
from runwatch.fieldtypes import Duration, Interval, Labels, Names
from runwatch.model import (
    AlertState,
    AlertStatus,
    CodeAlert,
    RunRef,
    RunState,
    Series,
    status_word,
)
from runwatch.replay import ROW_TIME, ReplayRun, ReplaySource
from runwatch.store.memory import MemoryStore
from runwatch.tick import run_tick

# Synthetic runs start at 2026-01-01T00:00:00Z.
T0 = 1_767_225_600.0
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RAMP = re.compile(rf"^({_NUMBER})([-+])({_NUMBER})x(\d+)$")
_REPEAT = re.compile(rf"^({_NUMBER}|_|NaN|[-+]?Inf)x(\d+)$", re.IGNORECASE)
_SPECIAL = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_MAX_STEPS = 1_000_000
MAX_TICKS = 1_000_000  # evaluations of one test


def parse_series(text: str) -> list[float | None]:
    """The values of a series in the notation above; None is a step without the key.
    Raises ValueError saying which token is wrong."""
    values: list[float | None] = []
    for token in str(text).split():
        if m := _RAMP.match(token):
            start, sign, by, count = float(m[1]), m[2], float(m[3]), int(m[4])
            by = by if sign == "+" else -by
            values.extend(start + i * by for i in range(_count(count, values, token)))
        elif m := _REPEAT.match(token):
            values.extend([_value(m[1])] * _count(int(m[2]), values, token))
        else:
            values.append(_value(token))
    if not values:
        raise ValueError(f"empty series {text!r}")
    return values


def _count(count: int, values: list[Any], token: str) -> int:
    if count < 1 or len(values) + count > _MAX_STEPS:
        raise ValueError(f"token {token!r}: a count from 1 to {_MAX_STEPS:,} steps")
    return count


def _value(token: str) -> float | None:
    if token == "_":
        return None
    if token.lower() in _SPECIAL:
        return _SPECIAL[token.lower()]
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"token {token!r} is not a number, NaN, Inf, _ , VxN or A+BxN") \
            from None


# --- the test file --------------------------------------------------------------------------


def _checked_series(text: str) -> str:
    parse_series(text)  # refused here, with the token, rather than at replay
    return text


class End(StrictModel):
    at: Duration
    state: RunState = RunState.FINISHED


class Raised(StrictModel):
    """An alert the run's training code raises (``run.alert``), ``at`` after its start."""

    at: Duration
    title: str = Field(min_length=1)
    text: str = ""
    level: Literal["INFO", "WARN", "ERROR"] = "INFO"
    wait: Duration = 60.0  # its wait_duration


class RunSpec(StrictModel):
    """One synthetic run."""

    name: str = "synthetic"
    id: str = "test0001"
    project: str = "tests"
    entity: str = "team"
    group: str = ""
    tags: Names = ()
    config: Mapping[str, Any] = Field(default_factory=dict)
    interval: Interval = 10.0
    start_step: int = Field(default=0, ge=0)
    series: Mapping[str, Annotated[str, Field(min_length=1), AfterValidator(_checked_series)]] = (
        Field(min_length=1))
    end: End | None = None  # the run ends then (its exit record), in this state
    alive_until: Duration | None = None  # its process stops beating then (dies silently)
    raised: tuple[Raised, ...] = ()


class ExpectedAlert(StrictModel):
    rule: str
    status: Literal["pending", "firing", "resolved", "told"]  # told: raised by the code
    step: int | None = None
    severity: str | None = None
    labels: Labels = Field(default_factory=dict)


class Expect(StrictModel):
    at: Duration
    alerts: tuple[ExpectedAlert, ...] = ()


class RuleTest(StrictModel):
    name: str = Field(min_length=1)
    run: RunSpec
    tick: Interval = 60.0
    rules: Names = ()
    expect: tuple[Expect, ...] = Field(min_length=1)


class TestFile(StrictModel):
    rule_files: Names = ()  # relative to the test file; none: the shipped rules
    aliases: Mapping[str, Names] = Field(default_factory=dict)
    tests: tuple[RuleTest, ...] = Field(min_length=1)


# --- replay ---------------------------------------------------------------------------------


def synthetic_run(spec: RunSpec) -> ReplayRun:
    """The run a test describes: one row per step from T0, ``interval`` apart."""
    values = {key: parse_series(text) for key, text in spec.series.items()}
    length = max(map(len, values.values()))
    steps = [spec.start_step + i for i in range(length)]
    times = [T0 + i * spec.interval for i in range(length)]
    history = {ROW_TIME: Series(steps=tuple(steps), times=tuple(times), values=tuple(times))}
    for key, points in values.items():
        kept = [i for i, value in enumerate(points) if value is not None]
        if kept:
            history[key] = Series(steps=tuple(steps[i] for i in kept),
                                  times=tuple(times[i] for i in kept),
                                  values=tuple(points[i] for i in kept))
    raised = []
    for event in sorted(spec.raised, key=lambda e: e.at):
        before = bisect.bisect_right(times, T0 + event.at)  # the rows logged by then
        raised.append(CodeAlert(title=event.title, text=event.text, level=event.level,
                                wait=event.wait, time=T0 + event.at,
                                step=steps[before - 1] if before else None))
    return ReplayRun(
        code_alerts=tuple(raised),
        ref=RunRef(source="test", id=spec.id, name=spec.name, project=spec.project,
                   entity=spec.entity, location=f"test/{spec.id}"),
        history=history,
        end_at=T0 + spec.end.at if spec.end is not None else None,
        end_state=spec.end.state if spec.end is not None else RunState.FINISHED,
        alive_until=T0 + spec.alive_until if spec.alive_until is not None else None,
        started=T0, tags=tuple(spec.tags), group=spec.group, config=dict(spec.config))


# --- running a file -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One test that did not get the alerts it expected: where, and the diff lines."""

    where: str  # file:line
    test: str
    at: str
    lines: tuple[str, ...]

    def __str__(self) -> str:
        head = f"{self.where}: test '{self.test}', at {self.at}:"
        return "\n".join([head, *(f"  {line}" for line in self.lines)])


@dataclass(frozen=True, slots=True)
class FileResult:
    file: str
    tests: int
    failures: tuple[Failure, ...]


def load_test_file(path: Path) -> tuple[TestFile, Document, list[Rule], Mapping[str, Any]]:
    """The test file at ``path``, its document (for lines), and the rules it tests;
    raises :class:`ConfigError` with every problem, ``file:line: message``."""
    shown = display_path(str(path))
    doc, problems = read(path, shown, what="rule test file")
    if doc is None:
        raise ConfigError.from_problems(problems or [Problem(
            file=shown, line=1, message="empty rule test file: expected 'tests:'")])
    try:
        spec = TestFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError.from_problems(
            [*problems, *problems_from(exc, doc, root=TestFile)]) from None
    rule_set = load_rules(list(spec.rule_files) or [default_rules_path()], path.parent,
                          {k: tuple(v) for k, v in spec.aliases.items()})
    return spec, doc, list(rule_set.rules), rule_set.aliases


def run_file(path: Path) -> FileResult:
    spec, doc, rules, aliases = load_test_file(path)
    known = {rule.name for rule in rules}
    problems = [doc.problem(("tests", i, "expect", j, "alerts", k, "rule"),
                            f"test '{test.name}': no rule '{alert.rule}' in the rule files")
                for i, test in enumerate(spec.tests)
                for j, expect in enumerate(test.expect)
                for k, alert in enumerate(expect.alerts) if alert.rule not in known]
    problems += [doc.problem(("tests", i, "rules"),
                             f"test '{test.name}': no rule '{name}' in the rule files")
                 for i, test in enumerate(spec.tests) for name in test.rules
                 if name not in known]
    problems += [doc.problem(("tests", i, "tick"),
                             f"test '{test.name}': over {MAX_TICKS:,} ticks of {test.tick:g}s"
                             " to its last 'at': a longer tick")
                 for i, test in enumerate(spec.tests)
                 if max(e.at for e in test.expect) / test.tick > MAX_TICKS]
    if problems:
        raise ConfigError.from_problems(problems)
    failures = []
    for i, test in enumerate(spec.tests):
        failures += run_test(test, rules, aliases, lambda *p, i=i: doc.line_of(("tests", i, *p)),
                             doc.file or str(path))
    return FileResult(file=doc.file or str(path), tests=len(spec.tests),
                      failures=tuple(failures))


def run_test(test: RuleTest, rules: list[Rule], aliases: Mapping[str, Any],
             line_of: Callable[..., int | None], file: str) -> list[Failure]:
    """Replay ``test``'s run tick by tick; a failure for each expectation not met."""
    source = ReplaySource([synthetic_run(test.run)], name="test")
    store = MemoryStore()
    checked = frozenset(test.rules) or None
    expects = sorted(enumerate(test.expect), key=lambda e: e[1].at)
    horizon = expects[-1][1].at
    ticks = sorted({*(k * test.tick for k in range(1, int(horizon // test.tick) + 1)),
                    *(e.at for _, e in expects)})
    failures = []
    for offset in ticks:
        now = T0 + offset
        run_tick(sources=[source], rules=rules, aliases=aliases, store=store, now=now)
        for j, expect in expects:
            if expect.at != offset:
                continue
            got = [a for a in store.alerts() if _shown(a, now)
                   and (checked is None or a.rule in checked)]
            lines = diff(expect.alerts, got)
            if lines:
                failures.append(Failure(where=f"{file}:{line_of('expect', j)}", test=test.name,
                                        at=_when(offset), lines=tuple(lines)))
    return failures


def _shown(alert: AlertState, now: float) -> bool:
    return alert.status in (AlertStatus.PENDING, AlertStatus.FIRING) or (
        alert.status == AlertStatus.RESOLVED and alert.resolved_at == now)


def _when(offset: float) -> str:
    return format_duration(offset) if offset == int(offset) else f"{offset:g}s"


def diff(expected: Iterable[ExpectedAlert], got: Iterable[AlertState]) -> list[str]:
    """Lines saying what differs: alerts missing, unexpected, or not as expected."""
    lines = []
    left = list(got)
    for want in expected:
        same_rule = [a for a in left if a.rule == want.rule]
        match = next((a for a in same_rule if _matches(want, a)), None)
        if match is not None:
            left.remove(match)
            continue
        if same_rule:
            other = same_rule[0]
            left.remove(other)
            lines.append(f"expected {_describe_expected(want)}")
            lines.append(f"     got {_describe(other)}")
        else:
            lines.append(f"missing  {_describe_expected(want)}")
    lines += [f"unexpected {_describe(a)}" for a in left]
    return lines


def _matches(want: ExpectedAlert, alert: AlertState) -> bool:
    if status_word(alert) != want.status:
        return False
    if want.step is not None and alert.step != want.step:
        return False
    if want.severity is not None and str(alert.severity) != want.severity:
        return False
    return all(alert.labels.get(k) == v for k, v in want.labels.items())


def _describe_expected(want: ExpectedAlert) -> str:
    parts = [want.rule, want.status]
    if want.step is not None:
        parts.append(f"step={want.step}")
    if want.severity is not None:
        parts.append(f"severity={want.severity}")
    parts += [f"{k}={v}" for k, v in want.labels.items()]
    return " ".join(parts)


def _describe(alert: AlertState) -> str:
    parts = [alert.rule, status_word(alert)]
    if alert.step is not None:
        parts.append(f"step={alert.step}")
    parts.append(f"severity={alert.severity}")
    parts += [f"{k}={v}" for k, v in alert.labels.items()]
    if alert.value is not None:
        parts.append(f"value={alert.value:g}")
    return " ".join(parts)


