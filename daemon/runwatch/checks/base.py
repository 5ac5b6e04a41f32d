"""What every rule has, and the one interface every condition kind implements.

A rule is a frozen pydantic model (the config edge); its ``evaluate`` is a pure function of
a :class:`Context` — the run snapshot, the check's memory from the last tick and ``now`` —
returning a :class:`Verdict`. No clock, disk or network inside.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from runwatch import keys
from runwatch.duration import format_duration, parse_duration
from runwatch.fieldtypes import DURATION_TEXT, Labels, Names
from runwatch.model import EMPTY_SERIES, RunSnapshot, Series, Severity
from runwatch.template import template_errors
from runwatch.window import NONE, STEPS, STEPS_TEXT, Window

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Hold:
    """How long a condition must hold: a duration, or a number of steps."""

    seconds: float | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, value: Any) -> Hold:
        if isinstance(value, Hold):
            return value
        if isinstance(value, str) and (m := STEPS.match(value)):
            return cls(steps=int(m.group(1)))
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f"ambiguous hold {value!r}: write a duration like '10m' or a count like"
                f" '{value} steps'"
            )
        return cls(seconds=parse_duration(value))

    def window(self) -> Window:
        """The history that holding this long spans: what a first read must cover."""
        return Window(steps=self.steps or 0, seconds=self.seconds or 0.0)

    def __str__(self) -> str:
        if self.steps is not None:
            return f"{self.steps} steps"
        return format_duration(self.seconds or 0)


HOLD_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_TEXT},
        {"type": "string", "pattern": STEPS_TEXT},
    ],
    "description": "a duration (10m) or a count of the run's steps (500 steps)",
}
HoldField = Annotated[Hold, BeforeValidator(Hold.parse), WithJsonSchema(HOLD_SCHEMA)]


class Match(BaseModel):
    """Which runs a rule applies to. Every given field must match; globs use fnmatch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: Names = ()
    entity: Names = ()
    run: Names = ()  # run name or id globs
    group: Names = ()
    tags: Names = ()  # every tag listed must be on the run
    config: Mapping[str, str | int | float | bool | None] = Field(default_factory=dict)
    title: Names = ()  # code_alert rules only: globs on the title the training code gave

    @functools.cached_property
    def everything(self) -> bool:
        """Whether this matches every run (nothing given): most rules' case, asked per run
        and tick."""
        return not (self.project or self.entity or self.run or self.group or self.tags
                    or self.config)

    def matches(self, snapshot: RunSnapshot) -> bool:
        if self.everything:
            return True
        ref = snapshot.ref
        if self.project and not _any_glob(ref.project, self.project):
            return False
        if self.entity and not _any_glob(ref.entity, self.entity):
            return False
        if self.run and not (
            _any_glob(ref.name, self.run) or _any_glob(ref.id, self.run)
        ):
            return False
        if self.group and not _any_glob(snapshot.group, self.group):
            return False
        if self.tags and not set(self.tags) <= set(snapshot.tags):
            return False
        return all(
            _config_value(snapshot.config, key) == want for key, want in self.config.items()
        )


def _any_glob(text: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(text or "", p) for p in patterns)


_MISSING = object()


