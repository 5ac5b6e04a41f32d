"""The ``rundir`` source: runs read from the run directories the wandb SDK writes locally.

Every run the SDK starts gets ``<dir>/wandb/run-<time>-<id>/`` (``offline-run-…`` when
offline) holding ``run-<id>.wandb``, the run's transaction log. This source finds those
directories under the configured paths and reads each log incrementally: a run's cursor
keeps the byte offset of the last complete record plus everything learned from the
records before it, so a tick reads only the bytes written since.

Nothing else in a run directory is used: offline runs have no ``wandb-summary.json`` or
``config.yaml``, and wandb-core buffers the log, writing it every ~15 s or whenever a
32 KiB block fills, so what a live run did shows up within about 15 s (see ``wandbfile``).

Run state comes from the records: RUNNING until an exit record, then FINISHED for exit
code 0, PREEMPTED if the run had marked itself preempting, KILLED for 255 (what the SDK
records for KeyboardInterrupt) and FAILED for any other code (an uncaught exception
records 1). A run that was SIGKILLed or lost its machine has no exit record: it stays
RUNNING while its heartbeat goes stale (which the heartbeat rule catches), and once no
record has come for ``dead_after`` it is taken as ended, CRASHED "no record for 2h" — as
W&B marks such a run crashed — so its alerts are told once, not repeated for ever. A
record arriving later makes it RUNNING again.

``heartbeat`` is the newest time any record carries (history ``_timestamp``, system stats,
console output, the run start), and the log's mtime only while no record carries a time.
Record times belong to the run: they survive copying and syncing, and mtime adds nothing
for a live run because the writer only touches the file when it appends those records.

Every record whose content this source uses is CRC-verified; the others are only framed.
Verified: every history, run, config, exit, preempting, metric, stats, console output and
explicit summary record (the reader checks them as it hands them out), and the step
summaries actually folded into the run's summary, the newest per key set (checked when
folded, see ``runlog.LogRead``). Only framed: the step summaries superseded by a newer
one for the same keys, wandb's runtime summaries, and every kind this source does not
read. Damage is reported by path and offset, once: a damaged chunk stops the read there
and the records before it are used (each later read stops there again, unreported); a
folded step summary found damaged, or a record that does not parse, is skipped and the
rest of the log is used.

A configured path that does not exist, is not a directory or cannot be listed gets one
error line on every poll (``<source>: <path>: no such directory``) until a full search
finds it usable; the other paths are still searched. A folder inside one that cannot be
listed (permissions, a listing that fails midway, a link into ``/proc``) is one error line,
said once and again when it changes; every other folder is still searched.

Only regular files are read: a FIFO, socket or device where a log should be is one error
line naming it, and the file is opened non-blocking, so nothing in a watched tree can
block a tick.

Discovery: a full search every ``rescan`` seconds; in between, every folder the search
listed is checked by its mtime (a new entry changes it), and only changed ones are listed
again — a new run, or a new ``wandb/`` folder anywhere in the searched depth, is found at
the next poll at the cost of one ``stat`` per folder.
"""

from __future__ import annotations

import os
import stat as statmode
from collections.abc import Container, Iterable, Mapping

from runwatch.duration import format_duration
from runwatch.model import CodeAlert, RunSnapshot, RunState, Series
from runwatch.sources.base import Poll
from runwatch.sources.firstread import HEAD_WINDOW, Head, window_start
from runwatch.sources.runlog import KINDS, LogRead, RunLog, id_from_dir
from runwatch.sources.wandbfile import LogReader
from runwatch.window import DEFAULT_FIRST_READ, FULL, NONE, Window

DEFAULT_DEPTH = 6
DEFAULT_RESCAN = 600.0  # the full search; changed folders are listed at every poll
DEFAULT_DEAD_AFTER = 2 * 3600.0  # a live run with no record for this long is taken as crashed

_WANDB_DIRS = ("wandb", ".wandb")
_RUN_PREFIXES = ("run-", "offline-run-")
# Directories that hold no runs and can be huge (hidden ones, .venv and .git included,
# are skipped as well).
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "dist-packages", "venv"})
# Pseudo file systems: a link into one is never followed (/proc/1/root is the whole disk).
_PSEUDO = ("/proc", "/sys", "/dev")


# --- the source --------------------------------------------------------------------------


