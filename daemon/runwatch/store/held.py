"""What the one writer holds back: a quiet run's moving values, check memory and cursor.

On most ticks a run's alerts stay quiet: new rows move their values, steps and check
memory, and nothing anyone reads changes — status, summary, severity, labels. Writing
4,000 such rows every tick is most of a busy tick's cost, and only a restart would ever
read them. So the writer keeps them in memory (its cache holds the newest states) and
writes a quiet run's changes later: at the latest ``hold_for`` to twice ``hold_for`` after
the run was first held (spread by the run's path, so held runs do not all come due on the
same tick), when one of its alerts changes status or summary, and at ``close``.

A run is held whole or written whole — its alerts *and* its cursor — so the backend holds
each run as of some tick: its memory always matches its cursor. A graceful stop writes
everything (a restart evaluates exactly as an uninterrupted daemon); a crash loses at most
the held ticks of quiet runs, which the restart reads again from their stored cursors and
judges as one tick, exactly as a daemon that had not ticked in between. No status change
is ever held, so nothing fired, resolved or pending is lost or told twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from runwatch.model import AlertState, AlertStatus
from runwatch.store import codec

HOLD_FOR = 300.0  # seconds of the ticks' clock; a run is written within 1-2x of it
_QUIET = (AlertStatus.INACTIVE, AlertStatus.RESOLVED)


@dataclass
class _Run:
    alerts: dict[str, AlertState] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()  # the cursor keys it may come under: path, location
    due: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one commit writes now, and how the held runs change once it is written."""

    alerts: list[AlertState]
    cursors: dict[str, str]
    remember: set[str]  # fingerprints whose stored memory may be older than the cache's
    held: dict[tuple[str, str], _Run]  # (source, run path) -> held after the commit
    holding: list[AlertState]  # this commit's alerts that are held: checked, not written
    gone: set[tuple[str, str]]  # held runs the commit writes


def quiet_move(alert: AlertState, before: AlertState | None) -> bool:
    """Whether ``alert`` changes nothing but what only a restart reads of ``before``: both
    quiet, the same status, times, labels and summary — its values and memory may move."""
    return (before is not None and before.status in _QUIET
            and before.summary == alert.summary and codec.steady(before) == codec.steady(alert))


class Holder:
    def __init__(self, hold_for: float = HOLD_FOR) -> None:
        self.hold_for = hold_for
        self._runs: dict[tuple[str, str], _Run] = {}
        self._paths: dict[tuple[str, str], str] = {}  # (source, cursor key) -> run path

    def plan(self, source: str, alerts: Iterable[AlertState], cursors: Mapping[str, str],
             now: float, known: Mapping[str, AlertState | None]) -> Plan:
        """Split a commit into what is written now and what is held; ``known`` maps
        fingerprints to the writer's newest states (held ones included)."""
        groups: dict[str, dict[str, AlertState]] = {}
        for alert in alerts:  # the same alert twice: the last one wins
            ref = alert.run
            groups.setdefault(ref.path, {})[alert.fingerprint] = alert
        path_of, keys_of = {}, {}
        for path, group in groups.items():
            ref = next(iter(group.values())).run
            keys_of[path] = frozenset(key for key in (ref.path, ref.location) if key)
            path_of.update((key, path) for key in keys_of[path])
        write_alerts: list[AlertState] = []
        write_cursors: dict[str, str] = {}
        held: dict[tuple[str, str], _Run] = {}
        holding: list[AlertState] = []
        gone: set[tuple[str, str]] = set()
        remember: set[str] = set()

        def write(name: tuple[str, str], run: _Run, was_held: Iterable[str]) -> None:
            write_alerts.extend(run.alerts.values())
            write_cursors.update(run.cursors)
            # Only a held alert's stored memory may be older than the one the writer keeps.
            remember.update(was_held)
            gone.add(name)

        moved: dict[str, dict[str, str]] = {}
        for key, value in cursors.items():
            path = path_of.get(key)
            before_path = self._paths.get((source, key))
            if path is not None and before_path is not None and before_path != path:
                # The key has moved to another run (a run's path learnt from its records):
                # what was held under the old path is written first, so the new one wins.
                old = (source, before_path)
                if old in self._runs and old not in gone:
                    write(old, self._runs[old], self._runs[old].alerts)
            path = path or before_path
            if path is None:
                write_cursors[key] = value
            else:
                moved.setdefault(path, {})[key] = value

        for path in groups.keys() | moved.keys():
            name = (source, path)
            before = self._runs.get(name)
            group = groups.get(path, {})
            run = _Run(alerts={**(before.alerts if before else {}), **group},
                       cursors={**(before.cursors if before else {}), **moved.get(path, {})},
                       keys=keys_of.get(path) or (before.keys if before else frozenset()),
                       due=before.due if before else now + self._spread(path))
            if all(quiet_move(a, known.get(fp)) for fp, a in group.items()) and run.due > now:
                held[name] = run
                holding.extend(group.values())
            else:  # written whole: what was held of it, then this commit's
                write(name, run, before.alerts if before else ())
        for name, run in self._runs.items():
            if name[0] == source and name not in held and name not in gone and run.due <= now:
                write(name, run, run.alerts)
        return Plan(alerts=write_alerts, cursors=write_cursors, remember=remember,
                    held=held, holding=holding, gone=gone - held.keys())

    def apply(self, plan: Plan) -> None:
        """The commit is written: hold what it held, forget what it wrote."""
        for name in plan.gone:
            self._drop(name)
        for name, run in plan.held.items():
            self._runs[name] = run
            source, path = name
            for key in run.keys:
                self._paths[(source, key)] = path

    def everything(self) -> dict[str, tuple[list[AlertState], dict[str, str]]]:
        """Everything held, by source: to write at a stop, then :meth:`forget` it."""
        out: dict[str, tuple[list[AlertState], dict[str, str]]] = {}
        for (source, _), run in self._runs.items():
            alerts, cursors = out.setdefault(source, ([], {}))
            alerts.extend(run.alerts.values())
            cursors.update(run.cursors)
        return out

    def forget(self, source: str) -> None:
        """What was held of ``source`` is written."""
        for name in [name for name in self._runs if name[0] == source]:
            self._drop(name)

    def _drop(self, name: tuple[str, str]) -> None:
        run = self._runs.pop(name, None)
        if run is not None:
            for key in run.keys:
                if self._paths.get((name[0], key)) == name[1]:  # not since taken by another
                    self._paths.pop((name[0], key))

    def _spread(self, path: str) -> float:
        """Between ``hold_for`` and twice that, the same for the same run every time."""
        return self.hold_for * (1.0 + (zlib.crc32(path.encode()) % 1024) / 1024)
