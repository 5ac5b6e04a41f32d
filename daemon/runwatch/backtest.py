"""``runwatch backtest``: what rules would have done over past runs.

Each run's whole history is replayed through the daemon's engine (``engine.evaluate``, as
``run_tick`` calls it) every ``interval`` of the run's own clock, each point seen ``delay``
after its time (wandb-core writes its log every ~15 s), the run's end seen when its exit
record is — asking at a tick only the rules whose answer could change then (``_Naps``:
the same answers, at the same ticks, as asking them all); each tick's alert states then go
through the daemon's notification pipeline (``notify.pipeline.plan`` and the outbox's
``drain``) into :class:`Tally` receivers. What comes out is, per run and rule, when each
alert would have fired and resolved and the messages that would have told it; across runs,
each rule's alerts and notifications per 100 run-hours, noisiest first.

Runs come from run directories or W&B, read whole (see ``cli._backtest_runs``). A run
that never wrote an exit record is replayed ``tail`` past its last record, as the daemon
would keep looking.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from runwatch import keys
from runwatch.checks import Rule, RuleBase
from runwatch.config.models import default_inhibit
from runwatch.engine import Quiet, evaluate
from runwatch.model import (
    AlertState,
    AlertStatus,
    RunSnapshot,
    Transition,
    evolve,
    fingerprint_at,
)
from runwatch.notify.base import Delivery, Message
from runwatch.notify.outbox import drain
from runwatch.notify.pipeline import plan
from runwatch.notify.report_json import number
from runwatch.replay import ROW_TIME, ReplayRun
from runwatch.store.memory import MemoryStore
from runwatch.tick import wanted_keys

MAX_TICKS = 1_000_000  # a month of a run at a tick every 3 s


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    interval: float = 60.0  # the daemon's tick, on the run's clock
    tail: float = 3600.0  # how long a run with no exit record is watched after its last sign
    # Without a config that names receivers: one receiver, on the default route.
    repeat_interval: float = 4 * 3600.0  # a firing alert's reminder
    send_resolved: bool = True
    config: Any = None  # a config.Config: its receivers, routes, grouping and inhibit rules


class Tally:
    """A receiver that sends nowhere: it keeps what the daemon would have sent it."""

    def __init__(self, name: str, into: list[Message]) -> None:
        self.name = name
        self._into = into

    def send(self, message: Message) -> Delivery:
        self._into.append(message)
        return Delivery(ok=True, detail="counted, not sent")

    def close(self) -> None:
        pass


_TOLD = (AlertStatus.FIRING, AlertStatus.RESOLVED)  # the states the pipeline reads


class Deliveries:
    """The daemon's own notification pipeline — routes, grouping, group_wait, inhibit
    rules, dedup, repeat interval, send_resolved, the outbox — over a replay's alert states
    (an in-memory store), into :class:`Tally` receivers. Asked at each tick; it plans only
    when something could be news (a transition, an alert firing, a message waiting)."""

    def __init__(self, options: Options) -> None:
        config = options.config
        if config is None or not config.receivers:
            config = SimpleNamespace(
                routes=(), receivers=(SimpleNamespace(name="backtest"),),
                repeat_interval=options.repeat_interval, send_resolved=options.send_resolved,
                inhibit=config.inhibit if config is not None else default_inhibit())
        self.config = config
        self.store = MemoryStore()
        self.sent: list[Message] = []
        self.receivers = {r.name: Tally(r.name, self.sent) for r in config.receivers}
        self._known: set[str] = set()  # alerts the store holds
        self._firing: set[str] = set()
        self.waiting = False  # a message held (group_wait) or not yet sent
        self.longest_wait = max((float(getattr(r, "group_wait", 0) or 0)
                                 for r in config.routes), default=0.0)

    def tick(self, alerts: Iterable[AlertState], transitions: Sequence[Transition],
             now: float) -> list[Message]:
        """What the receivers are sent after a tick that left ``alerts`` changed."""
        kept = [a for a in alerts if a.status in _TOLD or a.fingerprint in self._known]
        if kept:
            self.store.commit_tick(source="backtest", alerts=kept, cursors={}, now=now)
            for alert in kept:
                self._known.add(alert.fingerprint)
                if alert.status == AlertStatus.FIRING:
                    self._firing.add(alert.fingerprint)
                else:
                    self._firing.discard(alert.fingerprint)
        if not (transitions or self._firing or self.waiting):
            return []
        sent_before = len(self.sent)
        planned = plan(self.store, self.config, now)
        drain(self.store, self.receivers, now)
        self.waiting = planned.waiting > 0 or bool(self.store.outbox(include_failed=False))
        return self.sent[sent_before:]


@dataclass(kw_only=True, slots=True)
class AlertEpisode:
    """One alert of one rule on one run, from firing to resolved (or the replay's end)."""

    rule: str
    severity: str
    fired_at: float  # seconds since the run's first row
    fired_step: int | None
    value: float | None
    summary: str
    resolved_at: float | None = None
    resolution: str = ""
    notifications: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "severity": self.severity, "fired_at": self.fired_at,
            "fired_step": self.fired_step, "value": number(self.value),
            "summary": self.summary, "resolved_at": self.resolved_at,
            "resolution": self.resolution or None, "notifications": self.notifications,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Told:
    """One message a receiver would have been sent: when (seconds since the run's first
    row), to whom, the rules it tells firing and resolved."""

    at: float
    receiver: str
    firing: tuple[str, ...]
    resolved: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "receiver": self.receiver, "firing": list(self.firing),
                "resolved": list(self.resolved)}


