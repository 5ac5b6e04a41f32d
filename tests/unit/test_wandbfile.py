"""The .wandb log reader against hand-made byte streams and against real SDK files."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2 as pb

from fixtures import logwriter as lw
from runwatch.sources import wandbfile as wf
from runwatch.sources import wandbitems
from runwatch.sources.wandbfile import LogReader

# Every test reads logs both ways: compiled and pure Python (conftest: reader_path).
pytestmark = pytest.mark.usefixtures("reader_path")


def read_all(path: Path, offset: int = 0, kinds=None) -> tuple[list[pb.Record], LogReader]:
    """Records read, rebuilt as Record protos from their inner message."""
    reader = LogReader(str(path), offset, kinds=kinds)
    records = []
    for kind, data, start, end, _, _, _ in reader:
        records.append((kind, bytes(data[start:end])))
    return records, reader


def history_steps(records) -> list[int]:
    return [pb.HistoryRecord.FromString(inner).step.num for kind, inner in records
            if kind == wf.HISTORY]


def steps_payloads(count: int, first_num: int = 1, size: int = 0) -> list[bytes]:
    """``count`` history records, each optionally padded with a long text value."""
    out = []
    for i in range(count):
        values = {"loss": 1.0 / (i + 1)}
        if size:
            values["blob"] = "x" * size
        out.append(lw.history(first_num + i, i, values, time=1000.0 + i))
    return out


# --- framing ---------------------------------------------------------------------------------


def test_header_only(tmp_path):
    path = tmp_path / "run-a.wandb"
    path.write_bytes(lw.HEADER)
    records, reader = read_all(path)
    assert records == [] and reader.corruption is None
    assert reader.offset == 7


@pytest.mark.parametrize("content", [b"", b":W&", lw.HEADER[:6]])
def test_header_not_written_yet_is_not_an_error(tmp_path, content):
    path = tmp_path / "run-a.wandb"
    path.write_bytes(content)
    records, reader = read_all(path)
    assert records == [] and reader.corruption is None and reader.offset == 0


def test_bad_header(tmp_path):
    path = tmp_path / "run-a.wandb"
    path.write_bytes(b"PK\x03\x04 not a log at all" + b"\x00" * 100)
    records, reader = read_all(path)
    assert records == []
    assert reader.corruption.offset == 0
    assert "bad header" in reader.corruption.message(str(path))
    assert str(path) in reader.corruption.message(str(path))


def test_unsupported_version(tmp_path):
    path = tmp_path / "run-a.wandb"
    path.write_bytes(lw.HEADER[:6] + b"\x01" + lw.frame(steps_payloads(2), at=7))
    records, reader = read_all(path)
    assert records == [] and reader.corruption.offset == 6


def test_round_trip_and_offset(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(50)
    lw.write(path, written)
    records, reader = read_all(path)
    assert history_steps(records) == list(range(50))
    assert reader.offset == path.stat().st_size
    assert reader.records == 50 and reader.corruption is None


def test_kinds_filter_skips_other_records(tmp_path):
    path = tmp_path / "run-a.wandb"
    lw.write(path, [lw.telemetry(1), *steps_payloads(3, first_num=2), lw.exit_(5, 0)])
    records, reader = read_all(path, kinds={wf.EXIT})
    assert [kind for kind, _ in records] == [wf.EXIT]
    assert reader.records == 5
    assert reader.offset == path.stat().st_size


def test_record_split_across_blocks(tmp_path):
    # 80 KB records need FIRST, MIDDLE and LAST chunks; the small ones around them
    # land at every position relative to the block ends.
    path = tmp_path / "run-a.wandb"
    written = []
    for i in range(12):
        size = 80_000 if i % 3 == 1 else 1000 + 777 * i
        written.append(lw.history(i + 1, i, {"blob": "y" * size}, time=float(i)))
    lw.write(path, written)
    raw = path.read_bytes()
    types = chunk_types(raw)
    assert {lw.FIRST, lw.MIDDLE, lw.LAST} <= set(types)
    records, reader = read_all(path)
    assert history_steps(records) == list(range(12))
    assert reader.offset == len(raw) and reader.corruption is None


def sized_summary(num: int, size: int) -> bytes:
    """A summary record of exactly ``size`` serialized bytes."""
    for text in range(max(0, size - 40), size):
        record = lw.summary(num, {"p": "w" * text})
        if len(record) == size:
            return record
    raise AssertionError(f"no record of {size} bytes")


def test_zero_length_first_chunk_when_only_a_header_fits(tmp_path):
    # Make a block end with exactly 7 bytes free: wandb-core then writes an empty FIRST.
    path = tmp_path / "run-a.wandb"
    filler = lw.history(1, 0, {"a": "z"}, time=1.0)
    base = len(lw.frame([filler]))
    pad = sized_summary(2, lw.BLOCK - 7 - base - 7)
    last = lw.history(3, 1, {"loss": 0.5}, time=2.0)
    lw.write(path, [filler, pad, last])
    raw = path.read_bytes()
    _crc, length, kind = struct.unpack_from("<IHB", raw, lw.BLOCK - 7)
    assert (length, kind) == (0, lw.FIRST)
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1]
    assert reader.corruption is None


def test_zero_padding_at_block_tail(tmp_path):
    path = tmp_path / "run-a.wandb"
    filler = lw.history(1, 0, {"a": "z"}, time=1.0)
    base = len(lw.frame([filler]))
    # leave 3 bytes at the block end: too short for a chunk header, so zero padding
    pad = sized_summary(2, lw.BLOCK - 3 - base - 7)
    lw.write(path, [filler, pad, lw.history(3, 1, {"loss": 0.5}, time=2.0)])
    raw = path.read_bytes()
    assert raw[lw.BLOCK - 3 : lw.BLOCK] == b"\x00\x00\x00"
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1] and reader.corruption is None


def chunk_types(raw: bytes) -> list[int]:
    types, pos = [], 7
    while pos + 7 <= len(raw):
        left = lw.BLOCK - pos % lw.BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack_from("<IHB", raw, pos)
        if kind == 0:
            break
        types.append(kind)
        pos += 7 + length
    return types


def test_bad_crc_in_the_middle(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(10)
    lw.write(path, written)
    ends = lw.record_ends(written)
    raw = bytearray(path.read_bytes())
    raw[ends[4] + 20] ^= 0xFF  # inside record 6's data
    path.write_bytes(bytes(raw))
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, 3, 4]
    assert reader.offset == ends[4]
    assert reader.corruption.offset == ends[4]
    message = reader.corruption.message(str(path))
    assert message == f"{path}: bad CRC at offset {ends[4]}; records before it are used"


def test_truncated_last_chunk_waits_for_more(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(6)
    full = lw.frame(written)
    ends = lw.record_ends(written)
    path.write_bytes(full[: ends[3] + 25])  # record 5 cut inside its data
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, 3]
    assert reader.corruption is None and reader.offset == ends[3]
    path.write_bytes(full)  # the writer finishes
    records, reader = read_all(path, reader.offset)
    assert history_steps(records) == [4, 5]


def test_partial_chunk_header_waits_for_more(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(3)
    full = lw.frame(written)
    ends = lw.record_ends(written)
    path.write_bytes(full[: ends[1] + 3])
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1] and reader.corruption is None


def test_record_cut_between_chunks_waits_for_more(tmp_path):
    # A live wandb-core file ends at a block boundary, usually inside a record.
    path = tmp_path / "run-a.wandb"
    written = [lw.history(i + 1, i, {"blob": "q" * 9000}, time=float(i)) for i in range(8)]
    full = lw.frame(written)
    path.write_bytes(full[: lw.BLOCK * 2])
    records, reader = read_all(path)
    assert reader.corruption is None
    got = history_steps(records)
    assert got == list(range(len(got)))
    path.write_bytes(full)
    rest, reader = read_all(path, reader.offset)
    assert got + history_steps(rest) == list(range(8))


def test_sigkill_zero_padding_after_last_record(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(5)
    full = lw.frame(written)
    path.write_bytes(full + b"\x00" * 5000)  # space the file system allocated, never written
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, 3, 4]
    assert reader.corruption is None and reader.offset == len(full)


def test_torn_write_of_zeros_inside_last_chunk(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(5)
    full = bytearray(lw.frame(written))
    ends = lw.record_ends(written)
    full[ends[3] + 30 :] = b"\x00" * (len(full) - ends[3] - 30)
    path.write_bytes(bytes(full) + b"\x00" * 100)
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, 3]
    assert reader.corruption is None and reader.offset == ends[3]


def test_zeroed_block_then_more_data_is_skipped_like_wandb_does(tmp_path):
    path = tmp_path / "run-a.wandb"
    first = lw.frame(steps_payloads(3))
    zeros = b"\x00" * (lw.BLOCK - len(first))
    later = steps_payloads(2, first_num=4)
    path.write_bytes(first + zeros + lw.frame(later, at=lw.BLOCK))
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, 0, 1]
    assert reader.corruption is None and reader.offset == path.stat().st_size


def test_chunk_length_overrunning_its_block(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(3)
    raw = bytearray(lw.frame(written))
    ends = lw.record_ends(written)
    struct.pack_into("<H", raw, ends[0] + 4, 40_000)
    path.write_bytes(bytes(raw))
    records, reader = read_all(path)
    assert history_steps(records) == [0]
    assert reader.corruption.offset == ends[0]
    assert "overruns" in reader.corruption.reason


@pytest.mark.parametrize(
    ("sequence", "reason"),
    [
        ([lw.LAST], "continues no record"),
        ([lw.MIDDLE], "continues no record"),
        ([lw.FIRST, lw.FULL], "FULL chunk inside a record"),
        ([lw.FIRST, lw.FIRST], "FIRST chunk inside a record"),
        ([9], "unknown chunk type 9"),
    ],
)
def test_bad_chunk_type_sequence(tmp_path, sequence, reason):
    path = tmp_path / "run-a.wandb"
    good = steps_payloads(2)
    raw = lw.frame(good)
    extra = b"".join(lw.chunk(kind, b"\x08\x63" + bytes(10)) for kind in sequence)
    path.write_bytes(raw + extra)
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1]
    assert reader.offset == len(raw)
    assert reason in reader.corruption.reason


def test_resume_reads_each_record_once(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = [lw.history(i + 1, i, {"blob": "r" * (i * 997 % 50_000)}, time=float(i))
               for i in range(40)]
    lw.write(path, written)
    seen = []
    offset = 0
    for end in [*lw.record_ends(written)[5::7], None]:
        records, reader = read_all(path, offset)
        # simulate a caller that stops at `end` by reading a truncated copy
        if end is not None:
            cut = tmp_path / "cut.wandb"
            cut.write_bytes(path.read_bytes()[:end])
            records, reader = read_all(cut, offset)
        seen += history_steps(records)
        offset = reader.offset
    assert seen == list(range(40))


def test_windows_slide_over_big_files(tmp_path, monkeypatch):
    monkeypatch.setattr(wf, "_WINDOW", 3 * lw.BLOCK)
    path = tmp_path / "run-a.wandb"
    written = [lw.history(i + 1, i, {"blob": "s" * (i * 7919 % 70_000)}, time=float(i))
               for i in range(60)]
    lw.write(path, written)
    offsets = []
    reader = LogReader(str(path))
    steps = []
    for batch in reader.batches():
        offsets.append(reader.offset)
        steps += [pb.HistoryRecord.FromString(d[s:e]).step.num for _, d, s, e, _, _, _ in batch]
    assert steps == list(range(60))
    assert len(offsets) > 3 and offsets == sorted(offsets)
    assert reader.offset == path.stat().st_size


def test_record_offsets_and_sequence_numbers(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = [lw.telemetry(1), *steps_payloads(4, first_num=2)]
    lw.write(path, written)
    starts = [7, *lw.record_ends(written)[:-1]]
    got = list(LogReader(str(path), kinds={wf.HISTORY}))
    assert [at for *_, at in got] == starts[1:]
    assert [seq for *_, seq, _ in got] == [2, 3, 4, 5]


def test_step_summaries_are_told_apart_and_runtime_ones_dropped(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = [*lw.step(1, 0, {"loss": 1.0}, time=1.0), lw.summary(4, {"best": 1}),
               *lw.step(5, 1, {"loss": 0.5}, time=2.0)]
    lw.write(path, written)
    kinds = {wf.HISTORY, wf.SUMMARY, wf.STEP_SUMMARY}
    got = [kind for kind, *_ in LogReader(str(path), kinds=kinds)]
    assert got == [wf.STEP_SUMMARY, wf.HISTORY, wf.SUMMARY, wf.STEP_SUMMARY, wf.HISTORY]
    with_runtime = [kind for kind, *_ in LogReader(str(path), kinds=kinds | {wf.RUNTIME_SUMMARY})]
    assert with_runtime.count(wf.RUNTIME_SUMMARY) == 2
    plain = [kind for kind, *_ in LogReader(str(path), kinds={wf.SUMMARY})]
    assert plain == [wf.SUMMARY] * 5


def test_record_kind_with_fields_before_the_oneof():
    # wandb-core writes num, control, _info, then the record (Go's legacy field order).
    record = pb.Record(num=300)
    record.control.mailbox_slot = "abc"
    record.exit.exit_code = 3
    go_order = (
        b"\x08" + bytes([0xAC, 0x02])
        + b"\x82\x01" + bytes([len(record.control.SerializeToString())])
        + record.control.SerializeToString()
        + b"\xc2\x0c\x02\x0a\x00"
        + b"\x92\x01" + bytes([len(record.exit.SerializeToString())])
        + record.exit.SerializeToString()
    )
    kind, start, end = wf.record_kind(go_order, 0, len(go_order))
    assert kind == wf.EXIT
    assert pb.RunExitRecord.FromString(go_order[start:end]).exit_code == 3
    assert wf.record_kind(b"\x08\x01\xff", 0, 3)[0] == wf.UNKNOWN


# --- the real SDK's files --------------------------------------------------------------------


@pytest.mark.sdk
def test_reads_every_real_sdk_file_completely(wandb_runs):
    for scenario in wandb_runs.runs:
        path = wandb_runs.log(scenario)
        reader = LogReader(str(path))
        count = 0
        for _kind, data, _start, end, _unchecked, _seq, _at in reader:
            count += 1
            assert end <= len(data)
        assert reader.corruption is None, scenario
        assert count == reader.records > 0, scenario
        if scenario in ("killed", "hung"):
            assert reader.offset <= path.stat().st_size  # a record may be cut off
        else:
            assert reader.offset == path.stat().st_size, scenario


@pytest.mark.sdk
def test_real_records_parse_and_block_boundaries_count_from_zero(wandb_runs):
    path = wandb_runs.log("long")
    raw = path.read_bytes()
    assert raw[:7] == lw.HEADER
    assert len(raw) > 10 * lw.BLOCK
    types = chunk_types(raw)  # the header is inside the first block
    assert {lw.FIRST, lw.MIDDLE, lw.LAST} <= set(types)  # the 40 KB config
    kinds = set()
    for kind, data, start, end, _, _, _ in LogReader(str(path)):
        kinds.add(kind)
        if kind == wf.RUN:
            run = pb.RunRecord.FromString(data[start:end])
            assert run.display_name == "long"
    assert {wf.RUN, wf.HISTORY, wf.SUMMARY, wf.EXIT} <= kinds


@pytest.mark.sdk
def test_killed_run_ends_inside_a_record_without_error(wandb_runs):
    path = wandb_runs.log("killed")
    size = path.stat().st_size
    reader = LogReader(str(path))
    kinds = [kind for kind, *_ in reader]
    assert wf.EXIT not in kinds
    assert reader.corruption is None
    # wandb-core wrote whole blocks while running (the file size is a multiple of 32 KiB
    # here); the rest of the last record died in its memory.
    assert size - lw.BLOCK < reader.offset <= size


@pytest.mark.sdk
def test_byte_level_items_equal_protobuf_on_real_files(wandb_runs):
    checked = 0
    for scenario in wandb_runs.runs:
        for kind, data, start, end, _, _, _ in LogReader(str(wandb_runs.log(scenario))):
            if kind == wf.HISTORY:
                fast = wandbitems.history_items(data, start, end)
                slow, step = wandbitems.parse_history(data[start:end])
                if fast is not None:
                    assert fast == slow
                    assert wandbitems.history_step(data, start, end) == step
                    checked += 1
            elif kind == wf.SUMMARY:
                fast = wandbitems.items(data, start, end)
                slow, removed = wandbitems.parse_updates(data[start:end], pb.SummaryRecord)
                if fast is not None:
                    assert fast == slow and not removed
                    checked += 1
    assert checked > 1000


# --- items -------------------------------------------------------------------------------------


def test_items_fall_back_to_protobuf_when_unusual():
    record = pb.HistoryRecord()
    for key, value in [("loss", "0.5"), ("text", '"' + "t" * 300 + '"')]:
        item = record.item.add()
        item.nested_key.append(key)
        item.value_json = value
    nested = record.item.add()
    nested.nested_key.extend(["train", "acc"])
    nested.value_json = "0.75"
    data = record.SerializeToString()
    assert wandbitems.history_items(data, 0, len(data)) is None  # long value, nested key
    found, step = wandbitems.parse_history(data)
    assert found[b"loss"] == b"0.5"
    assert wandbitems.key_text(next(k for k in found if b"acc" in k)) == "train.acc"
    assert step is None


@pytest.mark.parametrize("byte", range(256))
def test_item_keys_and_values_take_every_byte_but_control_bytes(byte):
    # The item pattern spells "not a control byte" as the range 0x20-0xff: every byte is
    # either taken in a key and a value or sends the record to protobuf.
    key, value = b"k" + bytes([byte]), b"1" + bytes([byte])
    data = b"\n" + bytes([5 + len(key) + len(value)]) + b"\x12" + bytes([len(key)]) + key
    data += b"\x82\x01" + bytes([len(value)]) + value
    expected = {key: value} if byte >= 0x20 else None
    assert wandbitems.items(data, 0, len(data)) == expected
    assert wandbitems.history_items(data, 0, len(data)) == expected


def test_typed_values_of_newer_writers():
    record = pb.HistoryRecord()
    for key, field, value in [("n", "number", 0.25), ("i", "integer", 7), ("b", "boolean", True),
                              ("nan", "number", math.nan), ("inf", "number", -math.inf),
                              ("t", "text", "hi")]:
        item = record.item.add()
        item.nested_key.append(key)
        setattr(item, field, value)
    data = record.SerializeToString()
    assert wandbitems.history_items(data, 0, len(data)) is None
    found, _ = wandbitems.parse_history(data)
    numbers = {k.decode(): wandbitems.number(v) for k, v in found.items()}
    assert numbers["n"] == 0.25 and numbers["i"] == 7.0 and numbers["b"] == 1.0
    assert math.isnan(numbers["nan"]) and numbers["inf"] == -math.inf
    assert numbers["t"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"NaN", math.nan), (b"Infinity", math.inf), (b"-Infinity", -math.inf),
     (b"1.5e+09", 1.5e9), (b"3", 3.0), (b"true", 1.0), (b"false", 0.0),
     (b'"text"', None), (b"{\"a\": 1}", None), (b"null", None)],
)
def test_number(raw, expected):
    value = wandbitems.number(raw)
    if expected is None:
        assert value is None
    elif math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == expected


def test_damage_in_a_record_skipped_by_kind_is_not_looked_at(tmp_path):
    path = tmp_path / "run-a.wandb"
    written = [*steps_payloads(2), lw.telemetry(3), *steps_payloads(2, first_num=4)]
    lw.write(path, written)
    ends = lw.record_ends(written)
    raw = bytearray(path.read_bytes())
    raw[ends[1] + 10] ^= 0x01  # inside the telemetry record's data
    path.write_bytes(bytes(raw))
    records, reader = read_all(path)  # every kind: the damage stops the reader
    assert history_steps(records) == [0, 1] and reader.corruption.offset == ends[1]
    records, reader = read_all(path, kinds={wf.HISTORY})  # skipped unread, so unchecked
    assert history_steps(records) == [0, 1, 0, 1] and reader.corruption is None


def summary_log(tmp_path: Path) -> tuple[Path, list[bytes], list[int]]:
    """Three logged steps: their runtime, step summary and history records."""
    path = tmp_path / "run-a.wandb"
    written = [*lw.step(1, 0, {"loss": 1.0}, time=1.0), *lw.step(4, 1, {"loss": 0.5}, time=2.0),
               *lw.step(7, 2, {"loss": 0.25}, time=3.0)]
    lw.write(path, written)
    return path, written, [7, *lw.record_ends(written)[:-1]]


STEPS_AND_SUMMARIES = {wf.HISTORY, wf.SUMMARY, wf.STEP_SUMMARY, wf.RUNTIME_SUMMARY}


def test_step_and_runtime_summaries_come_out_unchecked(tmp_path):
    path, _, starts = summary_log(tmp_path)
    raw = path.read_bytes()
    got = list(LogReader(str(path), kinds=STEPS_AND_SUMMARIES))
    assert [kind for kind, *_ in got] == [wf.RUNTIME_SUMMARY, wf.STEP_SUMMARY, wf.HISTORY] * 3
    assert [at for *_, at in got] == starts
    for kind, data, _, _, unchecked, _, at in got:
        if kind == wf.HISTORY:
            assert unchecked == -1  # verified as it was read
        else:  # `unchecked` is where data holds the record's chunk
            assert data[unchecked : unchecked + 7] == raw[at : at + 7]
            assert wf.intact(data, unchecked)
    assert wf.intact(b"", -1)


def test_damage_in_a_step_summary_shows_only_when_checked(tmp_path):
    path, written, starts = summary_log(tmp_path)
    raw = bytearray(path.read_bytes())
    bad_at = starts[4]  # the step summary of step 1
    raw[bad_at + 7 + len(written[4]) - 2] ^= 0x01  # a digit of its last JSON value
    path.write_bytes(bytes(raw))
    reader = LogReader(str(path), kinds=STEPS_AND_SUMMARIES)
    got = list(reader)
    # framing intact: read to the end without complaint, every record handed out...
    assert reader.corruption is None and reader.offset == len(raw) and len(got) == 9
    # ...and the damage found by whoever checks that record before using it
    damaged = [at for kind, data, _, _, unchecked, _, at in got
               if kind != wf.HISTORY and not wf.intact(data, unchecked)]
    assert damaged == [bad_at]


def test_history_records_are_always_checked(tmp_path):
    path, written, starts = summary_log(tmp_path)
    raw = bytearray(path.read_bytes())
    bad_at = starts[5]  # the history record of step 1
    raw[bad_at + 7 + len(written[5]) - 4] ^= 0x01
    path.write_bytes(bytes(raw))
    records, reader = read_all(path, kinds=STEPS_AND_SUMMARIES)
    assert history_steps(records) == [0]
    assert reader.corruption == wf.Corruption(offset=bad_at, reason="bad CRC")
    assert reader.offset == bad_at


# --- files that change under the reader --------------------------------------------------------


def _in_thread(work, timeout: float = 10.0):
    """Run ``work()`` in a daemon thread: its result, or a failure if it does not return."""
    import threading

    result: list = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the reader did not return"
    return result[0]


def test_file_truncated_during_a_read_ends_the_read(tmp_path, monkeypatch):
    monkeypatch.setattr(wf, "_WINDOW", 1024)
    path = tmp_path / "run-a.wandb"
    written = steps_payloads(40, size=5000)  # ~200 KB, many windows
    lw.write(path, written)
    ends = lw.record_ends(written)
    reader = LogReader(str(path))
    batches = reader.batches()
    first = next(batches)  # fstat saw the full size; now the file shrinks mid-record
    with open(path, "r+b") as file:
        file.truncate(ends[20] + 100)

    def rest() -> list:
        return [r for batch in batches for r in batch]

    records = first + _in_thread(rest)
    steps = [pb.HistoryRecord.FromString(d[s:e]).step.num for _, d, s, e, _, _, _ in records]
    assert steps == list(range(21))
    assert reader.corruption is None and reader.offset == ends[20]


def test_zeroed_block_skipped_past_the_window_reads_on_aligned(tmp_path, monkeypatch):
    # the zeroed chunk header is inside the first window, the end of its block is not
    monkeypatch.setattr(wf, "_WINDOW", 1024)
    path = tmp_path / "run-a.wandb"
    first = lw.frame(steps_payloads(3))
    zeros = b"\x00" * (2 * lw.BLOCK - len(first))  # the rest of block 0 and all of block 1
    later = steps_payloads(30, first_num=4, size=100)
    path.write_bytes(first + zeros + lw.frame(later, at=2 * lw.BLOCK))
    records, reader = read_all(path)
    assert history_steps(records) == [0, 1, 2, *range(30)]
    assert reader.corruption is None and reader.offset == path.stat().st_size


class _CountingFile:
    """A file that records the size of every read."""

    def __init__(self, raw: bytes):
        import io

        self.file = io.BytesIO(raw)
        self.reads: list[int] = []

    def seek(self, pos: int) -> int:
        return self.file.seek(pos)

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.reads.append(len(data))
        return data


@pytest.mark.parametrize(("tail", "torn"), [(b"\x00" * 1_000_000, True),
                                            (b"\x00" * 100 + b"\x01" + b"\x00" * 1_000_000, False)])
def test_torn_tail_reads_the_rest_of_the_file_in_pieces(tail, torn):
    chunk_data = b"abc" + b"\x00" * 10
    raw = b"x" * 7 + chunk_data + tail
    file = _CountingFile(raw)
    end = 7 + len(chunk_data)
    assert wf._torn_tail(file, raw[:end], 0, 7, end, len(raw)) is torn
    assert max(file.reads) <= 64 * 1024
    if not torn:
        assert sum(file.reads) <= 64 * 1024  # stopped at the first non-zero byte
