"""Reading the ``.wandb`` transaction log that the wandb SDK writes into every run directory.

The format, as wandb-core 0.31 writes it (``core/pkg/leveldb/record.go``):

* a 7-byte file header ``:W&B``, magic ``0xBEE1`` little-endian, version 0;
* LevelDB-log framing in 32 KiB blocks counted from file offset 0, so the header sits
  inside the first block; each chunk has a 7-byte header ``<IHB`` (checksum, length,
  type FULL/FIRST/MIDDLE/LAST); a block tail too short for a chunk header is zero
  padding; the checksum is plain IEEE CRC-32 over the type byte and the data;
* each record is a serialized ``wandb_internal_pb2.Record``.

wandb-core buffers the block it is filling and writes it when it is full or when its
periodic flush comes (measured on 0.31: every ~15 s, as the file grew 7 → 2,412 → 4,285
bytes at 15 s and 30 s for a run logging a row every 3 s). So a live file lags its run by
up to ~15 s, grows in whole blocks when the run logs fast, and often ends inside a record
(a FIRST chunk whose LAST is still in memory). That tail is "not yet written", not
corruption: the reader stops before it without an error and the next read resumes from
the end of the last complete record. A SIGKILL loses what was still buffered.

Records are not parsed here. :func:`record_kind` finds a record's type from its first
bytes (protobuf writes ``num`` first; wandb-core, using Go's legacy field order, writes
``control``/``uuid``/``_info`` before the ``record_type`` oneof), so a caller can skip the
records it does not need without decoding them.

Damage to the framing (a length overrunning its block, a bad chunk type sequence) or a
bad CRC found while reading stops the reader where it starts, and it keeps the records
before it. What is checked, precisely:

* every chunk is framed: its length and type are checked, and the file is read as chunks;
* every record handed out has a verified checksum, except summary records told apart as
  step or runtime summaries (:data:`STEP_SUMMARY`, :data:`RUNTIME_SUMMARY`). Those in a
  single chunk come out framed only, with where their chunk header sits in ``data``
  (see :data:`Record`); a caller verifies one with :func:`intact` before using its
  content, so a step summary that is superseded and never used costs no checksum;
* a record skipped by kind from its first bytes is framed only.

So damage inside a record that is only framed shows up when (and if) its content is
used, or if it broke the framing; the principle is that every record whose content is
used is checksum-verified. Not checksumming the rest is where the speed is.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from runwatch.files import open_regular

try:  # the compiled fast paths, where the install could build them (see _wandblog.c)
    from runwatch.sources import _wandblog as compiled
except ImportError:  # pragma: no cover - a machine without a compiler
    compiled = None

FILE_HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
FILE_HEADER_SIZE = len(FILE_HEADER)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER_SIZE = 7

FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# Field numbers of ``Record.record_type`` (wandb_internal.proto); a record's kind.
HISTORY = 2
SUMMARY = 3
OUTPUT = 4
CONFIG = 5
ALERT = 10
FILES = 6
STATS = 7
TELEMETRY = 11
METRIC = 12
OUTPUT_RAW = 13
RUN = 17
EXIT = 18
FINAL = 20
HEADER = 21
FOOTER = 22
PREEMPTING = 23
ENVIRONMENT = 26
UNKNOWN = 0

# Kinds the reader tells apart among SUMMARY records when asked for them. wandb-core
# writes two summary records per logged step: a `_wandb.runtime`/`_runtime` update
# (RUNTIME_SUMMARY) and, right after it, the step's values (STEP_SUMMARY). A caller that
# asks for STEP_SUMMARY but not RUNTIME_SUMMARY never sees the runtime records: they are
# a third of a log and carry nothing but wandb's internal timer. Records of either kind
# are handed out framed but not checksummed (see :func:`intact`).
STEP_SUMMARY = -2
RUNTIME_SUMMARY = -3
_RUNTIME = b"\x12\x06_wandb\x12\x07runtime\x82\x01"

# Fields of ``Record`` outside the ``record_type`` oneof. wandb-core (Go, legacy field
# order) writes them before the oneof: num, control, uuid, _info, then the record itself.
_NON_ONEOF = frozenset({1, 16, 19, 200})

# Reading in windows keeps a first read of a multi-GB log at bounded memory.
_WINDOW = 256 * 1024
# How much of a file's tail is read at a time to tell a torn write from damage.
_TAIL_PIECE = 64 * 1024

_unpack_chunk = struct.Struct("<IHB").unpack_from
# A history record as wandb-core begins it: `08 <num> 12` (the record number, then the
# history field's tag).
_history_head = re.compile(rb"\x08[\x80-\xff]{0,4}[\x00-\x7f]\x12").match
# A chunk header and the first 6 bytes of its data: a record's number (up to 2^28: a
# long run's records pass 2^21 after ~700k steps) and type tag.
_unpack_head = struct.Struct("<IHB6B").unpack_from
_crc32 = zlib.crc32


@dataclass(frozen=True, kw_only=True, slots=True)
class Corruption:
    """Where and why a log stopped making sense (or, ``skipped``, one record of it did)."""

    offset: int
    reason: str
    skipped: bool = False  # only the record at offset is lost; reading went on past it

    def message(self, path: str) -> str:
        if self.skipped:
            return (f"{path}: {self.reason} at offset {self.offset}; that record is skipped, "
                    "the rest of the log is used")
        return f"{path}: {self.reason} at offset {self.offset}; records before it are used"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError when cut short)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def record_kind(data: bytes, start: int, end: int) -> tuple[int, int, int]:
    """``(kind, inner_start, inner_end)`` of the serialized Record in ``data[start:end]``.

    ``kind`` is the field number of the record's type (``HISTORY``…) and
    ``data[inner_start:inner_end]`` the serialized inner message, so a caller can
    parse just that or skip the record. Unknown or malformed layouts give ``UNKNOWN``.
    """
    pos = start
    try:
        while pos < end:
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _varint(data, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 2:
                size = data[pos]
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = _varint(data, pos)
                if field not in _NON_ONEOF:
                    if pos + size > end:
                        return UNKNOWN, start, start
                    return field, pos, pos + size
                pos += size
            elif wire == 0:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return UNKNOWN, start, start
    except (IndexError, ValueError):
        pass
    return UNKNOWN, start, start


# One record as the reader hands it out:
# (kind, data, inner_start, inner_end, unchecked, seq, offset).
# data[inner_start:inner_end] is the serialized inner message (HistoryRecord…); unchecked
# is -1 when the record's checksum was verified, else where in data its chunk header is
# (STEP_SUMMARY and RUNTIME_SUMMARY records: check them with `intact` before use); seq
# counts every record of the file read so far, skipped kinds included, so equal seq steps
# mean adjacent records; offset is where the record starts in the file.
Record = tuple[int, bytes, int, int, int, int, int]


def intact(data: bytes, unchecked: int) -> bool:
    """Whether a record handed out unchecked (see :data:`Record`) matches its checksum."""
    if unchecked < 0:
        return True
    checksum, length, _ = _unpack_chunk(data, unchecked)
    return _crc32(memoryview(data)[unchecked + 6 : unchecked + 7 + length]) == checksum


class LogReader:
    """Complete records of one ``.wandb`` file from a byte offset on.

    Iterating yields a :data:`Record` for each complete record of a kind in ``kinds``
    (every kind when None); :meth:`batches` yields them a list at a time, which is faster.
    ``data`` may be a buffer shared by many records, so slice what you keep. Step and
    runtime summary records are not checksummed: use :func:`intact` before their content.

    After each batch (and at the end) ``offset`` is the end of the last complete record
    read, where the next read resumes; ``corruption`` says where reading stopped on a
    damaged chunk; ``records`` counts the records read; ``size`` is the file size seen
    when reading began. ``offset`` must be 0 or an offset a reader reported for this file.
    A last record not completely written yet is left for the next read, without error.
    """

    __slots__ = ("corruption", "kinds", "offset", "path", "records", "size", "window")

    def __init__(self, path: str, offset: int = 0, *, kinds: Container[int] | None = None,
                 window: int | None = None):
        self.path = path
        self.offset = offset
        self.kinds = kinds
        # bytes read at a time (a batch is the records they hold); default _WINDOW
        self.window = window or _WINDOW
        self.corruption: Corruption | None = None
        self.records = 0
        self.size = 0

    def __iter__(self) -> Iterator[Record]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Record]]:
        with open_regular(self.path) as file:
            self.size = os.fstat(file.fileno()).st_size
            if self.offset < FILE_HEADER_SIZE and not self._check_header(file):
                return
            yield from self._batches(file)

    def _check_header(self, file: BinaryIO) -> bool:
        file.seek(0)
        head = file.read(FILE_HEADER_SIZE)
        if len(head) < FILE_HEADER_SIZE and FILE_HEADER.startswith(head):
            return False  # the writer has not got this far yet
        if head[:6] != FILE_HEADER[:6]:
            self.corruption = Corruption(offset=0, reason="not a W&B transaction log (bad header)")
            return False
        if head[6] != FILE_HEADER[6]:
            self.corruption = Corruption(offset=6, reason=f"unsupported log version {head[6]}")
            return False
        self.offset = FILE_HEADER_SIZE
        return True

    def _batches(self, file: BinaryIO) -> Iterator[list[Record]]:
        # The hot loop of the whole source, so: locals only, a block at a time, one
        # unpack per chunk, a checksum only for records handed out (and not for step or
        # runtime summaries, which are left to `intact`), and nothing allocated for the
        # others. Rare cases (chunk errors, multi-chunk records) leave the fast path.
        kinds = self.kinds
        tags = _tag_table(kinds)
        step_summaries = kinds is not None and STEP_SUMMARY in kinds
        runtime_kind = RUNTIME_SUMMARY if kinds is not None and RUNTIME_SUMMARY in kinds else 0
        summary_kind = SUMMARY if kinds is None or SUMMARY in kinds else 0
        unpack = _unpack_chunk
        unpack_head = _unpack_head
        crc32 = _crc32
        kind_of = record_kind
        fast = compiled.frame if compiled is not None else None
        size = self.size
        seq = self.records
        runtime_seq = -2  # seq of the last runtime summary record
        base = self.offset  # file offset of buf[0]
        file.seek(base)
        window = self.window
        buf = file.read(min(window, size - base)) if size > base else b""
        view = memoryview(buf)
        avail = len(buf)
        pos = 0  # the next chunk header, in buf
        done = 0  # end of the last complete record, in buf (negative once slid past)
        parts: list[bytes] | None = None  # the chunks so far of a multi-chunk record
        first_at = 0  # file offset of a multi-chunk record's first chunk
        out: list[Record] = []
        append = out.append
        while True:
            block_end = ((base + pos) | (BLOCK_SIZE - 1)) + 1 - base  # in buf
            limit = block_end if block_end <= avail else avail
            while pos + 7 <= limit:
                if fast is not None and parts is None:
                    # The compiled loop below, up to the first chunk it leaves to it.
                    pos, done, seq, runtime_seq = fast(
                        buf, pos, limit, tags, step_summaries, runtime_kind, summary_kind,
                        seq, runtime_seq, base, done, out)
                    if pos + 7 > limit:
                        continue
                try:
                    checksum, length, ctype, b0, b1, b2, b3, b4, b5 = unpack_head(buf, pos)
                except struct.error:
                    break  # the data ends within 6 bytes: the slow path decides
                start = pos + 7
                end = start + length
                if end > limit or ctype != 1 or parts is not None:
                    break  # not a complete FULL chunk where one belongs: the slow path decides
                # `08 <num> <tag> <len>`: the record number, then (for the common kinds)
                # a one-byte tag whose table entry says skip (1), take (2) or, for a
                # summary record, take unless it is a runtime record (3).
                verdict = 0
                if b0 == 8:
                    if b1 < 128:
                        p, tag = start + 2, b2
                    elif b2 < 128:
                        p, tag = start + 3, b3
                    elif b3 < 128:
                        p, tag = start + 4, b4
                    elif b4 < 128:
                        p, tag = start + 5, b5
                    else:
                        p, tag = end, 0
                    if p + 2 < end:
                        verdict = tags[tag]
                        if verdict == 1:
                            seq += 1
                            pos = done = end
                            continue
                        if verdict == 3:
                            if end - p < 64 and buf.startswith(_RUNTIME, p + 4):
                                seq += 1
                                runtime_seq = seq
                                if runtime_kind:
                                    append((runtime_kind, buf, p + 2, end, pos, seq, base + pos))
                                pos = done = end
                                continue
                            if step_summaries and seq == runtime_seq:
                                # The step's summary, right after the runtime one: framed
                                # only, its checksum left to `intact` (one- or two-byte
                                # lengths; longer ones take the checked path below).
                                n = buf[p + 1]
                                if n < 128:
                                    q = p + 2
                                elif buf[p + 2] < 128:
                                    n, q = (n & 127) | (buf[p + 2] << 7), p + 3
                                else:
                                    q = 0
                                if q:
                                    seq += 1
                                    append((STEP_SUMMARY, buf, q, q + n, pos, seq, base + pos))
                                    pos = done = end
                                    continue
                if crc32(view[pos + 6 : end]) != checksum:
                    break  # the slow path reports it
                seq += 1
                at = pos
                pos = done = end
                if verdict >= 2:
                    kind = tag >> 3
                    if verdict == 3:
                        if step_summaries and seq == runtime_seq + 1:
                            kind = STEP_SUMMARY
                        elif not summary_kind:
                            continue
                    n = buf[p + 1]
                    if n < 128:
                        append((kind, buf, p + 2, p + 2 + n, -1, seq, base + at))
                        continue
                    n2 = buf[p + 2]
                    if n2 < 128:
                        n = (n & 127) | (n2 << 7)
                        append((kind, buf, p + 3, p + 3 + n, -1, seq, base + at))
                        continue
                kind, inner_start, inner_end = kind_of(buf, start, end)
                if kind == SUMMARY and tags[SUMMARY << 3 | 2] == 3:
                    kind, runtime_seq = _summary_kind(
                        buf, inner_start, inner_end, seq, runtime_seq, runtime_kind
                    )
                if kinds is None or kind in kinds:
                    append((kind, buf, inner_start, inner_end, -1, seq, base + at))
            else:
                # Fewer than 7 bytes left: the block's zero trailer, or the window ends.
                if block_end <= avail:
                    pos = block_end
                    continue
            # The slow path: one chunk that is not a complete, valid FULL chunk, or the
            # window ends inside a chunk (or its header).
            start = pos + 7
            end = start
            if end <= avail:
                checksum, length, ctype = unpack(buf, pos)
                end += length
                if end > block_end:
                    self._corrupt(base + pos, f"chunk length {length} overruns its block")
                    break
            if end > avail:
                if base + avail >= size:
                    break  # the end of the file: a chunk still being written
                self.offset, self.records = base + done, seq
                if out:
                    yield out
                    out = []
                    append = out.append
                kept = avail - pos if avail > pos else 0
                buf, base, pos, done = _slide(file, buf, base, pos, done, size, window)
                view, avail = memoryview(buf), len(buf)
                if avail <= kept:
                    # Nothing more to read: the file shrank since fstat, so it ends here.
                    self.size = base + avail
                    break
                continue
            if ctype == 0 and checksum == 0 and length == 0:
                # A zeroed chunk header: preallocated or torn space. Like wandb's own
                # reader, skip the rest of the block; at the end of the file it is space
                # not written yet, so stop quietly and look again next time.
                if parts is not None:
                    self._corrupt(base + pos, "zeroed chunk inside a record")
                    break
                if base + block_end >= size:
                    break
                pos = done = block_end
                continue
            if crc32(view[pos + 6 : end]) != checksum:
                if not _torn_tail(file, buf, base, start, end, size):
                    self._corrupt(base + pos, "bad CRC")
                break
            if ctype in (FULL, FIRST):
                if parts is not None:
                    name = "FULL" if ctype == FULL else "FIRST"
                    self._corrupt(base + pos, f"{name} chunk inside a record")
                    break
                parts = []  # a FULL chunk here is a record too short for the fast path
                first_at = base + pos
            elif ctype not in (MIDDLE, LAST):
                self._corrupt(base + pos, f"unknown chunk type {ctype}")
                break
            elif parts is None:
                self._corrupt(base + pos, "chunk continues no record")
                break
            parts.append(buf[start:end])
            pos = end
            if ctype in (FIRST, MIDDLE):
                continue
            record = b"".join(parts)
            parts = None
            done = pos
            seq += 1
            kind, inner_start, inner_end = kind_of(record, 0, len(record))
            if kind == SUMMARY and tags[SUMMARY << 3 | 2] == 3:
                kind, runtime_seq = _summary_kind(
                    record, inner_start, inner_end, seq, runtime_seq, runtime_kind
                )
            if kinds is None or kind in kinds:
                append((kind, record, inner_start, inner_end, -1, seq, first_at))
        self.offset, self.records = base + done, seq
        if out:
            yield out

    def _corrupt(self, offset: int, reason: str) -> None:
        self.corruption = Corruption(offset=offset, reason=reason)


def history_starts(path: str, start: int, stop: int | None = None) -> list[int]:
    """The offsets of the history records that start in ``[start, stop)``: found from the
    chunk framing and each record's first bytes, a block at a time, with no checksum and
    nothing decoded — a count of rows, for finding where a window starts (the reader that
    then reads them checks them). ``start`` is a record's start or a block boundary past
    the first block: every block begins with a chunk header, and a MIDDLE or LAST chunk
    there continues a record begun before it, which is not counted — so a log is joined
    at any block. A record whose first chunk holds too few bytes to tell its kind (one
    begun at a block's very end) is not counted either."""
    found: list[int] = []
    append = found.append
    unpack = _unpack_chunk
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        end = size if stop is None else min(stop, size)
        block = start - start % BLOCK_SIZE
        pos = start - block
        file.seek(block)
        while block < end:
            data = file.read(BLOCK_SIZE)
            avail = len(data)
            while pos + CHUNK_HEADER_SIZE <= avail:
                _, length, ctype = unpack(data, pos)
                if ctype == 0 and length == 0:
                    break  # a zeroed tail: the next block begins anew
                if block + pos >= end:
                    return found
                data_at = pos + CHUNK_HEADER_SIZE
                if ctype in (FULL, FIRST):
                    if _history_head(data, data_at, data_at + length):
                        append(block + pos)
                    elif data[data_at:data_at + 1] != b"\x08" and record_kind(
                            data, data_at, data_at + length)[0] == HISTORY:
                        append(block + pos)  # another field order than wandb-core's
                pos = data_at + length
            if avail < BLOCK_SIZE:
                break
            block += BLOCK_SIZE
            pos = 0
    return found


def _slide(
    file: BinaryIO, buf: bytes, base: int, pos: int, done: int, size: int, window: int
) -> tuple[bytes, int, int, int]:
    """Move the window to start at ``pos`` and read on: at least one more block."""
    step = max(window, 2 * BLOCK_SIZE)
    if pos >= len(buf):
        # ``pos`` is past the window (a skipped zeroed block): a fresh window there.
        file.seek(base + pos)
        fresh = file.read(min(step, max(size - (base + pos), 0)))
        return fresh, base + pos, 0, done - pos
    end = base + len(buf)
    file.seek(end)
    more = file.read(min(step, size - end))
    return buf[pos:] + more, base + pos, 0, done - pos


def _tag_table(kinds: Container[int] | None) -> bytes:
    """For each byte after a record's number: 0 look closer, 1 skip, 2 take, 3 a summary.

    Only one-byte tags of length-delimited fields 2..15 are decided here; field 1 is the
    number itself and anything longer goes through :func:`record_kind`.
    """
    if kinds is None or isinstance(kinds, frozenset):
        return _tag_table_of(kinds)  # the usual case: one table per kind set, kept
    return _make_tag_table(kinds)


@functools.lru_cache(maxsize=64)
def _tag_table_of(kinds: frozenset[int] | None) -> bytes:
    return _make_tag_table(kinds)


def _make_tag_table(kinds: Container[int] | None) -> bytes:
    table = bytearray(256)
    for field in range(2, 16):
        table[field << 3 | 2] = 2 if kinds is None or field in kinds else 1
    if kinds is not None and ({STEP_SUMMARY, RUNTIME_SUMMARY} & set(_kinds_of(kinds))):
        table[SUMMARY << 3 | 2] = 3
    return bytes(table)


def _summary_kind(
    data: bytes, start: int, end: int, seq: int, runtime_seq: int, runtime_kind: int
) -> tuple[int, int]:
    """The kind of a summary record off the fast path, and the new ``runtime_seq``."""
    if end - start < 62 and data.startswith(_RUNTIME, start + 2):
        return (runtime_kind or UNKNOWN), seq
    return (STEP_SUMMARY if seq == runtime_seq + 1 else SUMMARY), runtime_seq


def _kinds_of(kinds: Container[int]) -> Iterator[int]:
    for kind in (SUMMARY, STEP_SUMMARY, RUNTIME_SUMMARY):
        if kind in kinds:
            yield kind


def _torn_tail(file: BinaryIO, buf: bytes, base: int, start: int, end: int, size: int) -> bool:
    """Whether a bad checksum is a write cut short: zeros from inside the chunk to EOF."""
    if not buf[start:end].endswith(b"\x00"):
        return False
    pos = base + end
    if pos < size:
        file.seek(pos)
        while pos < size:  # a piece at a time: the rest of the file may be large
            piece = file.read(min(_TAIL_PIECE, size - pos))
            if not piece:
                break  # the file is shorter than it was
            if piece.strip(b"\x00"):
                return False
            pos += len(piece)
    return True
