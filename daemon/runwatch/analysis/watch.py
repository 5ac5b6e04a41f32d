"""``watch``: every run of a team at a glance — the running ones worst first, and what
ended since a moment, by outcome. Pure: it takes the runs (with history) and ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runwatch.analysis.characterize import RunReport, characterize
from runwatch.analysis.replay import MAX_TICKS
from runwatch.checks import Rule
from runwatch.model import AlertState, RunSnapshot, RunState

# The order outcomes are told in: the bad news first.
OUTCOMES = (RunState.CRASHED, RunState.FAILED, RunState.KILLED, RunState.PREEMPTED,
            RunState.FINISHED)


@dataclass(frozen=True, kw_only=True, slots=True)
class WatchReport:
    now: float
    since: float
    running: tuple[RunReport, ...]  # worst first
    ended: tuple[RunReport, ...]  # ended at or after ``since``: by outcome, newest first

    def by_outcome(self) -> dict[RunState, tuple[RunReport, ...]]:
        return {state: runs for state in OUTCOMES
                if (runs := tuple(r for r in self.ended if r.state == state))}


def worst_first(report: RunReport) -> tuple[int, int, str]:
    return (-report.health.rank, -len(report.reasons), report.run.display_name)


def watch(runs: Sequence[RunSnapshot], *, since: float, now: float, rules: Sequence[Rule],
          aliases: Mapping[str, tuple[str, ...]],
          stored: Mapping[str, Sequence[AlertState]] | None = None,
          max_ticks: int = MAX_TICKS) -> WatchReport:
    """Characterize the running runs and those that ended since ``since``; ``stored`` holds
    the daemon's alerts by run path, when a store is at hand."""
    stored = stored or {}
    running: list[RunReport] = []
    ended: list[RunReport] = []
    for run in runs:
        if run.state.ended:
            last = max((t for t in (run.heartbeat, run.progress) if t is not None), default=None)
            if last is None or last < since:
                continue
        report = characterize(run, rules=rules, aliases=aliases, now=now,
                              stored=stored.get(run.ref.path, ()), max_ticks=max_ticks)
        (ended if report.ended else running).append(report)
    running.sort(key=worst_first)
    order = {state: i for i, state in enumerate(OUTCOMES)}
    ended.sort(key=lambda r: (order.get(r.state, len(OUTCOMES)), -(r.last_seen or 0.0),
                              r.run.display_name))
    return WatchReport(now=now, since=since, running=tuple(running), ended=tuple(ended))