@dataclass(kw_only=True, slots=True)
class RunResult:
    run: str  # its path
    id: str
    name: str
    hours: float  # the span replayed, first row to last sign
    steps: int  # rows replayed
    ticks: int
    episodes: list[AlertEpisode] = field(default_factory=list)
    # Every message sent, each receiver's its own (one message may tell several alerts).
    messages: list[Told] = field(default_factory=list)
    # Its rows' steps and times, and its first row's time: where a labelled bad step is.
    row_steps: Sequence[int] = ()
    row_times: Sequence[float] = ()
    first_time: float = 0.0

    def time_of_step(self, step: int) -> float | None:
        """Seconds since the first row at which the run reached ``step``."""
        at = bisect.bisect_left(self.row_steps, step)
        return self.row_times[at] - self.first_time if at < len(self.row_times) else None

    @property
    def notifications(self) -> int:
        return len(self.messages)

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "name": self.name, "hours": self.hours,
                "steps": self.steps, "ticks": self.ticks,
                "notifications": self.notifications,
                "alerts": [e.as_json() for e in self.episodes],
                "messages": [m.as_json() for m in self.messages]}


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleSummary:
    rule: str
    runs: int  # runs replayed
    runs_fired: int
    alerts: int
    notifications: int
    per_100_run_hours: float

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "runs": self.runs, "runs_fired": self.runs_fired,
                "alerts": self.alerts, "notifications": self.notifications,
                "notifications_per_100_run_hours": round(self.per_100_run_hours, 3)}


def replay_of(snapshot: RunSnapshot, delay: float) -> ReplayRun:
    """A run read whole, as the daemon would have seen it live. It ended (if it did) no
    earlier than its last row: W&B keeps heartbeats to the second, and rows logged in the
    last second before the end must still be seen before it."""
    times = [t for t in (snapshot.heartbeat, snapshot.progress) if t is not None]
    last_sign = max(times) if times else None
    return ReplayRun(
        ref=snapshot.ref, history=snapshot.history,
        end_at=last_sign if snapshot.state.ended else None,
        end_state=snapshot.state, alive_until=last_sign, started=snapshot.started,
        tags=snapshot.tags, group=snapshot.group, config=snapshot.config, delay=delay)


