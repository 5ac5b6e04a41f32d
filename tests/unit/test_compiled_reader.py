"""The compiled reader (sources/_wandblog.c) against the pure-Python one it speeds up.

Both read the same bytes to the same records, the same stopping point and the same
damage report: on every real SDK log, on logs framed as wandb-core frames them, and on
a few thousand damaged copies (bytes changed, cut short, zeroed). The other reader tests
run both ways as well (conftest: ``reader_path``).
"""

from __future__ import annotations

import os
import random
import shutil
import sysconfig
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from fixtures import logwriter as lw
from runwatch.sources import wandbfile, wandbitems
from runwatch.sources.runlog import KINDS, LogRead, RunLog
from runwatch.sources.wandbfile import HISTORY, LogReader

compiled = wandbfile.compiled
needs_compiled = pytest.mark.skipif(compiled is None, reason="no compiled reader here")


def read(path: Path, monkeypatch, *, fast: bool, kinds=None, offset: int = 0,
         window: int | None = None):
    """Everything a reader says about a file: records (inner bytes, checked or not),
    where it stopped, why, and how many records it counted."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(wandbfile, "compiled", None)
        reader = LogReader(str(path), offset, kinds=kinds, window=window)
        records = [(kind, bytes(data[start:end]), unchecked >= 0, seq, at)
                   for kind, data, start, end, unchecked, seq, at in reader]
    return records, reader.offset, reader.corruption, reader.records, reader.size


def test_a_compiler_here_means_a_compiled_reader():
    """CI builds the module (setup.py): were the build to fail quietly, the tests marked
    compiled would be skipped and the speed-up gone unnoticed."""
    include = sysconfig.get_paths()["include"]
    has_toolchain = shutil.which("cc") and Path(include, "Python.h").exists() and Path(
        "/usr/include/zlib.h").exists()
    if not has_toolchain:
        pytest.skip("no C compiler, Python or zlib headers: the pure-Python reader is used")
    assert compiled is not None


@needs_compiled
@pytest.mark.sdk
@pytest.mark.parametrize("kinds", [None, KINDS, frozenset({HISTORY})])
def test_real_sdk_logs_read_the_same(wandb_runs, monkeypatch, kinds):
    for scenario in wandb_runs.runs:
        path = wandb_runs.log(scenario)
        fast = read(path, monkeypatch, fast=True, kinds=kinds)
        assert fast == read(path, monkeypatch, fast=False, kinds=kinds), scenario
        assert fast[0], scenario


def damaged_copies(raw: bytes, rng: random.Random, count: int):
    """Copies of a log with damage of the kinds a disk or a crash leaves."""
    for _ in range(count):
        data = bytearray(raw)
        how = rng.randrange(4)
        if how == 0:  # a few bytes changed anywhere
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(7, len(data))] = rng.randrange(256)
        elif how == 1:  # cut short
            del data[rng.randrange(7, len(data)):]
        elif how == 2:  # a zeroed stretch
            at, size = rng.randrange(7, len(data)), rng.randint(1, 5000)
            data[at : at + size] = bytes(len(data[at : at + size]))
        else:  # a chunk header's bytes changed (length, type, checksum)
            at = rng.randrange(7, len(data) - 7)
            data[at + rng.randrange(7)] ^= 1 << rng.randrange(8)
        yield bytes(data)


@needs_compiled
@pytest.mark.sdk
def test_damaged_logs_read_the_same(wandb_runs, monkeypatch, tmp_path):
    rng = random.Random(14)
    target = tmp_path / "run.wandb"
    compared = 0
    for scenario in ("healthy", "killed", "long", "nested"):
        raw = wandb_runs.log(scenario).read_bytes()
        for data in damaged_copies(raw, rng, 150):
            target.write_bytes(data)
            kinds = rng.choice([None, KINDS])
            window = rng.choice([None, 4096, 40_000])
            fast = read(target, monkeypatch, fast=True, kinds=kinds, window=window)
            slow = read(target, monkeypatch, fast=False, kinds=kinds, window=window)
            assert fast == slow, (scenario, compared)
            assert run_state(target, monkeypatch, fast=True) == run_state(
                target, monkeypatch, fast=False), (scenario, compared)
            compared += 1
    assert compared == 600


@needs_compiled
def test_framed_logs_read_the_same_from_every_offset(monkeypatch, tmp_path):
    """Logs framed like wandb-core (records across blocks, zero tails, long records),
    resumed from every record end, in small windows."""
    payloads = []
    num = 1
    for i in range(300):
        payloads += lw.step(num, i, {"loss": 1.0 / (i + 1), "blob": "x" * (i * 37 % 900)},
                            time=1000.0 + i)
        num += 3
        if i % 50 == 0:
            payloads += [lw.stats(num, time=1000.0 + i), lw.telemetry(num + 1)]
            num += 2
    payloads.append(lw.exit_(num))
    path = tmp_path / "run.wandb"
    lw.write(path, payloads)
    for offset in [0, *lw.record_ends(payloads)[::7]]:
        for window in (None, 1000):
            fast = read(path, monkeypatch, fast=True, kinds=KINDS, offset=offset, window=window)
            assert fast == read(path, monkeypatch, fast=False, kinds=KINDS, offset=offset,
                                window=window)


@needs_compiled
@pytest.mark.sdk
def test_history_rows_match_the_item_pattern(wandb_runs):
    """Every real SDK row with plain keys takes the compiled path, and gives what the
    pattern finds."""
    rows = 0
    for scenario in wandb_runs.runs:
        for kind, data, start, end, *_ in LogReader(str(wandb_runs.log(scenario))):
            if kind != HISTORY:
                continue
            found = compiled.history_row(data, start, end)
            if found is None:
                # only keys of several elements (a.b logged as {"a": {"b": …}}) take
                # the pattern's path
                assert scenario == "nested", scenario
                continue
            row, names = found
            assert row == wandbitems.history_items(data, start, end)
            assert list(row) == [key for key, _ in wandbitems.find_items(data, start, end)]
            assert names == b"\n".join(row)
            rows += 1
    assert rows > 1000


@needs_compiled
def test_damaged_history_rows_are_left_to_python_or_read_alike():
    """A row the compiled path takes is read as the pattern reads it; one it leaves
    (None) is any row that is not exactly plain items and a step field."""
    rng = random.Random(3)
    record = lw.history(7, 41, {"train/loss": 0.25, "grad": 1.5, "note": "ok"}, time=1e9)
    inner_start = record.index(b"\x12", 2) + 2  # Record: num, then the history field
    taken = left = 0
    for _ in range(20_000):
        data = bytearray(record)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(inner_start, len(data))] = rng.choice(
                [rng.randrange(256), 0x0a, 0x12, 0x82, 0x01, 0x7f, 0x80])
        data = bytes(data)
        end = len(data)
        found = compiled.history_row(data, inner_start, end)
        expected = wandbitems.history_items(data, inner_start, end)
        if found is None:
            left += 1
            continue
        taken += 1
        row, names = found
        assert row == expected, data
        assert names == b"\n".join(row)
    assert taken and left
    assert compiled.history_row(record, inner_start, len(record) + 1) is None
    assert compiled.history_row(record, inner_start + 1, inner_start) is None


def run_state(path: Path, monkeypatch, *, fast: bool, window: int | None = None):
    """What a read of the log makes of its run: its cursor, the new points (repr: a NaN
    point equals itself only as text) and the records it skipped as damaged."""
    wanted = frozenset({"train/loss", "train/grad_norm", "loss", "eval/loss", "acc", "_step",
                        "_timestamp"})
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(wandbfile, "compiled", None)
        read = LogRead(RunLog(key=str(path.parent), log=str(path)), wanted)
        read.consume(LogReader(str(path), kinds=KINDS, window=window))
        read.finish()
    return read.run.to_cursor(), repr(read.series()), read.damaged


@needs_compiled
@pytest.mark.sdk
def test_a_run_read_both_ways_is_the_same_run(wandb_runs, monkeypatch):
    for scenario in wandb_runs.runs:
        path = wandb_runs.log(scenario)
        for window in (None, 5000):
            assert run_state(path, monkeypatch, fast=True, window=window) == run_state(
                path, monkeypatch, fast=False, window=window), scenario


@needs_compiled
def test_rows_of_new_shapes_without_step_or_summary_read_alike(monkeypatch, tmp_path):
    """Rows whose keys change, rows without _step, rows with no step summary before
    them, summaries that are not a row's, damaged step summaries: the compiled pair
    loop hands each back to Python and the run comes out the same."""
    rng = random.Random(5)
    payloads, num = [], 1
    for i in range(400):
        values = {"loss": rng.random()}
        if rng.random() < 0.2:
            values["acc"] = rng.random()
        how = rng.randrange(10)
        if how == 0:  # a row with no step summary before it
            payloads.append(lw.history(num, i, values, time=1000.0 + i))
            num += 1
        elif how == 1:  # a summary of its own, not a row's
            payloads.append(lw.summary(num, {"best": i}))
            num += 1
        elif how == 2:  # no _step in the row: its step field says the step
            payloads.append(lw.runtime_summary(num))
            payloads.append(lw.summary(num + 1, values))
            record = pb.Record.FromString(lw.history(num + 2, i, values, time=1000.0 + i))
            kept = [item for item in record.history.item if item.nested_key != ["_step"]]
            assert len(kept) == len(record.history.item) - 1
            del record.history.item[:]
            record.history.item.extend(kept)
            payloads.append(record.SerializeToString())
            num += 3
        else:
            payloads += lw.step(num, i, values, time=1000.0 + i)
            num += 3
    path = tmp_path / "run.wandb"
    lw.write(path, payloads)
    raw = path.read_bytes()
    for copy in [raw, *damaged_copies(raw, rng, 40)]:
        path.write_bytes(copy)
        for window in (None, 3000):
            assert run_state(path, monkeypatch, fast=True, window=window) == run_state(
                path, monkeypatch, fast=False, window=window)


def test_the_package_reads_without_the_compiled_module(tmp_path):
    """A machine with no compiler installs no _wandblog: runwatch still imports and
    reads (here: the module hidden from a fresh interpreter)."""
    import subprocess
    import sys

    path = tmp_path / "run.wandb"
    lw.write(path, lw.step(1, 0, {"loss": 0.5}, time=1000.0))
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.endswith('_wandblog'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from runwatch.sources import wandbfile\n"
        "assert wandbfile.compiled is None\n"
        f"print(sum(1 for _ in wandbfile.LogReader({str(path)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip() == "3"


@needs_compiled
def test_values_of_every_form_read_alike(monkeypatch, tmp_path):
    """The compiled pair loop turns a row's step, time and wanted values into numbers
    itself: every JSON text it takes must come out as the Python reads it (float(),
    int(), else JSON), and every one it is unsure of is left to the Python."""
    numbers = ["1.5", " 1.5", "1.5 ", "1_5", "NaN", "-nan", "Infinity", "-Infinity", "inf",
               "1e999", "-1e999", "-0.0", "0", "+1.5", ".5", "5.", "1E5", "0x10", '"1.5"',
               '"NaN"', "true", "null", "{}", "[1]", "1e-400", "123456789012345678901234"]
    steps = ["7", "007", "-3", "7.0", " 7", "1_0", "+7", "99999999999999999999", '"7"',
             "123456789012345678", "1234567890123456789"]
    times = ["1000.5", "NaN", '"x"', "1_000", "-1e999", "1000"]
    rng = random.Random(11)
    payloads, num = [], 1
    for i in range(600):
        values = {"loss": 0.5, "acc": 0.25}
        if rng.random() < 0.5:
            values["eval/loss"] = 1.0
        records = lw.step(num, i, values, time=1000.0 + i)
        history = pb.Record.FromString(records[-1])
        for item in history.history.item:
            key = item.nested_key[0]
            form = rng.random()
            if key in ("loss", "eval/loss") and form < 0.5:
                item.value_json = rng.choice(numbers)
            elif key == "_step" and form < 0.2:
                item.value_json = rng.choice(steps)
            elif key == "_timestamp" and form < 0.2:
                item.value_json = rng.choice(times)
        if rng.random() < 0.05:  # a row without its time
            kept = [it for it in history.history.item if it.nested_key != ["_timestamp"]]
            del history.history.item[:]
            history.history.item.extend(kept)
        payloads += [*records[:-1], history.SerializeToString()]
        num += 3
    path = tmp_path / "run.wandb"
    lw.write(path, payloads)
    for window in (None, 2000):
        fast = run_state(path, monkeypatch, fast=True, window=window)
        assert fast == run_state(path, monkeypatch, fast=False, window=window)
    assert "1e999" not in fast[1] and "inf" in fast[1]  # the forms were read, not dropped


@needs_compiled
def test_more_wanted_keys_than_the_compiled_loop_takes_read_alike(monkeypatch, tmp_path):
    payloads, num = [], 1
    for i in range(50):
        payloads += lw.step(num, i, {f"k{j}": float(i + j) for j in range(70)}, time=1e9 + i)
        num += 3
    path = tmp_path / "run.wandb"
    lw.write(path, payloads)
    wanted = frozenset(f"k{j}" for j in range(70))
    states = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            if not fast:
                patch.setattr(wandbfile, "compiled", None)
            read = LogRead(RunLog(key=str(tmp_path), log=str(path)), wanted)
            read.consume(LogReader(str(path), kinds=KINDS))
            read.finish()
            states.append(repr(read.series()))
    assert states[0] == states[1] and "k69" in states[0]


def test_a_run_whose_every_row_has_new_keys_keeps_few_shapes(monkeypatch, tmp_path):
    """Row shapes are a cache: a run logging a new key in every row (per-sample metrics)
    does not grow it without end, and reads the same, compiled or not."""
    from runwatch.sources.runlog import MAX_SHAPES

    payloads, num = [], 1
    for i in range(3 * MAX_SHAPES):
        payloads += lw.step(num, i, {"loss": 1.0 / (1 + i), f"sample/{i}": float(i)},
                            time=1e9 + i)
        num += 3
    path = tmp_path / "run.wandb"
    lw.write(path, payloads)
    seen = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            if not fast:
                patch.setattr(wandbfile, "compiled", None)
            run = RunLog(key=str(tmp_path), log=str(path))
            read = LogRead(run, frozenset({"loss", "sample/700"}))
            read.consume(LogReader(str(path), kinds=KINDS))
            read.finish()
            assert len(run.shapes) <= MAX_SHAPES
            series = read.series()
            assert len(series["loss"].steps) == 3 * MAX_SHAPES
            assert series["sample/700"].values == (700.0,)
            seen.append(repr(series))
    assert seen[0] == seen[1]
