"""``code_alert``: an alert the training code raised itself with ``run.alert(title=…,
text=…, level=…, wait_duration=…)``.

W&B delivers those only for online runs; an offline run keeps each in its log, where the
run-directory source reads it. Each is told once, as W&B would: a new title is a new
alert, the same title on the same run is not told again within the ``wait_duration`` of
the one told. Such an alert has no "resolved": the engine (``engine.raised``) fires and
closes it in one step, so it reaches the receivers once, as news, and expires.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.fieldtypes import Duration
from runwatch.model import CodeAlert, Severity

LEVELS = ("INFO", "WARN", "ERROR")  # what the SDK writes
DEFAULT_LEVELS: Mapping[str, Severity] = {
    "INFO": Severity.INFO, "WARN": Severity.WARNING, "ERROR": Severity.CRITICAL}


def _upper_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).upper(): v for k, v in value.items()}
    return value


class CodeAlertRule(RuleBase):
    kind: Literal["code_alert"]
    # The severity of a level the SDK does not write (and the rule's, where one is asked).
    severity: Severity = Severity.WARNING
    levels: Annotated[Mapping[str, Severity], BeforeValidator(_upper_keys)] = Field(
        default_factory=lambda: dict(DEFAULT_LEVELS))
    # A raised alert that is older than this when first read is not told: a first start
    # over a folder of old runs does not replay their alerts (its time is the newest
    # history row's before it).
    max_age: Duration = 3600.0
    resolve_on_end: bool = False  # nothing of it is ever firing when its run ends

    default_summary: ClassVar[str] = "{title}: {text}"
    steps_hold: ClassVar[bool] = False
    no_hold: ClassVar[str] = "a code_alert rule cannot have for: each alert is told once"
    raised_by_code: ClassVar[bool] = True


    @field_validator("levels")
    @classmethod
    def _known_levels(cls, value: Mapping[str, Severity]) -> Mapping[str, Severity]:
        unknown = sorted(set(value) - set(LEVELS))
        if unknown:
            raise ValueError(f"unknown level {', '.join(unknown)}: the SDK writes"
                             f" {', '.join(LEVELS)}")
        return {**DEFAULT_LEVELS, **value}

    def severity_of(self, raised: CodeAlert) -> Severity:
        return self.levels.get(raised.level.upper(), self.severity)

    def wants(self, raised: CodeAlert) -> bool:
        """Whether ``raised`` is one of this rule's (``match.title`` globs, if any)."""
        titles = self.match.title
        return not titles or any(fnmatch.fnmatchcase(raised.title, p) for p in titles)

    def summary_of(self, raised: CodeAlert) -> dict[str, str]:
        """The ``title`` and ``text`` template fields (untrusted: every receiver escapes
        them as it escapes run names)."""
        return {"title": raised.title, "text": raised.text}

    def evaluate(self, ctx: Context) -> Verdict:
        # Never asked: the engine tells each raised alert (engine.raised).
        return Verdict(active=False, until=math.inf)
