"""Whole runs read from their run directories, for health reports.

A tick reads a run's log from its cursor; a report wants the run's whole history of the
keys it shows (``keys`` is any container: the report's ``KeyFilter`` is asked about each
key as the reader meets it). Nothing here touches cursors or alert state, and the reader
is the tick's own (``runlog``), so a run reads the same in both.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable
from dataclasses import dataclass

from runwatch.model import RunSnapshot
from runwatch.sources.rundir import (
    DEFAULT_DEAD_AFTER,
    RundirSource,
    read_records,
    snapshot_of,
)
from runwatch.sources.runlog import RunLog, id_from_dir


class RunNotFound(LookupError):
    """No run directory at the path given; the message names it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RundirRead:
    runs: tuple[RunSnapshot, ...]
    errors: tuple[str, ...]


def log_path(path: str | os.PathLike[str]) -> str:
    """The ``.wandb`` log of the run directory ``path`` names: the run directory itself,
    a ``wandb/`` directory or the folder holding it — their ``latest-run``, else their
    newest run directory (``run-<time>-<id>`` names sort by time)."""
    text = os.path.abspath(os.fspath(path))
    for folder in (text, os.path.join(text, "wandb")):
        for candidate in (folder, os.path.join(folder, "latest-run"), _newest_run(folder)):
            if candidate is None:
                continue
            real = os.path.realpath(candidate)
            log = os.path.join(real, f"run-{id_from_dir(real)}.wandb")
            if os.path.isfile(log):
                return log
    raise RunNotFound(f"{text}: not a wandb run directory (no run-<id>.wandb inside)")


def _newest_run(folder: str) -> str | None:
    try:
        names = [n for n in os.listdir(folder) if n.startswith(("run-", "offline-run-"))]
    except OSError:
        return None
    if not names:
        return None
    return os.path.join(folder, max(names, key=lambda n: n.removeprefix("offline-")))


def read_log(log: str, keys: Container[str], *, source: str = "rundir",
             now: float | None = None, dead_after: float | None = None
             ) -> tuple[RunSnapshot, list[str]]:
    """The run whose log is ``log``, with the history of ``keys``, and one line per damaged
    place found (the records before it are used); given ``now``, a run silent for
    ``dead_after`` is crashed, as the source takes it. OSError if the log cannot be read."""
    stat = os.stat(log)
    run, history, errors, _, _ = read_records(RunLog(key=os.path.dirname(log), log=log), stat,
                                           keys)
    return snapshot_of(run, source, history, stat.st_mtime, now=now,
                       dead_after=DEFAULT_DEAD_AFTER if dead_after is None else dead_after
                       ), errors


def read_run(path: str | os.PathLike[str], keys: Container[str], *, source: str = "rundir"
             ) -> tuple[RunSnapshot, list[str]]:
    """One run directory (see ``log_path``); RunNotFound or OSError when it cannot be read."""
    return read_log(log_path(path), keys, source=source)


def read_tree(paths: Iterable[str | os.PathLike[str]], keys: Container[str], now: float, *,
              source: str = "rundir", dead_after: float | None = None) -> RundirRead:
    """Every run found under ``paths`` (as the ``rundir`` source finds them), read whole;
    a run that cannot be read is one error line, the others are still read."""
    finder = RundirSource(source, paths)
    logs = finder.runs(now)
    runs: list[RunSnapshot] = []
    errors: list[str] = list(finder.path_errors)
    for log in sorted(logs.values()):
        try:
            snapshot, damage = read_log(log, keys, source=source, now=now,
                                        dead_after=dead_after)
        except FileNotFoundError:
            continue  # the SDK creates the directory before the log
        except OSError as exc:
            errors.append(f"{log}: cannot read: {exc.strerror or exc}")
            continue
        except Exception as exc:  # one run's surprise must not hide the others
            errors.append(f"{log}: cannot read: {type(exc).__name__}: {exc}")
            continue
        runs.append(snapshot)
        errors += damage
    return RundirRead(runs=tuple(runs), errors=tuple(errors))
