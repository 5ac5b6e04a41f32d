"""Where the first read of a long ``.wandb`` log starts: as far back as a window of rows.

A run seen for the first time is judged on its newest rows (see :mod:`runwatch.window`),
so its first read need not cost its whole history. The log is written in 32 KiB blocks,
each beginning with a chunk header, so a reader can join it at any block boundary (see
:func:`wandbfile.history_starts`). :func:`window_start` goes back from the end a segment at
a time — 256 KiB, then as far as the rows counted so far say the rest of the window
needs, or twice as far as the last — counting the history rows in each, until
the rows counted cover the window (rows, steps and seconds of row time); the read then
starts at the oldest row the window needs, found by a binary search in the last segment.
Counting walks the chunk framing and looks at each record's first bytes — no checksum,
nothing decoded (:func:`wandbfile.history_starts`) — and the ``_step``/``_timestamp`` of
a few rows are read for the steps and seconds, so finding the start of a 10,000-row window
of a 1M-row log costs a fraction of reading those rows, and nothing before them is read.

What lies before the window is not read, but for its head: the records before the first
history row (the run record — id, name, project, tags, start time, config — its config
and metric definitions) are read once, at most :data:`HEAD_LIMIT` of them. What a run
recorded only in between is not seen: a config update logged mid-run, the summary of a key
logged only before the window.
"""

from __future__ import annotations

from collections.abc import Iterator

from runwatch.sources import wandbitems
from runwatch.sources.wandbfile import (
    BLOCK_SIZE,
    HISTORY,
    Corruption,
    LogReader,
    Record,
    history_starts,
)
from runwatch.window import Window

SEGMENT = 256 << 10  # the first piece of the tail counted (about 600 SDK rows)
WHOLE = 2 << 20  # a log this small (about 5,000 rows) is read whole: a short run is seen whole
HEAD_LIMIT = 4 << 20  # the most of a log's head read for its run record and config
HEAD_WINDOW = 2 * BLOCK_SIZE  # the head is read this much at a time: it ends early
_STEP = b"_step"
_TIMESTAMP = b"_timestamp"
_HISTORY_ONLY = frozenset({HISTORY})


def window_start(path: str, size: int, window: Window) -> int:
    """The offset where a read covering ``window`` of the log's newest rows starts: 0 for
    the whole log (a short one, or a window reaching back to its start)."""
    if window.full or size <= WHOLE:
        return 0
    later = 0  # rows counted in the segments after this one
    timed = bool(window.steps or window.seconds)  # the only windows that look at rows
    newest: tuple[float, float] | None = None  # (step, time) of the log's newest row
    end = size  # the segment counted next ends here
    span = SEGMENT
    while True:
        begin = max(end - span, 0) // BLOCK_SIZE * BLOCK_SIZE
        if begin <= BLOCK_SIZE:
            return 0  # back at the head: read it all
        # The rows that start in [begin, end): one continued across `begin` (a MIDDLE or
        # LAST chunk there) belongs to the segment before, where it starts.
        rows = history_starts(path, begin, end)
        if timed:
            newest = newest or _newest(path, rows)
        if (newest is not None or not timed) and rows and _covers(
                window, later + len(rows), newest or (0.0, 0.0), path, rows[0]):
            return _trim(window, path, rows, later, newest or (0.0, 0.0))
        later += len(rows)
        if later and window.rows > later:
            # As far as the rows still wanted need at the bytes per row counted, and a
            # quarter more; a window of steps or seconds doubles the span each time.
            span = max(SEGMENT, (window.rows - later) * (size - begin) // later * 5 // 4)
        else:
            span *= 2
        end = begin


def _trim(window: Window, path: str, rows: list[int], later: int,
          newest: tuple[float, float]) -> int:
    """The offset of the newest of ``rows`` from which on the window is covered: at most
    ``window.rows`` back, further back as the steps and seconds need (row steps and times
    grow through a log, so a binary search finds it)."""
    lo, hi = 0, max(0, min(len(rows) - 1, later + len(rows) - window.rows))
    while lo < hi:  # the last index that still covers the window
        mid = (lo + hi + 1) // 2
        if _covers(window, later + len(rows) - mid, newest, path, rows[mid]):
            lo = mid
        else:
            hi = mid - 1
    return rows[lo]


def _covers(window: Window, count: int, newest: tuple[float, float], path: str,
            oldest: int) -> bool:
    """Whether ``count`` rows from the one at ``oldest`` to the newest cover ``window``."""
    if not (window.steps or window.seconds):
        return window.covered(count, 0, 0)
    first = _step_time(path, oldest)
    if first is None:
        return False
    return window.covered(count, newest[0] - first[0], newest[1] - first[1])


def _newest(path: str, rows: list[int]) -> tuple[float, float] | None:
    for at in reversed(rows[-10:]):
        found = _step_time(path, at)
        if found is not None:
            return found
    return None


def _step_time(path: str, at: int) -> tuple[float, float] | None:
    """The (``_step``, ``_timestamp``) of the history row at ``at``, if it carries both."""
    batches = LogReader(path, at, kinds=_HISTORY_ONLY, window=BLOCK_SIZE).batches()
    try:
        for batch in batches:
            if batch:
                _, data, start, end, _, _, _ = batch[0]
                items = dict(wandbitems.find_items(data, start, end))
                step = wandbitems.number(items.get(_STEP, b"null"))
                when = wandbitems.number(items.get(_TIMESTAMP, b"null"))
                return None if step is None or when is None else (step, when)
    finally:
        batches.close()
    return None


class Head:
    """The records of a log before its first history row (and before ``until``, at most
    :data:`HEAD_LIMIT` bytes): what a window read adds of the run's start. Iterated as a
    :class:`LogReader` is, through ``batches``."""

    def __init__(self, reader: LogReader, until: int):
        self.reader = reader
        self.until = min(until, HEAD_LIMIT)
        # Where the head ended (the first record not its own), once it has: damage the
        # reader found past this is not the head's (see ``corruption``).
        self.ended_at: int | None = None

    @property
    def corruption(self) -> Corruption | None:
        """Damage within the head: the reader reads ahead in windows, so what it found
        beyond the head's end is for the read of the window to meet, or not."""
        damage = self.reader.corruption
        if damage is None or (self.ended_at is not None and damage.offset >= self.ended_at):
            return None
        return damage

    def batches(self) -> Iterator[list[Record]]:
        batches = self.reader.batches()
        try:
            for batch in batches:
                for index, record in enumerate(batch):
                    if record[0] == HISTORY or record[6] >= self.until:
                        self.ended_at = record[6]
                        if index:
                            yield batch[:index]
                        return
                yield batch
        finally:
            batches.close()
