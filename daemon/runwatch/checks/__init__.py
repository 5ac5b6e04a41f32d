"""Condition kinds: one module each, all behind :class:`runwatch.checks.base.RuleBase`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from runwatch.checks.absent import AbsentRule
from runwatch.checks.base import Context, Hold, Match, RuleBase, Verdict
from runwatch.checks.code_alert import CodeAlertRule
from runwatch.checks.heartbeat import HeartbeatRule
from runwatch.checks.nonfinite import NonfiniteRule
from runwatch.checks.plateau import PlateauRule
from runwatch.checks.progress import ProgressRule
from runwatch.checks.spike import SpikeRule
from runwatch.checks.state import StateRule
from runwatch.checks.threshold import ThresholdRule

Rule = Annotated[
    ThresholdRule | NonfiniteRule | HeartbeatRule | StateRule | SpikeRule | PlateauRule
    | AbsentRule | ProgressRule | CodeAlertRule,
    Field(discriminator="kind"),
]
RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
KINDS = ("threshold", "nonfinite", "heartbeat", "state", "spike", "plateau", "absent",
         "progress", "code_alert")

__all__ = ["KINDS", "RULE_ADAPTER", "Context", "Hold", "Match", "Rule", "RuleBase", "Verdict"]
