"""How fast the rundir source reads a run's log: figures, not a test.

1. rows/s reading a 100,000-step run written by the real SDK, wanted keys = the metrics of
   the default rules, next to a plain reader that parses every record in full, and next to
   a history-only reader (the fair baseline: what a careful user writes with the SDK's
   protobuf classes);
2. the cost of a poll after 100 new steps are appended to a 1,000,000-step run (that log is
   synthesized from the SDK run's record bytes: see benchdata.py).

Run: .venv/bin/python bench/rundir_read.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import struct
import subprocess
import time
import zlib

import benchdata
from benchdata import DEFAULT_WANTED, log_of
from wandb.proto import wandb_internal_pb2 as pb

from fixtures import logwriter
from runwatch.sources import wandbfile
from runwatch.sources.rundir import RundirSource
from runwatch.window import FULL

GOAL_ROWS_PER_S = 200_000
GOAL_APPEND_MS = 5.0


def records(path: str):
    """Every complete record of a ``.wandb`` log, parsed: the framing both simple readers
    share (32 KiB blocks, FULL/FIRST/MIDDLE/LAST chunks, CRC checked). wandb 0.31 has no
    Python record reader any more (``wandb.sdk.internal.datastore`` went with the move to
    wandb-core), so this is what a user would write."""
    with open(path, "rb") as file:
        raw = file.read()
    pos, parts = 7, []
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", raw, pos)
        data = raw[pos + 7 : pos + 7 + length]
        if len(data) < length or zlib.crc32(raw[pos + 6 : pos + 7 + length]) != crc:
            break
        pos += 7 + length
        if kind == 2:
            parts = [data]
            continue
        if kind == 3:
            parts.append(data)
            continue
        if kind == 4:
            data = b"".join([*parts, data])
        record = pb.Record()
        record.ParseFromString(data)
        yield record


def plain_reader(path: str) -> int:
    """The obvious reader: frame, parse every Record, json.loads every value."""
    rows = 0
    summary: dict = {}
    columns: dict = {}
    for record in records(path):
        which = record.WhichOneof("record_type")
        if which == "history":
            rows += 1
            for item in record.history.item:
                key = ".".join(item.nested_key) or item.key
                columns.setdefault(key, []).append(json.loads(item.value_json))
        elif which == "summary":
            for item in record.summary.update:
                summary[".".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return rows


def history_reader(path: str, wanted) -> tuple[int, dict]:
    """The fair baseline: frame, parse each Record, skip all but history, convert only the
    wanted keys' values into per-key lists of (step, value)."""
    rows = 0
    columns: dict = {}
    for record in records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        rows += 1
        history = record.history
        step = history.step.num
        for item in history.item:
            key = item.key or ".".join(item.nested_key)
            if key in wanted:
                columns.setdefault(key, []).append((step, json.loads(item.value_json)))
    return rows, columns


def timed(runs: int, fn):
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def best_of(runs: int, fn):
    times, result = timed(runs, fn)
    return min(times), result