def _config_value(config: Mapping[str, Any], key: str) -> Any:
    """A config value by exact key, else by walking dotted parts through nested mappings."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    """Everything a check may look at: values only."""

    snapshot: RunSnapshot
    now: float
    aliases: Mapping[str, tuple[str, ...]]
    memory: Any = None  # the check's memory after the previous tick
    holding: bool = False  # the condition held at the previous tick (pending or firing)

    def series(self, metric: str) -> tuple[str | None, Series]:
        key = keys.resolve(metric, self.snapshot.keys, self.aliases)
        if key is None:
            return None, EMPTY_SERIES
        return key, self.snapshot.history.get(key, EMPTY_SERIES)


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """A check's answer for one run at one tick.

    ``active`` is None when the tick brought nothing to decide on (no new points): the
    engine keeps the alert's status. ``since``/``since_step`` say when the condition
    started holding, when the check can tell (a point's time beats the tick's ``now``).
    """

    active: bool | None
    memory: Any = None
    metric: str | None = None
    value: float | None = None
    step: int | None = None
    since: float | None = None
    since_step: int | None = None
    threshold: Any = None
    age: float | None = None
    first_value: float | None = None  # the value at ``since_step``: the first bad point
    latest: float | None = None  # the newest point judged, and its step
    latest_step: int | None = None
    # The same run as seen now (no new point; the same state, heartbeat, progress, step)
    # gives this same verdict, with the same memory, at any time before ``until``: the
    # engine need not ask again until then (see engine.Quiet). None: ask every tick.
    until: float | None = None


_NOT_SHAPE = frozenset({"severity", "description", "labels", "summary", "resolve_on_end",
                        "match", "hold"})


class RuleBase(BaseModel):
    """Fields every rule has; one subclass per condition kind adds its own."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              allow_inf_nan=False)

    default_summary: ClassVar[str] = "{rule} on {run}"
    steps_hold: ClassVar[bool] = True  # whether `for: N steps` means something here
    # Whether the check judges new points only: with none, it answers "nothing to decide
    # on" (active None) and keeps its memory, whatever the time or the run's state — so the
    # engine need not ask it on a tick that brought no point (see engine._stays).
    history_only: ClassVar[bool] = False
    # Whether the rule tells what the training code raised (code_alert): an alert per
    # raised title, told once, rather than one alert per run that holds and clears.
    raised_by_code: ClassVar[bool] = False
    # Why this kind takes no ``for:``, when it takes none (said when a rule gives one).
    no_hold: ClassVar[str] = ""

    name: str
    severity: Severity
    description: str = ""
    match: Match = Field(default_factory=Match)
    hold: HoldField | None = Field(default=None, alias="for")
    labels: Labels = Field(default_factory=dict)
    summary: str | None = None
    resolve_on_end: bool = True  # a firing alert resolves when its run ends

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"invalid rule name {value!r}: letters, digits and - _ . : only"
            )
        return value

    @field_validator("hold")
    @classmethod
    def _hold_allowed(cls, value: Any) -> Any:
        if value is not None and cls.no_hold:
            raise ValueError(cls.no_hold)
        return value

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: str | None) -> str | None:
        if value is not None and (errors := template_errors(value)):
            raise ValueError("; ".join(errors))
        return value

    @functools.cached_property
    def memory_tag(self) -> str:
        """Names the shape of this rule's check memory: every field but the ones that only
        label or describe, so an edit that changes what is remembered starts afresh."""
        shape = self.model_dump_json(exclude=_NOT_SHAPE)
        return hashlib.sha256(shape.encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _title_fits_the_kind(self) -> RuleBase:
        if self.match.title and not self.raised_by_code:
            raise ValueError("match.title is for code_alert rules: it matches the title"
                             " of an alert the training code raised")
        return self

    @model_validator(mode="after")
    def _hold_fits_the_kind(self) -> RuleBase:
        if self.hold is not None and self.hold.steps is not None and not self.steps_hold:
            raise ValueError(f"for: {self.hold} needs a metric's steps; this kind holds"
                             " by time only (write a duration like '10m')")
        return self

    def metrics(self) -> tuple[str, ...]:
        """Logical metric names (aliases or exact keys) this rule reads from history."""
        return ()

    def summary_template(self) -> str:
        return self.summary or self.default_summary

    def history_needed(self) -> Window:
        """The newest history this rule needs to judge a run it has never seen (see
        :mod:`runwatch.window`): a ``for:`` needs its steps or time; kinds add theirs."""
        return NONE if self.hold is None else self.hold.window()

    def wakes_at(self, values: Sequence[float], start: int) -> int:
        """The index of the first of ``values`` from ``start`` on that might make this
        rule, inactive and remembering nothing, anything else (``len(values)`` if none):
        a replay need not ask it until a tick brings that point. ``start`` where the kind
        cannot tell (the default)."""
        return start

    def rests_until(self, snapshot: RunSnapshot) -> float:
        """Until when this rule, inactive on ``snapshot`` and asked, stays so on a run
        whose rows and heartbeat only get newer and whose state stays (a replay's), the
        rows that come meanwhile moving its memory, if it keeps one, only as
        :meth:`memory_of` says; ``-inf`` where the kind cannot tell (the default)."""
        return -math.inf

    def memory_of(self, row_times: Sequence[float]) -> Any:
        """The memory this rule keeps, inactive, after ticks that brought the run's rows
        up to the newest of ``row_times`` (at least as many of the newest as
        :meth:`history_needed` asks), however the ticks split them: for the kinds that
        rest (:meth:`rests_until`) and keep a memory."""
        raise NotImplementedError(f"{type(self).__name__} does not rest")

    def evaluate(self, ctx: Context) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

