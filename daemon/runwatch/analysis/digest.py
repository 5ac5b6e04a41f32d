"""The daily digest's model: what ran, finished, failed and fired in one period. Pure.

One model, read by every rendering (Slack, email, webhook, terminal) so they never
disagree: per project, the running runs with their verdict, step and ETA (worst first),
the runs that ended in the period by outcome, the alerts that fired in it and those still
firing, worst first. The verdicts are ``characterize``'s — the rules' own judgement,
with the daemon's stored alerts counted — so the digest and the alerts agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runwatch.analysis.characterize import Health, RunReport
from runwatch.analysis.watch import OUTCOMES, watch
from runwatch.checks import Rule
from runwatch.model import AlertState, AlertStatus, RunSnapshot, RunState

# A digest judges every run of a team: its replays take fewer, longer slices than an
# on-demand report's (a spike shorter than a slice can then hide between two of them).
DIGEST_TICKS = 100
NO_PROJECT = "other"  # the section of alerts and runs without a project (a source's own)


@dataclass(frozen=True, kw_only=True, slots=True)
class Section:
    """One project's part of the digest."""

    project: str
    running: tuple[RunReport, ...]  # worst first
    ended: tuple[RunReport, ...]  # by outcome (bad news first), newest first
    fired: tuple[AlertState, ...]  # fired in the period, worst first
    firing: tuple[AlertState, ...]  # firing at the end of the period, worst first


@dataclass(frozen=True, kw_only=True, slots=True)
class Digest:
    start: float  # the period: [start, end)
    end: float
    sections: tuple[Section, ...]
    errors: tuple[str, ...] = ()  # sources that could not be read: the digest says so

    @property
    def running(self) -> tuple[RunReport, ...]:
        return tuple(r for s in self.sections for r in s.running)

    @property
    def ended(self) -> tuple[RunReport, ...]:
        return tuple(r for s in self.sections for r in s.ended)

    @property
    def fired(self) -> tuple[AlertState, ...]:
        return tuple(a for s in self.sections for a in s.fired)

    @property
    def firing(self) -> tuple[AlertState, ...]:
        return tuple(a for s in self.sections for a in s.firing)

    def outcome_counts(self) -> dict[RunState, int]:
        counts: dict[RunState, int] = {}
        for report in self.ended:
            counts[report.state] = counts.get(report.state, 0) + 1
        return {state: counts[state] for state in OUTCOMES if state in counts}

    def health_counts(self) -> dict[Health, int]:
        counts = dict.fromkeys(Health, 0)
        for report in self.running:
            counts[report.health] += 1
        return counts


def worst_alert_first(alert: AlertState) -> tuple[int, int, float, str]:
    return (alert.status != AlertStatus.FIRING, -alert.severity.rank,
            -(alert.fired_at or 0.0), alert.rule)


def compose(*, runs: Sequence[RunSnapshot], alerts: Sequence[AlertState], start: float,
            end: float, rules: Sequence[Rule], aliases: Mapping[str, tuple[str, ...]],
            errors: Sequence[str] = ()) -> Digest:
    """The digest of the period ``[start, end)``: ``runs`` are the runs the sources hold
    (running, and ended in the period; others are left out), ``alerts`` the store's (those
    that fired in the period and those still firing are kept)."""
    firing = [a for a in alerts if a.status == AlertStatus.FIRING]
    stored: dict[str, list[AlertState]] = {}
    for alert in firing:
        stored.setdefault(alert.run.path, []).append(alert)
    report = watch(runs, since=start, now=end, rules=rules, aliases=aliases, stored=stored,
                   max_ticks=DIGEST_TICKS)
    fired = [a for a in alerts if a.fired_at is not None and start <= a.fired_at < end]
    projects: dict[str, dict[str, list]] = {}

    def section(project: str) -> dict[str, list]:
        return projects.setdefault(project or NO_PROJECT,
                                   {"running": [], "ended": [], "fired": [], "firing": []})

    for run in report.running:
        section(run.run.project)["running"].append(run)
    for run in report.ended:
        section(run.run.project)["ended"].append(run)
    for alert in fired:
        section(alert.run.project)["fired"].append(alert)
    for alert in firing:
        section(alert.run.project)["firing"].append(alert)
    sections = []
    for name in sorted(projects, key=lambda p: (p == NO_PROJECT, p)):
        parts = projects[name]
        sections.append(Section(
            project=name, running=tuple(parts["running"]), ended=tuple(parts["ended"]),
            fired=tuple(sorted(parts["fired"], key=worst_alert_first)),
            firing=tuple(sorted(parts["firing"], key=worst_alert_first))))
    return Digest(start=start, end=end, sections=tuple(sections), errors=tuple(errors))
