"""``state``: the run ended badly — crashed, failed, killed (optionally also finished)."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, WithJsonSchema

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.fieldtypes import names_schema, one_or_many
from runwatch.model import RunSnapshot, RunState


class StateRule(RuleBase):
    kind: Literal["state"]
    states: Annotated[tuple[RunState, ...], BeforeValidator(one_or_many), WithJsonSchema(
        names_schema({"enum": [state.value for state in RunState]}))] = (
        RunState.CRASHED, RunState.FAILED, RunState.KILLED)
    resolve_on_end: bool = False  # the run's end is what this rule reports

    default_summary: ClassVar[str] = "run {state}"
    no_hold: ClassVar[str] = "a state rule cannot have for: an ended run is read once"



    def rests_until(self, snapshot: RunSnapshot) -> float:
        return math.inf  # its answer changes with the run's state only

    def evaluate(self, ctx: Context) -> Verdict:
        return Verdict(active=ctx.snapshot.state in self.states, step=ctx.snapshot.last_step,
                       until=math.inf)