def backtest_run(run: ReplayRun, rules: Sequence[Rule],
                 aliases: Mapping[str, tuple[str, ...]], options: Options,
                 progress: Callable[[float, float], object] | None = None) -> RunResult:
    """Replay one run tick by tick through the daemon's engine (``engine.evaluate``, as
    ``run_tick`` calls it) and its notification pipeline; its alerts, as episodes with the
    messages that told them. ``progress(done, total)`` is told the seconds of the run's
    clock replayed so far. ValueError (one line, naming the run) if it would take more
    than ``MAX_TICKS`` ticks or a rule fails on its data."""
    first, last = run.first_time, run.last_time
    rows = run.history.get("_timestamp")
    result = RunResult(run=run.ref.path, id=run.ref.id, name=run.ref.display_name, hours=0.0,
                       steps=len(rows) if rows is not None else 0, ticks=0)
    if first is None or last is None or rows is None:
        return result
    result.row_steps, result.row_times, result.first_time = rows.steps, rows.times, first
    result.hours = (last - first) / 3600
    end = last + run.delay + (options.interval if run.end_at is not None else options.tail)
    start = first + run.delay
    ticks = math.ceil((end - start) / options.interval)
    if ticks > MAX_TICKS:
        raise ValueError(f"run {run.ref.path}: {ticks:,} ticks of {options.interval:g}s;"
                         f" at most {MAX_TICKS:,} a run: a longer interval")
    deliveries = Deliveries(options)
    states: dict[str, AlertState] = {}
    quiet: dict[str, Quiet] = {}
    naps = _Naps(run, rules, aliases)
    episodes: dict[str, AlertEpisode] = {}  # each alert's newest episode
    since, ended = -math.inf, False
    while True:
        now = start + (result.ticks + 1) * options.interval  # no drift from adding up
        result.ticks += 1
        if not ended and (asked := naps.awake(now, since, states)):
            snapshot = run.snapshot(since, now, wanted=naps.wanted)
            since, ended = now, snapshot.state.ended
            try:
                evaluation = evaluate(asked, snapshot, states, now, aliases,
                                      quiet_until=quiet)
                states.update((a.fingerprint, a) for a in evaluation.alerts)
                naps.settle(asked, snapshot, states, now)
            except Exception as exc:  # a rule that cannot judge these rows
                raise ValueError(f"run {run.ref.path}: evaluation failed at"
                                 f" +{now - first:.0f}s: {type(exc).__name__}: {exc}") from None
            alerts, transitions = evaluation.alerts, evaluation.transitions
        else:  # ended, or every rule asleep: nothing to ask
            if not ended:
                since, ended = now, run.state_at(now).ended
            alerts, transitions = (), ()
        _record(transitions, episodes, result, now - first)
        for message in deliveries.tick(alerts, transitions, now):
            result.messages.append(Told(
                at=now - first, receiver=message.receiver,
                firing=tuple(a.rule for a in message.firing),
                resolved=tuple(a.rule for a in message.resolved)))
            for alert in (*message.firing, *message.resolved):
                episode = episodes.get(alert.fingerprint)
                if episode is not None:
                    episode.notifications += 1
        if progress is not None and result.ticks % 100 == 0:
            progress(now - first, end - first)
        # After the run's end, on only while a message waits (group_wait) to be sent.
        if (now >= end or ended) and (not deliveries.waiting or result.ticks >= ticks + math.ceil(
                deliveries.longest_wait / options.interval) + 2):
            break
    result.episodes.sort(key=lambda e: (e.fired_at, e.rule))
    return result


@dataclass(frozen=True, slots=True)
class _Nap:
    """Until when a rule, inactive, need not be asked: until a tick is handed the
    ``index``-th point of ``key`` (a check of new points: the first that might stir it),
    sees what was logged at ``seen`` (the run's end, the next alert the code raised) or
    comes at ``until`` (when its heartbeat's or newest row's age could tell otherwise)."""

    seen: float = math.inf
    until: float = math.inf
    key: str = ""
    index: int = 0