class RundirSource:
    """Runs found in ``wandb/`` directories under ``paths``, read from their ``.wandb`` logs.

    ``depth`` is how many directory levels the search descends below a configured path
    to find ``wandb`` directories: 0 finds only ``path/wandb``, 1 also ``path/*/wandb``,
    and so on. A path may also name a ``wandb`` directory or a run directory itself.
    Hidden directories and dependency trees are skipped, and run directories are never
    entered beyond their log. The full search runs every ``rescan`` seconds; in between,
    every folder it listed that changed (by mtime) is listed again, which is where new runs
    and new ``wandb`` directories appear. A run with no record for ``dead_after`` seconds
    is taken as crashed.
    """

    def __init__(
        self,
        name: str,
        paths: Iterable[str | os.PathLike[str]],
        *,
        depth: int = DEFAULT_DEPTH,
        rescan: float = DEFAULT_RESCAN,
        dead_after: float = DEFAULT_DEAD_AFTER,
        first_read: Window = DEFAULT_FIRST_READ,
    ):
        self.name = name
        self.paths = tuple(os.path.abspath(os.fspath(p)) for p in paths)
        self.depth = depth
        self.rescan = rescan
        self.dead_after = dead_after
        self.first_read = first_read
        self._runs: dict[str, str] = {}  # run key (real path of the run dir, as text) -> log
        self._wandb_dirs: dict[str, int] = {}  # wandb dir -> mtime_ns when listed
        self._dirs: dict[str, tuple[int, int]] = {}  # searched folder -> (mtime_ns, level)
        self._walk_errors: dict[str, str] = {}  # folder -> why it cannot be searched
        self._walk_said: dict[str, str] = {}  # folder -> what was said of it
        self._pseudo_devs = _pseudo_devices()
        self._last_scan: float | None = None
        self._path_errors: list[str] = []  # configured paths that cannot be searched
        # run key -> (cursor, state) pairs recently produced or parsed: a poll whose
        # cursor is one of these skips parsing it. Two, because the caller may hand back
        # the previous cursor when an evaluation failed.
        self._states: dict[str, list[tuple[str, RunLog]]] = {}
        # log path -> the error said about it; said once, until a read of it succeeds
        self._reported: dict[str, str] = {}
        self._wanted_cache: tuple[frozenset[str], frozenset[str]] | None = None

    @property
    def path_errors(self) -> tuple[str, ...]:
        """The configured paths the last full search could not search, a line each."""
        return tuple(self._path_errors)

    # -- discovery --

    def runs(self, now: float) -> dict[str, str]:
        """Run key -> path of its ``.wandb`` log, for every run directory found."""
        if self._last_scan is None or now - self._last_scan >= self.rescan or now < self._last_scan:
            self._full_scan()
            self._last_scan = now
            return self._runs
        for folder, (mtime, level) in list(self._dirs.items()):
            if _mtime(folder) != mtime:  # something was added, removed or renamed in it
                self._walk(folder, level, self._runs, set(), fresh_only=True)
        for wandb_dir, mtime in list(self._wandb_dirs.items()):
            if _mtime(wandb_dir) != mtime:
                self._list_wandb_dir(wandb_dir, self._runs)
        return self._runs

    def _full_scan(self) -> None:
        runs: dict[str, str] = {}
        self._wandb_dirs = {}
        self._dirs = {}
        self._walk_errors = {}
        self._path_errors = []
        visited: set[str] = set()
        for path in self.paths:
            problem = _unsearchable(path)
            if problem:
                self._path_errors.append(f"{self.name}: {path}: {problem}")
                continue
            real = os.path.realpath(path)  # `latest-run` names a run through a symlink
            if os.path.isfile(os.path.join(real, f"run-{id_from_dir(real)}.wandb")):
                self._add_run(real, runs)
            elif os.path.basename(path) in _WANDB_DIRS:
                self._list_wandb_dir(path, runs)
            else:
                self._walk(path, 0, runs, visited)
        self._runs = runs
        for key in self._states.keys() - runs.keys():
            del self._states[key]  # the run directory is gone
        logs = set(runs.values())
        for log in self._reported.keys() - logs:
            del self._reported[log]

    def _walk(self, path: str, level: int, runs: dict[str, str], visited: set[str], *,
              fresh_only: bool = False) -> None:
        """Search ``path`` (``level`` below a configured path) for ``wandb`` directories.
        ``fresh_only``: ``path`` changed since it was searched — only what is new in it
        (folders and ``wandb`` directories not known yet) is searched."""
        try:
            info = os.stat(path)
            if info.st_dev in self._pseudo_devs:  # /proc, /sys, /dev reached some way
                self._walk_errors[path] = (f"{self.name}: {_text(path)}: a pseudo file"
                                           " system (/proc, /sys or /dev): not searched")
                return
            self._dirs[path] = (info.st_mtime_ns, level)
            with os.scandir(path) as listing:
                entries = list(listing)  # a listing may fail midway: all of it, or none
        except FileNotFoundError:
            self._forget(path)  # removed or renamed since: what it held is gone with it
            return
        except OSError as exc:
            self._cannot_list(path, exc)
            return
        self._walk_errors.pop(path, None)
        descend = level < self.depth
        for entry in entries:
            name = entry.name
            if name in _WANDB_DIRS:
                try:
                    is_dir = entry.is_dir()
                except OSError:  # a symlink loop, an unreadable link
                    continue
                if is_dir and not (fresh_only and entry.path in self._wandb_dirs):
                    self._list_wandb_dir(entry.path, runs)
                continue
            if not descend or name[0] == "." or name in _SKIP_DIRS:
                continue
            if fresh_only and entry.path in self._dirs:
                continue  # known: its own mtime says when it changes
            try:
                if not entry.is_dir():
                    continue
                if entry.is_symlink():
                    # Follow links to directories, once each: a link cycle or two
                    # links to one tree must not repeat the search.
                    real = os.path.realpath(entry.path)
                    if real.startswith(_PSEUDO) and (real + "/").startswith(
                            tuple(p + "/" for p in _PSEUDO)):
                        self._walk_errors[entry.path] = (
                            f"{self.name}: {_text(entry.path)}: a link into"
                            f" {_text(real)}: not searched")
                        continue
                    if real in visited:
                        continue
                    visited.add(real)
            except OSError:
                continue
            self._walk(entry.path, level + 1, runs, visited)

    def _list_wandb_dir(self, path: str, runs: dict[str, str]) -> None:
        try:
            self._wandb_dirs[path] = os.stat(path).st_mtime_ns
            with os.scandir(path) as listing:
                entries = list(listing)
        except FileNotFoundError:
            self._forget(path)
            return
        except OSError as exc:
            self._cannot_list(path, exc)
            return
        self._walk_errors.pop(path, None)
        for entry in entries:
            # `latest-run` is a symlink to one of these; taking names only (and
            # deduplicating by real path) keeps it from counting a run twice.
            if entry.name.startswith(_RUN_PREFIXES):
                try:
                    if not entry.is_dir():
                        continue
                except OSError:
                    continue
                self._add_run(os.path.realpath(entry.path), runs)

    def _cannot_list(self, path: str, exc: OSError) -> None:
        self._walk_errors[path] = (f"{self.name}: {_text(path)}: cannot list:"
                                   f" {exc.strerror or exc}; its runs are not checked")

    def _forget(self, path: str) -> None:
        """A searched folder that is gone: drop it and what was found under it."""
        inside = path.rstrip(os.sep) + os.sep
        for known in (self._dirs, self._wandb_dirs, self._walk_errors):
            for folder in [f for f in known if f == path or f.startswith(inside)]:
                del known[folder]
        for key in [k for k, log in self._runs.items() if log.startswith(inside)]:
            del self._runs[key]

    def _add_run(self, real: str, runs: dict[str, str]) -> None:
        key = _text(real)  # the run's key and location; `real` stays the path to read
        if key not in runs:
            known = self._runs.get(key)
            runs[key] = known or os.path.join(real, f"run-{id_from_dir(real)}.wandb")

    # -- polling --

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float, *,
             keys_for: object = None, needs_config: bool = True,
             window: Window = NONE) -> Poll:
        # Every wanted key is decoded straight from the bytes already read: narrowing them
        # per run (keys_for) would save nothing here, and config is always on disk.
        wanted = self._wanted(wanted_keys)
        first_read = self.first_read | window  # how far back a run seen the first time is read
        snapshots: list[RunSnapshot] = []
        new_cursors: dict[str, str] = {}
        runs = self.runs(now)
        # A path that cannot be searched is a config problem: said on every poll.
        errors: list[str] = list(self._path_errors)
        errors += self._walk_news()
        for key, log in runs.items():
            cursor = cursors.get(key)
            try:
                stat = os.stat(log)
            except FileNotFoundError:
                continue  # the SDK creates the directory before the log
            except OSError as exc:
                self._report(errors, log, f"{_text(log)}: cannot read: {exc.strerror or exc}")
                # What was known of the run still stands: its heartbeat goes stale.
                run = self._state(key, log, cursor)
                if not run.state.ended and run.mtime_ns >= 0:
                    self._live(snapshots, new_cursors, cursor, run, {}, run.mtime_ns / 1e9,
                               now)
                continue
            if not statmode.S_ISREG(stat.st_mode):  # a FIFO would block the read for ever
                self._report(errors, log, f"{_text(log)}: not a regular file"
                                          f" ({_file_kind(stat.st_mode)}); not read")
                continue
            run = self._state(key, log, cursor)
            if (
                stat.st_size == run.size
                and stat.st_mtime_ns == run.mtime_ns
                and stat.st_ino == run.ino
                and stat.st_dev == run.dev
            ):
                if not run.state.ended:
                    self._live(snapshots, new_cursors, cursor, run, {}, stat.st_mtime, now)
                continue
            try:
                read = read_records(run, stat, wanted, first_read)
            except Exception as exc:  # one run's surprise must not stop the others
                if isinstance(exc, OSError):
                    message = f"{_text(log)}: cannot read: {exc.strerror or exc}"
                else:
                    message = f"{_text(log)}: cannot read at offset {run.offset}: {exc!r}"
                self._report(errors, log, message)
                # The run as it was before this read: still there, still checked (its
                # heartbeat goes stale), and read again next poll.
                if not run.state.ended:
                    self._live(snapshots, new_cursors, cursor, run, {}, stat.st_mtime, now)
                continue
            self._reported.pop(log, None)
            run, history, damage, changed, raised = read
            errors += damage
            if raised and not offline(log):
                raised = ()  # an online run's alerts: W&B delivers them itself
            text = run.to_cursor()
            new_cursors[key] = text
            self._remember(key, cursor, text, run)
            if not run.state.ended:
                self._live(snapshots, new_cursors, text, run, history, stat.st_mtime, now,
                           changed=changed, raised=raised)
            elif changed:
                snapshots.append(snapshot_of(run, self.name, history, stat.st_mtime,
                                             raised=raised))
        return Poll(snapshots=tuple(snapshots), cursors=new_cursors, errors=tuple(errors))

    def _live(self, snapshots: list[RunSnapshot], new_cursors: dict[str, str],
              cursor: str | None, run: RunLog, history: Mapping[str, Series], mtime: float,
              now: float, *, changed: bool = False, raised: tuple[CodeAlert, ...] = ()
              ) -> None:
        """Add the snapshot of a run with no exit record: as it is while it writes; as
        crashed when it has written nothing for ``dead_after`` — once: the cursor says it
        was told, so it is said again only if that cursor was never saved (a failed
        commit), and again after the run writes and falls silent anew."""
        snapshot = snapshot_of(run, self.name, history, mtime, now=now,
                               dead_after=self.dead_after, raised=raised)
        if snapshot.state is RunState.CRASHED and not run.state.ended:
            if run.told_dead and not changed:
                return  # told: an ended run is not judged again until it writes
            told = run.copy()
            told.told_dead = True
            text = told.to_cursor()
            new_cursors[run.key] = text
            self._remember(run.key, cursor, text, told)
        snapshots.append(snapshot)

    def _walk_news(self) -> list[str]:
        """Folders that cannot be searched, each said once (again when it changes)."""
        news = [message for folder, message in self._walk_errors.items()
                if self._walk_said.get(folder) != message]
        self._walk_said = dict(self._walk_errors)
        return news

    def _wanted(self, wanted_keys: frozenset[str]) -> frozenset[str]:
        cached = self._wanted_cache
        if cached is None or (cached[0] is not wanted_keys and cached[0] != wanted_keys):
            self._wanted_cache = cached = (wanted_keys, frozenset(wanted_keys) - {"_timestamp"})
        return cached[1]

    def _report(self, errors: list[str], log: str, message: str) -> None:
        # An unreadable file stays unreadable: say so once, not every tick, until a read
        # of it succeeds (or it says something else).
        if self._reported.get(log) != message:
            self._reported[log] = message
            errors.append(message)

    def _state(self, key: str, log: str, cursor: str | None) -> RunLog:
        if cursor is not None:
            for text, run in self._states.get(key, ()):
                if text is cursor or text == cursor:
                    return run
            run = RunLog.from_cursor(key, log, cursor)
            if run is not None:
                self._states[key] = [(cursor, run)]
                return run
        return RunLog(key=key, log=log)

    def _remember(self, key: str, old: str | None, new: str, run: RunLog) -> None:
        pairs = [(new, run)]
        for text, state in self._states.get(key, ()):
            if text == old:
                pairs.append((text, state))
        self._states[key] = pairs