def uptime() -> None:
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def read_figures() -> None:
    run = benchdata.sdk_run(100_000)
    log = log_of(run)
    print(f"run: {run}  ({log.stat().st_size / 1e6:.1f} MB, written by wandb SDK)")

    def first_poll():
        return RundirSource("bench", [run], first_read=FULL).poll({}, DEFAULT_WANTED, time.time())

    # The pure-Python reader first (what a machine without a C compiler installs), then
    # the compiled fast path (sources/_wandblog.c) that pip builds where it can.
    compiled = wandbfile.compiled
    wandbfile.compiled = None
    try:
        pure_times, _ = timed(3, first_poll)
    finally:
        wandbfile.compiled = compiled
    runwatch_times, poll = timed(5, first_poll)
    seconds = min(runwatch_times)
    (snap,) = poll.snapshots
    rows = len(snap.history["_timestamp"])
    keys_per_row = sorted(snap.keys)
    rate = rows / seconds
    verdict = "met" if rate >= GOAL_ROWS_PER_S else "MISSED"
    label = "compiled reader" if compiled is not None else "NO compiled reader built"
    print(f"rundir source ({label}): {rows:,} rows in {seconds * 1000:.0f} ms = {rate:,.0f} "
          f"rows/s (goal {GOAL_ROWS_PER_S:,}: {verdict}); wanted = loss and grad_norm aliases")
    pure_s = min(pure_times)
    print(f"  pure-Python reader: {pure_s * 1000:.0f} ms = {rows / pure_s:,.0f} rows/s "
          f"({pure_s / seconds:.1f}x the time of the compiled one)")
    print(f"  keys logged: {', '.join(keys_per_row)}")
    plain_s, plain_rows = best_of(2, lambda: plain_reader(str(log)))
    print(f"plain reader (parse every record, json.loads every value): {plain_rows:,} rows in "
          f"{plain_s * 1000:.0f} ms = {plain_rows / plain_s:,.0f} rows/s; "
          f"speed-up {plain_s / seconds:.1f}x")
    history_times, (history_rows, columns) = timed(
        len(runwatch_times), lambda: history_reader(str(log), DEFAULT_WANTED))
    history_s = min(history_times)
    assert history_rows == rows, (history_rows, rows)
    assert {key: len(values) for key, values in columns.items()} == {
        key: len(snap.history[key]) for key in columns}
    ratio_median = statistics.median(history_times) / statistics.median(runwatch_times)
    print(f"history-only reader (parse each record, skip all but history, json.loads wanted "
          f"values only): {history_rows:,} rows in {history_s * 1000:.0f} ms = "
          f"{history_rows / history_s:,.0f} rows/s; runwatch / history-only "
          f"{history_s / seconds:.1f}x (best of {len(history_times)} each; "
          f"{ratio_median:.1f}x on medians: runwatch "
          f"{statistics.median(runwatch_times) * 1000:.0f} ms, history-only "
          f"{statistics.median(history_times) * 1000:.0f} ms; pure-Python runwatch "
          f"{statistics.median(history_times) / statistics.median(pure_times):.1f}x)")


def append_figures(rows: int = 1_000_000, new_rows: int = 100, repeats: int = 20) -> None:
    run = benchdata.big_log(rows)
    log = log_of(run)
    print(f"big run: {log.stat().st_size / 1e6:.0f} MB, {rows:,} steps synthesized from the SDK "
          f"run's record bytes (renumbered, framed like wandb-core)")
    # Work on a copy: appends must not grow the cached file.
    work = run.parent.parent.parent / "work" / "wandb" / run.name
    work.mkdir(parents=True, exist_ok=True)
    work_log = work / log.name
    shutil.copyfile(log, work_log)
    source = RundirSource("bench", [work])
    started = time.perf_counter()
    poll = source.poll({}, DEFAULT_WANTED, time.time())
    first = time.perf_counter() - started
    cursors = dict(poll.cursors)
    print(f"  first poll (its newest {source.first_read}; first_read: all would read every"
          f" step): {first * 1000:.0f} ms")
    _, templates = benchdata.step_templates(benchdata.sdk_run())
    head_num, head_step = 1000 + 3 * rows, rows
    timings = []
    for i in range(repeats):
        records = list(benchdata.renumbered(
            templates, head_num + 3 * new_rows * i, head_step + new_rows * i, new_rows, 1.8e9))
        logwriter.append(work_log, records)
        started = time.perf_counter()
        poll = source.poll(cursors, DEFAULT_WANTED, time.time())
        timings.append(time.perf_counter() - started)
        cursors.update(poll.cursors)
        (snap,) = poll.snapshots
        assert len(snap.history["_timestamp"]) == new_rows
    median = statistics.median(timings) * 1000
    verdict = "met" if median < GOAL_APPEND_MS else "MISSED"
    print(f"  poll after {new_rows} new steps appended: median {median:.2f} ms, "
          f"min {min(timings) * 1000:.2f} ms over {repeats} polls "
          f"(goal < {GOAL_APPEND_MS} ms: {verdict}; independent of the log's size)")
    work_log.unlink()


if __name__ == "__main__":
    uptime()
    read_figures()
    append_figures()
    uptime()