class _Naps:
    """The rules a replay need not ask at a tick, their answer being known: inactive, and
    asking would leave them as they are (what ``evaluate`` keeps of an idle alert). A
    check of new points (threshold, nonfinite) sleeps until a tick is handed the first
    point that might stir it (``Rule.wakes_at``); one that rests (heartbeat, state,
    progress: ``Rule.rests_until``) until its answer could change or the run ends, a
    memory it keeps then rebuilt from the rows (``Rule.memory_of``); a code_alert rule
    until a tick sees the next alert the code raised. The rules asked read only their own
    keys, so the snapshot holds no others. Exact: a replay with every rule asked at every
    tick tells the same (tests/integration/test_backtest.py)."""

    def __init__(self, run: ReplayRun, rules: Sequence[Rule],
                 aliases: Mapping[str, tuple[str, ...]]) -> None:
        self.run, self.rules, self.aliases = run, rules, aliases
        self.fingerprints = {rule.name: fingerprint_at(rule.name, run.ref.path)
                             for rule in rules}
        self.all_keys = frozenset(run.history)
        self._rows = run.history.get(ROW_TIME)
        self.naps: dict[str, _Nap] = {}
        self._asked: list[Rule] = list(rules)
        self.wanted = wanted_keys(rules, aliases)  # every key the asked rules may read
        self.resters = frozenset(rule.name for rule in rules
                                 if type(rule).rests_until is not RuleBase.rests_until)
        # (of those, the ones whose memory is rebuilt when they wake)
        self.remembering = frozenset(rule.name for rule in rules if rule.name in self.resters
                                     and type(rule).memory_of is not RuleBase.memory_of)
        # When what the training code raised is seen: what stirs a code_alert rule.
        self.raised = sorted(a.time for a in run.code_alerts if a.time is not None)
        # The asked rules stay as they are while no tick sees a point logged at or after
        # ``_seen``, nor comes at or after ``_until``, nor is handed the point of a key
        # that ``_points`` waits for (by index), nor a newest row older than ``_floor``
        # (the newest row's time when a rule began to rest).
        self._seen = self._until = -math.inf
        self._points: list[tuple[Sequence[float], int]] = []  # (a key's times, index)
        self._floor: float | None = None
        self._rests: dict[str, float] = {}  # per resting rule: the newest row's time then

    def awake(self, now: float, since: float, states: dict[str, AlertState]) -> list[Rule]:
        """The rules to ask at ``now``, the last tick having been at ``since``; the memory
        of a rule that rested is brought to what it would be (into ``states``)."""
        stirred = self._stirred(now)
        if not stirred and now < self._until and now - self.run.delay < self._seen:
            return self._asked
        asked: list[Rule] = []
        for rule in self.rules:
            nap = self.naps.get(rule.name)
            if nap is not None:
                if not self._wakes(rule.name, nap, now, stirred):
                    continue
                del self.naps[rule.name]
                if rule.name in self.remembering:
                    self._catch_up(rule, since, states)
            asked.append(rule)
        self._asked = asked
        self._recount()
        return asked

    def settle(self, asked: Iterable[Rule], snapshot: RunSnapshot,
               states: Mapping[str, AlertState], now: float) -> None:
        """Put to sleep the rules just asked that may sleep."""
        slept = False
        for rule in asked:
            nap = self._nap(rule, snapshot, states.get(self.fingerprints[rule.name]), now)
            if nap is not None:
                self.naps[rule.name] = nap
                slept = True
        if slept:
            self._asked = [rule for rule in self._asked if rule.name not in self.naps]
            self._recount()

    def _nap(self, rule: Rule, snapshot: RunSnapshot, state: AlertState | None,
             now: float) -> _Nap | None:
        """How long ``rule``, just asked, may sleep; None: ask it at the next tick."""
        if rule.raised_by_code:  # an alert per title, told once: nothing stays
            return self._until_raised(now)
        if state is None or state.status is not AlertStatus.INACTIVE or snapshot.state.ended:
            return None
        if rule.name in self.resters:
            until = rule.rests_until(snapshot)
            if until <= now:
                return None
            if snapshot.progress is not None:
                self._rests[rule.name] = snapshot.progress
            return _Nap(until=until, seen=self.run.end)  # the end changes its state
        if rule.history_only and state.memory is None and len(rule.metrics()) == 1:
            return self._after_points(rule, snapshot, now)
        return None

    def _wakes(self, name: str, nap: _Nap, now: float, stirred: bool) -> bool:
        """Whether the rule sleeping ``nap`` is to be asked at ``now``."""
        if now >= nap.until or now - self.run.delay >= nap.seen:
            return True
        if not stirred:
            return False
        return name in self.resters or (bool(nap.key) and self.run.seen(
            nap.key, now) > nap.index)

    def _stirred(self, now: float) -> bool:
        """Whether a tick at ``now`` is handed a point a nap waits for, or, while a rule
        rests on its newest row only getting newer, a newest row older than when it began
        to rest (a clock stepped back: NTP, a run resumed on another host) — the rest
        then ends early, to be asked at this tick as at every one."""
        if not self._points and self._floor is None:
            return False
        cutoff = self.run.seen_until(now)  # as ReplayRun.seen, once for every key
        for times, index in self._points:
            if bisect.bisect_right(times, cutoff) > index:
                return True
        if self._floor is None or self._rows is None:
            return False
        handed = bisect.bisect_right(self._rows.times, cutoff)
        return handed > 0 and not self._rows.times[handed - 1] >= self._floor

    def _until_raised(self, now: float) -> _Nap:
        """A code_alert rule's nap: until a tick sees the next alert the code raised (one
        raised after the run's end is never seen: the replay stops there)."""
        at = bisect.bisect_right(self.raised, self.run.seen_until(now))
        return _Nap(seen=self.raised[at]) if at < len(self.raised) else _Nap()

    def _catch_up(self, rule: Rule, since: float, states: dict[str, AlertState]) -> None:
        """The memory a rule that rested would have after the tick at ``since``."""
        if self._rows is None:
            return
        seen = self.run.seen(ROW_TIME, since)
        need = rule.history_needed().rows
        times = self._rows.times[max(0, seen - need) if need else 0:seen]
        fp = self.fingerprints[rule.name]
        states[fp] = evolve(states[fp], memory=[rule.memory_tag, rule.memory_of(times)])

    def _recount(self) -> None:
        self.wanted = wanted_keys(self._asked, self.aliases)
        naps = self.naps.values()
        self._seen = min((nap.seen for nap in naps), default=math.inf)
        self._until = min((nap.until for nap in naps), default=math.inf)
        points: dict[str, int] = {}
        for nap in naps:
            if nap.key:
                points[nap.key] = min(nap.index, points.get(nap.key, nap.index))
        history = self.run.history
        self._points = [(history[key].times, index) for key, index in points.items()]
        self._floor = max((floor for name, floor in self._rests.items() if name in self.naps),
                          default=None)

    def _after_points(self, rule: Rule, snapshot: RunSnapshot, now: float) -> _Nap | None:
        metric = rule.metrics()[0]
        key = keys.resolve(metric, snapshot.keys, self.aliases)
        if key != keys.resolve(metric, self.all_keys, self.aliases):
            return None  # a key it prefers is yet to be logged: it will read that one then
        if key is None:  # the run never logs it: nothing will ever stir it
            return _Nap()
        series = self.run.history[key]
        seen = self.run.seen(key, now)
        wake = rule.wakes_at(series.values, seen)
        if wake <= seen:
            return None
        # (a tick is handed the points of a key in their order, up to the last one logged
        # by then: by index, whatever their times say)
        return _Nap() if wake == len(series.values) else _Nap(key=key, index=wake)