def offline(log: str) -> bool:
    """Whether the run of ``log`` ran offline (``offline-run-…``): only then does nobody
    else deliver what its code raised with ``run.alert``."""
    return os.path.basename(os.path.dirname(log)).startswith("offline-run-")


def snapshot_of(run: RunLog, source: str, history: Mapping[str, Series],
                mtime: float, *, now: float | None = None,
                dead_after: float = DEFAULT_DEAD_AFTER,
                raised: tuple[CodeAlert, ...] = ()) -> RunSnapshot:
    """What ``run`` looks like to the engine, with ``history`` and the alerts its code
    ``raised`` since the cursor; its heartbeat is the log's ``mtime`` while no record
    carries a time. Given ``now``, a run with no exit record and no record for
    ``dead_after`` is CRASHED ("no record for 2h")."""
    heartbeat = run.heartbeat if run.heartbeat is not None else mtime
    state, why = run.state, ""
    if now is not None and not state.ended and now - heartbeat >= dead_after:
        state, why = RunState.CRASHED, f"no record for {format_duration(dead_after)}"
    return RunSnapshot(
        ref=run.ref(source),
        state=state,
        ended_why=why,
        heartbeat=heartbeat,
        progress=run.progress,
        started=run.started,
        last_step=run.last_step,
        tags=run.tags,
        group=run.group,
        config=run.config,
        summary=run.summary_view(),
        keys=run.keys_view(),
        history=history,
        code_alerts=raised,
    )


