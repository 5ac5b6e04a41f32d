"""``heartbeat``: a running run's writer has not been heard from for a while.

A dead process shows as a stale heartbeat. A hung one does not — wandb-core keeps
beating — which is what ``progress`` is for.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from runwatch.checks.base import Context, RuleBase, Verdict
from runwatch.fieldtypes import Duration
from runwatch.model import RunSnapshot, RunState


class HeartbeatRule(RuleBase):
    kind: Literal["heartbeat"]
    older_than: Duration

    default_summary: ClassVar[str] = "no heartbeat for {age} (run {state})"
    steps_hold: ClassVar[bool] = False

    def rests_until(self, snapshot: RunSnapshot) -> float:
        # Quiet while its heartbeat is younger than older_than; it only gets younger.
        if snapshot.state is not RunState.RUNNING or snapshot.heartbeat is None:
            return -math.inf
        return snapshot.heartbeat + self.older_than

    def evaluate(self, ctx: Context) -> Verdict:
        snap = ctx.snapshot
        if snap.state is not RunState.RUNNING:
            return Verdict(active=False, until=math.inf)
        if snap.heartbeat is None:
            return Verdict(active=None, until=math.inf)
        age = ctx.now - snap.heartbeat
        active = age > self.older_than
        return Verdict(active=active, age=age, threshold=self.older_than,
                       since=snap.heartbeat + self.older_than if active else None,
                       until=None if active else snap.heartbeat + self.older_than)