def _record(transitions: Iterable[Transition], episodes: dict[str, AlertEpisode],
            result: RunResult, at: float) -> None:
    for transition in transitions:
        alert = transition.alert
        if transition.status == AlertStatus.FIRING:
            episode = AlertEpisode(rule=alert.rule, severity=str(alert.severity), fired_at=at,
                                   fired_step=alert.since_step if alert.since_step is not None
                                   else alert.step, value=alert.value, summary=alert.summary)
            episodes[alert.fingerprint] = episode
            result.episodes.append(episode)
        elif transition.status == AlertStatus.RESOLVED:
            episode = episodes.get(alert.fingerprint)
            if episode is not None and episode.resolved_at is None:
                episode.resolved_at, episode.resolution = at, alert.resolution


def summarize(results: Sequence[RunResult], rules: Sequence[Rule]) -> list[RuleSummary]:
    """Per rule across runs, noisiest first (notifications per 100 run-hours)."""
    hours = sum(r.hours for r in results)
    summaries = []
    for rule in rules:
        episodes = [(r, e) for r in results for e in r.episodes if e.rule == rule.name]
        notifications = sum(e.notifications for _, e in episodes)
        summaries.append(RuleSummary(
            rule=rule.name, runs=len(results), runs_fired=len({r.run for r, _ in episodes}),
            alerts=len(episodes), notifications=notifications,
            per_100_run_hours=100 * notifications / hours if hours else 0.0))
    return sorted(summaries, key=lambda s: (-s.per_100_run_hours, -s.alerts, s.rule))