def read_records(
    old: RunLog, stat: os.stat_result, wanted: Container[str], window: Window = FULL
) -> tuple[RunLog, dict[str, Series], list[str], bool, tuple[CodeAlert, ...]]:
    """Read the records after ``old.offset``: the new state, new points, errors, change,
    and the alerts the training code raised.
    ``wanted`` is any container of history keys (asked ``key in wanted`` per new key).
    A log read from its start (first sight, or a new file) is read from where ``window``
    of its newest rows starts, plus its head (see ``firstread``); FULL reads all of it."""
    run = old.copy()
    run.size, run.mtime_ns = stat.st_size, stat.st_mtime_ns
    replaced = old.ino >= 0 and (stat.st_ino, stat.st_dev) != (old.ino, old.dev)
    if replaced or stat.st_size < old.offset:  # a different file now: start over
        run = RunLog(key=old.key, log=old.log, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    run.dev, run.ino = stat.st_dev, stat.st_ino
    reading = LogRead(run, wanted)
    records = 0
    corruption = None
    if run.offset == 0 and (start := window_start(run.log, stat.st_size, window)):
        head = Head(LogReader(run.log, 0, kinds=KINDS, window=HEAD_WINDOW), start)
        reading.consume(head)
        records, corruption = head.reader.records, head.corruption
        # Damage in the head (a bad file header included) stops the read there, as it
        # would a read from the start: nothing after it is used.
        run.offset = start if corruption is None else head.reader.offset
    if corruption is None:
        reader = LogReader(run.log, run.offset, kinds=KINDS)
        reading.consume(reader)
        records += reader.records
        corruption = reader.corruption
        run.offset = reader.offset
    if records:
        run.told_dead = False  # it wrote: alive again, and told anew if it falls silent
    reading.finish()
    # A skipped record (a damaged step summary, a record that does not parse) is behind
    # the new offset, so no later read meets it again;
    # a damaged chunk stops every later read too, so it is said only when it moved.
    shown = _text(run.log)
    errors = [damage.message(shown) for damage in reading.damaged]
    if corruption is not None and corruption.offset != old.corrupt_at:
        run.corrupt_at = corruption.offset
        errors.append(corruption.message(shown))
    return (run, reading.series(), errors, reading.changed or records > 0,
            tuple(reading.alerts))


def _text(path: str) -> str:
    """``path`` as valid UTF-8 text: undecodable bytes of a name (which os.scandir gives
    as lone surrogates, unencodable anywhere else) shown as ``\\xff`` escapes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _pseudo_devices() -> frozenset[int]:
    """The devices of /proc, /sys and /dev: a search reaching one (a link to /, a link
    into /proc) does not go on."""
    devices = set()
    try:
        root = os.stat("/").st_dev
    except OSError:
        return frozenset()
    for path in _PSEUDO:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device != root:  # a /dev that is a plain folder of the root file system is not one
            devices.add(device)
    return frozenset(devices)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _file_kind(mode: int) -> str:
    for test, kind in ((statmode.S_ISFIFO, "a FIFO"), (statmode.S_ISSOCK, "a socket"),
                       (statmode.S_ISCHR, "a character device"),
                       (statmode.S_ISBLK, "a block device"), (statmode.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def _unsearchable(path: str) -> str | None:
    """Why a configured path cannot be searched for runs, or None if it can."""
    try:
        mode = os.stat(path).st_mode
        if not statmode.S_ISDIR(mode):
            return "not a directory"
        with os.scandir(path):
            pass
    except FileNotFoundError:
        return "no such directory"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
