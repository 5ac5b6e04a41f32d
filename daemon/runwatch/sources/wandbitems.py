"""Key/value items of serialized History, Summary and Config records, read without protobuf.

``HistoryItem``, ``SummaryItem`` and ``ConfigItem`` share their wire layout: ``key`` (1),
``nested_key`` (2, repeated) and ``value_json`` (16). wandb-core writes nearly every item as
``0a L 12 KL <key> 82 01 VL <json>`` with one-byte lengths, and neither a key nor JSON text
holds a byte below 0x20, so one regular expression takes a record apart at C speed; that is
most of what makes reading a long run fast. The items matched must account for every
byte of the record, so nothing is skipped silently: whatever does not fit that shape
(long values, nested keys of several elements, the typed value fields newer writers may
use, removals…) goes through the protobuf classes instead.

Items come back as ``{raw key: raw JSON}`` bytes. A raw key is the key's bytes as they
appear in the record; a nested key of several elements keeps its inner ``12 KL``
separators, so a key always has the same raw form, and :func:`key_text` turns it into
``a.b``. Values are converted only for the keys a caller wants (:func:`number`,
:func:`json_value`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

# Key and JSON text are runs of bytes 0x20-0xff: written as a range rather than as "not
# a control byte", which sre checks faster (the pattern is ~12% quicker on SDK rows).
_ITEM = re.compile(
    rb"\n[\x00-\x7f]"  # an item: tag, one-byte length
    rb"[\n\x12][\x00-\x7f]([ -\xff]*)"  # its key (or one-element nested key)
    rb"\x82\x01[\x00-\x7f]([ -\xff]*+)"  # value_json: tag, one-byte length, JSON text
)
_findall = find_items = _ITEM.findall  # (data, start, end) -> [(raw key, raw JSON)]

# A raw key that could not take the byte-level form (a control byte inside) is its text
# behind this marker, which no byte-level key can start with.
_TEXT_KEY = b"\x00"


def items(data: bytes, start: int, end: int) -> dict[bytes, bytes] | None:
    """The items of ``data[start:end]`` (a Summary or Config record) or None if unusual.

    None means the bytes are not exactly a run of plain items (a removal, a long value,
    a repeated key…): the caller should parse the record with protobuf instead.
    """
    found = dict(_findall(data, start, end))
    # The items matched must tile the record: each is 7 framing bytes plus key and value.
    if 7 * len(found) + sum(map(len, found)) + sum(map(len, found.values())) != end - start:
        return None
    return found


def history_items(data: bytes, start: int, end: int) -> dict[bytes, bytes] | None:
    """The items of a serialized HistoryRecord, or None if unusual (parse it with protobuf).

    A trailing ``step`` field (``12 L 08 <varint>``) is allowed; :func:`history_step` reads it.
    """
    found = dict(_findall(data, start, end))
    # Nothing in the step field can look like an item, so the items matched plus the
    # step field must tile the record exactly.
    rest = end - start - 7 * len(found) - sum(map(len, found)) - sum(map(len, found.values()))
    if rest == 0 or (
        1 < rest < 13 and data[end - rest] == 0x12 and data[end - rest + 1] == rest - 2
    ):
        return found
    return None


def history_step(data: bytes, start: int, end: int) -> int | None:
    """``step.num`` of a HistoryRecord that :func:`history_items` read, or None."""
    for size in range(12, 1, -1):
        at = end - size
        if at >= start and data[at] == 0x12 and data[at + 1] == size - 2:
            if size == 2:
                return 0
            if data[at + 2] == 0x08:
                return _varint(data, at + 3, end)
    return None


def _varint(data: bytes, pos: int, end: int) -> int:
    value = shift = 0
    while pos < end:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        pos += 1
        shift += 7
    return value


def _raw_key(item: Any) -> bytes:
    """The raw form the byte-level reader would give the key of a protobuf item."""
    names = list(item.nested_key) or [item.key]
    parts = [name.encode() for name in names]
    if any(len(p) >= 0x80 or _CONTROL.search(p) for p in parts):
        return _TEXT_KEY + ".".join(p.decode() for p in parts).encode()
    return parts[0] + b"".join(b"\x12" + bytes([len(p)]) + p for p in parts[1:])


_CONTROL = re.compile(rb"[\x00-\x1f]")


def _raw_value(item: Any) -> bytes:
    """JSON text of an item, from ``value_json`` or, for newer writers, the ``value`` oneof."""
    if item.value_json:
        return item.value_json.encode()
    which = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if which is None:
        return b"null"
    value = getattr(item, which)
    if which == "boolean":
        return b"true" if value else b"false"
    if which == "number":
        if math.isnan(value):
            return b"NaN"
        if math.isinf(value):
            return b"Infinity" if value > 0 else b"-Infinity"
        return repr(value).encode()
    if which == "integer":
        return str(value).encode()
    if which == "text":
        return json.dumps(value).encode()
    if which == "json":
        return value.encode()
    return b"null"


def parse_history(data: bytes) -> tuple[dict[bytes, bytes], int | None]:
    """Items and ``step.num`` (None if absent) of any HistoryRecord, through protobuf."""
    record = pb.HistoryRecord.FromString(data)
    found = {_raw_key(item): _raw_value(item) for item in record.item}
    return found, (record.step.num if record.HasField("step") else None)


def parse_updates(data: bytes, kind: type) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Updates and removed keys of a serialized SummaryRecord or ConfigRecord."""
    record = kind.FromString(data)
    updates = {_raw_key(item): _raw_value(item) for item in record.update}
    removed = [_raw_key(item) for item in record.remove]
    return updates, removed


def key_text(raw: bytes) -> str:
    """``train/loss`` or, for a nested key, its elements joined by dots."""
    if raw.startswith(_TEXT_KEY):
        return raw[1:].decode("utf-8", "replace")
    if b"\x12" not in raw:
        return raw.decode("utf-8", "replace")
    parts = []
    pos = raw.find(b"\x12")
    parts.append(raw[:pos])
    while pos < len(raw):
        size = raw[pos + 1]
        parts.append(raw[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return ".".join(p.decode("utf-8", "replace") for p in parts)


def number(raw: bytes) -> float | None:
    """The JSON number, as a float (NaN and ±Infinity included), or None if not a number."""
    try:
        return float(raw)  # float() reads NaN/Infinity/-Infinity and takes bytes
    except ValueError:
        pass
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def json_value(raw: bytes) -> Any:
    """The JSON value (NaN and ±Infinity as floats), or the text itself if not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