# --- labelled runs: scoring ---------------------------------------------------------------

_LABEL = re.compile(r"^(?:run=)?(?P<run>[^:=\s]+):(?:bad@(?P<step>\d+)|(?P<good>good))$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Label:
    """What a run is known to be: bad from ``bad_at`` on, or good (``bad_at`` None)."""

    run: str  # its id, name or path
    bad_at: int | None

    @classmethod
    def parse(cls, text: str) -> Label:
        m = _LABEL.match(text.strip())
        if m is None:
            raise ValueError(f"invalid label {text!r}: expected run=ID:bad@STEP or"
                             " run=ID:good")
        return cls(run=m["run"], bad_at=None if m["good"] else int(m["step"]))

    def names(self, result: RunResult) -> bool:
        return self.run in (result.id, result.name, result.run)


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleScore:
    """One rule over the labelled runs: a bad run is detected when the rule fires at or
    after its bad step; anything it fires on a good run, or before a bad run's bad step,
    is a false alert."""

    rule: str
    bad_runs: int
    detected: int
    missed: int
    false_alerts: int
    false_per_100_run_hours: float
    median_time_to_detect: float | None  # seconds from the bad step's time to firing

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "bad_runs": self.bad_runs, "detected": self.detected,
                "missed": self.missed, "false_alerts": self.false_alerts,
                "false_alerts_per_100_run_hours": round(self.false_per_100_run_hours, 3),
                "median_time_to_detect": self.median_time_to_detect}


def score(results: Sequence[RunResult], labels: Sequence[Label],
          rules: Sequence[Rule]) -> list[RuleScore]:
    """Each rule scored over the runs that carry a label (the others are not scored).
    Raises ValueError naming a label that names no run replayed."""
    labelled: list[tuple[RunResult, Label, float | None]] = []
    for label in labels:
        result = next((r for r in results if label.names(r)), None)
        if result is None:
            raise ValueError(f"label {label.run!r}: no such run among those replayed")
        bad_time = result.time_of_step(label.bad_at) if label.bad_at is not None else None
        if label.bad_at is not None and bad_time is None:
            raise ValueError(f"label {label.run!r}: the run never reached step {label.bad_at}")
        labelled.append((result, label, bad_time))
    hours = sum(r.hours for r, _, _ in labelled)
    bad_runs = sum(1 for _, label, _ in labelled if label.bad_at is not None)
    scores = []
    for rule in rules:
        detected, delays, false_alerts = 0, [], 0
        for result, label, bad_time in labelled:
            episodes = [e for e in result.episodes if e.rule == rule.name]
            if label.bad_at is None or bad_time is None:
                false_alerts += len(episodes)
                continue
            hits = [e for e in episodes if e.fired_step is None or e.fired_step >= label.bad_at]
            false_alerts += len(episodes) - len(hits)
            if hits:
                detected += 1
                delays.append(max(0.0, hits[0].fired_at - bad_time))
        scores.append(RuleScore(
            rule=rule.name, bad_runs=bad_runs, detected=detected, missed=bad_runs - detected,
            false_alerts=false_alerts,
            false_per_100_run_hours=100 * false_alerts / hours if hours else 0.0,
            median_time_to_detect=statistics.median(delays) if delays else None))
    return sorted(scores, key=lambda s: (-s.detected, s.false_per_100_run_hours, s.rule))
