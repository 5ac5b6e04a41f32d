"""How store values become flat rows of plain columns and back.

Every backend goes through these functions — the in-memory one too — so all of them
accept and return exactly the same values: JSON turns tuples into lists, and
non-finite floats survive (strict JSON has no NaN or Infinity, so they are written
as ``{"$float": "nan"}``, which PostgreSQL's ``jsonb`` accepts as well). A check's
memory packs its lists of floats (``{"$f64": "<base64>"}``): exact, and cheap to write
on every tick.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import operator
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from runwatch.model import AlertState, AlertStatus, RunRef, RunState, Severity
from runwatch.store.base import (
    Delivery,
    Matcher,
    MatchOp,
    NotificationRecord,
    OutboxEntry,
    Silence,
)


class CodecError(ValueError):
    """A value the store cannot represent, or a stored row it cannot read back."""


# --- JSON with non-finite floats ----------------------------------------------------------

_FLOAT_TAG = "$float"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_COMPACT = (",", ":")


# One encoder for every write: json.dumps with options builds a new one per call (~4 µs).
_ENCODER = json.JSONEncoder(allow_nan=False, separators=_COMPACT)


def encode_json(value: Any) -> str:
    """Strict JSON text for ``value``; CodecError if it is not JSON data."""
    try:
        return _ENCODER.encode(value)
    except TypeError as exc:
        raise CodecError(f"not JSON-serialisable: {exc}") from None
    except ValueError:
        pass  # a NaN or infinity somewhere (or a reference cycle): tag them and retry
    try:
        return _ENCODER.encode(_tag_nonfinite(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise CodecError(f"not JSON-serialisable: {exc}") from None


def decode_json(text: str) -> Any:
    return _decode(_DECODER, text)


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored JSON unreadable: {exc}") from None


def _tag_nonfinite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
    if isinstance(value, dict):
        return {key: _tag_nonfinite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tag_nonfinite(item) for item in value]
    return value


def _untag_nonfinite(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj:
        tagged = obj[_FLOAT_TAG]
        if isinstance(tagged, str) and tagged in _NONFINITE:
            return _NONFINITE[tagged]
    return obj


# One decoder for every read: json.loads with an object_hook builds a new one per call.
_DECODER = json.JSONDecoder(object_hook=_untag_nonfinite)


# --- check memory -------------------------------------------------------------------------

# A check's memory is mostly a window of floats (row times, recent values) that moves on
# every tick with new rows. Written as decimal text, 50 floats take ~35 µs (repr of each);
# packed as their 8-byte IEEE values in base64, ~3 µs — and they come back bit for bit,
# NaN, infinities and -0.0 included. Shorter lists stay plain JSON, readable in the file.
_FLOATS_TAG = "$f64"
_PACK_AT = 8
_FLOATS_ONLY = {float}


def encode_memory(memory: Any) -> str:
    """``memory`` as JSON text, its lists of floats packed; CodecError if not JSON data."""
    if type(memory) is list and len(memory) == 2 and type(memory[0]) is str and _packable(
            memory[1]):
        # What the engine stores: [rule tag, window]. Written straight, as the encoder
        # would write it, at a third of the cost.
        return f'[{_quote(memory[0])},{{"{_FLOATS_TAG}":"{_packed(memory[1])}"}}]'
    try:
        packed = _pack_floats(memory)
    except RecursionError as exc:  # a reference cycle
        raise CodecError(f"not JSON-serialisable: {exc}") from None
    return encode_json(packed)


def decode_memory(text: str) -> Any:
    """The inverse of ``encode_memory`` (plain ``encode_json`` text reads the same)."""
    return _decode(_MEMORY_DECODER, text)


def _packable(value: Any) -> bool:
    kind = type(value)
    return ((kind is list or kind is tuple) and len(value) >= _PACK_AT
            and set(map(type, value)) == _FLOATS_ONLY)


def _packed(floats: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(floats)}d", *floats)).decode("ascii")


def _pack_floats(value: Any) -> Any:
    kind = type(value)
    if kind is list or kind is tuple:
        if _packable(value):
            return {_FLOATS_TAG: _packed(value)}
        return [_pack_floats(item) for item in value]
    if kind is dict:
        return {key: _pack_floats(item) for key, item in value.items()}
    return value


def _unpack_floats(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _FLOATS_TAG in obj:
        packed = obj[_FLOATS_TAG]
        if isinstance(packed, str):
            try:
                raw = base64.b64decode(packed, validate=True)
            except ValueError:
                return obj
            if len(raw) % 8 == 0:
                return list(struct.unpack(f"<{len(raw) // 8}d", raw))
        return obj
    return _untag_nonfinite(obj)


_MEMORY_DECODER = json.JSONDecoder(object_hook=_unpack_floats)


# --- alerts -------------------------------------------------------------------------------

ALERT_COLUMNS = (
    "fingerprint",
    "rule",
    "run_source",
    "run_id",
    "run_name",
    "run_project",
    "run_entity",
    "run_location",
    "run_path",
    "severity",
    "status",
    "active_since",
    "since_step",
    "fired_at",
    "resolved_at",
    "first_seen",
    "last_seen",
    "metric",
    "value",
    "step",
    "summary",
    "labels",
    "memory",
    "run_state",
    "resolution",
    "first_value",
    "latest_value",
    "latest_step",
    "updated_at",
)

# Columns a later schema added, with the value its migration gave the rows already there.
# Outbox payloads queued before then lack them too, and read back the same way.
ADDED_COLUMNS: Mapping[str, Any] = {  # schemas 4, 5, 6
    "run_state": "", "resolution": "", "first_value": None, "latest_value": None,
    "latest_step": None}

_TIME_FIELDS = ("active_since", "fired_at", "resolved_at", "first_seen", "last_seen")


def _time(alert: AlertState, name: str) -> float | None:
    value = getattr(alert, name)
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        raise CodecError(f"{name} is NaN")
    return value


_INT64 = 2**63  # what every backend's integer column holds: -2**63 .. 2**63 - 1


def _int(value: int | None) -> int | None:
    if value is None:
        return None
    number = int(value)
    if not -_INT64 <= number < _INT64:
        raise ValueError(f"integer {number} is out of the 64-bit range")
    return number


def _number_text(value: float | None) -> str | None:
    """A metric value as text: SQL REAL columns turn NaN into NULL."""
    return None if value is None else repr(float(value))


def alert_to_row(alert: AlertState, updated_at: float) -> tuple[Any, ...]:
    """``alert`` as values in ``ALERT_COLUMNS`` order.

    ``value`` is text (``repr`` of the float) because SQL REAL columns turn NaN into
    NULL; times must be numbers, not NaN.
    """
    with _storing(alert):
        run = alert.run
        labels = {str(k): str(v) for k, v in sorted(dict(alert.labels).items())}
        times = {name: _time(alert, name) for name in _TIME_FIELDS}
        return (
            str(alert.fingerprint),
            str(alert.rule),
            run.source,
            run.id,
            run.name,
            run.project,
            run.entity,
            run.location,
            run.path,
            Severity(alert.severity).value,
            AlertStatus(alert.status).value,
            times["active_since"],
            _int(alert.since_step),
            times["fired_at"],
            times["resolved_at"],
            times["first_seen"],
            times["last_seen"],
            alert.metric,
            _number_text(alert.value),
            _int(alert.step),
            str(alert.summary),
            encode_json(labels),
            encode_memory(alert.memory),
            RunState(alert.run_state).value,
            str(alert.resolution),
            _number_text(alert.first_value),
            _number_text(alert.latest_value),
            _int(alert.latest_step),
            float(updated_at),
        )


@contextmanager
def _storing(alert: AlertState) -> Iterator[None]:
    """A value of ``alert`` that cannot be stored, as one CodecError naming the alert."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise _unstorable(alert, exc) from None


def _unstorable(alert: AlertState, exc: Exception) -> CodecError:
    return CodecError(f"cannot store alert {alert.fingerprint} (rule {alert.rule}, "
                      f"run {alert.run.path}): {exc}")


# What a tick changes in an alert that keeps its status (``MOVING_COLUMNS`` and the
# memory): its newest point, summary, last evaluation and run state, its check's memory.
# Everything else (``STEADY_FIELDS``) changes with the status, or never. A writer that
# knows the stored state updates just these columns, encoded as ``alert_to_row`` encodes
# them, so the row ends up exactly as a whole-row write leaves it.
STEADY_FIELDS = (
    "fingerprint", "rule", "run", "severity", "status", "active_since", "since_step",
    "fired_at", "resolved_at", "first_seen", "first_value", "labels", "resolution",
)
MOVING_COLUMNS = (
    "last_seen", "metric", "value", "step", "latest_value", "latest_step", "summary",
    "run_state", "updated_at",
)
steady = operator.attrgetter(*STEADY_FIELDS)


def moving_row(alert: AlertState, updated_at: float, *, memory: bool = False) -> tuple[Any, ...]:
    """``alert``'s values in ``MOVING_COLUMNS`` order (then its ``memory``, if asked),
    encoded as ``alert_to_row`` encodes them. (A busy tick encodes thousands: no context
    manager, and a RunState taken as it is.)"""
    try:
        state = alert.run_state
        return (
            _time(alert, "last_seen"),
            alert.metric,
            _number_text(alert.value),
            _int(alert.step),
            _number_text(alert.latest_value),
            _int(alert.latest_step),
            str(alert.summary),
            state.value if type(state) is RunState else RunState(state).value,
            float(updated_at),
            *((encode_memory(alert.memory),) if memory else ()),
        )
    except (TypeError, ValueError) as exc:
        raise _unstorable(alert, exc) from None


def alert_from_row(row: Sequence[Any]) -> AlertState:
    """The inverse of ``alert_to_row`` (``updated_at`` is not part of the state)."""
    (
        fingerprint,
        rule,
        run_source,
        run_id,
        run_name,
        run_project,
        run_entity,
        run_location,
        _run_path,
        severity,
        status,
        active_since,
        since_step,
        fired_at,
        resolved_at,
        first_seen,
        last_seen,
        metric,
        value,
        step,
        summary,
        labels,
        memory,
        run_state,
        resolution,
        first_value,
        latest_value,
        latest_step,
        _updated_at,
    ) = row
    try:
        return AlertState(
            fingerprint=fingerprint,
            rule=rule,
            run=RunRef(
                source=run_source,
                id=run_id,
                name=run_name,
                project=run_project,
                entity=run_entity,
                location=run_location,
            ),
            severity=Severity(severity),
            status=AlertStatus(status),
            active_since=active_since,
            since_step=since_step,
            fired_at=fired_at,
            resolved_at=resolved_at,
            first_seen=first_seen,
            last_seen=last_seen,
            metric=metric,
            value=None if value is None else float(value),
            step=step,
            summary=summary,
            labels=decode_json(labels),
            memory=decode_memory(memory),
            run_state=RunState(run_state or RunState.UNKNOWN),  # '': stored before schema 4
            resolution=resolution or "",
            first_value=None if first_value is None else float(first_value),
            latest_value=None if latest_value is None else float(latest_value),
            latest_step=latest_step,
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored alert {fingerprint} unreadable: {exc}") from None


def alert_to_data(alert: AlertState, *, memory: bool = True) -> dict[str, Any]:
    """``alert`` as a JSON-ready mapping (for payloads that carry alerts, like the outbox's);
    without its check ``memory`` unless asked."""
    row = alert_to_row(alert if memory else _without_memory(alert), 0.0)
    data = dict(zip(ALERT_COLUMNS[:-1], row[:-1], strict=True))
    data["labels"] = decode_json(data["labels"])
    data["memory"] = decode_memory(data["memory"])
    return data


def alert_from_data(data: Mapping[str, Any]) -> AlertState:
    """The inverse of ``alert_to_data``; CodecError if ``data`` is not one."""
    try:
        given = {**ADDED_COLUMNS, **data}
        row = [given[name] for name in ALERT_COLUMNS[:-1]]
    except (KeyError, TypeError) as exc:
        raise CodecError(f"stored alert unreadable: missing {exc}") from None
    index = ALERT_COLUMNS.index
    row[index("labels")] = encode_json(row[index("labels")])
    row[index("memory")] = encode_memory(row[index("memory")])
    return alert_from_row((*row, 0.0))


def _without_memory(alert: AlertState) -> AlertState:
    return alert if alert.memory is None else dataclasses.replace(alert, memory=None)


# --- notification log ---------------------------------------------------------------------

NOTIFICATION_COLUMNS = ("group_key", "receiver", "firing", "resolved", "sent_at", "expires_at")


def notification_to_row(record: NotificationRecord) -> tuple[Any, ...]:
    try:
        return (
            str(record.group_key),
            str(record.receiver),
            encode_json(sorted(map(str, record.firing))),
            encode_json(sorted(map(str, record.resolved))),
            float(record.sent_at),
            float(record.expires_at),
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(
            f"cannot store notification record {record.group_key!r} → {record.receiver!r}: {exc}"
        ) from None


def notification_from_row(row: Sequence[Any]) -> NotificationRecord:
    group_key, receiver, firing, resolved, sent_at, expires_at = row
    try:
        return NotificationRecord(
            group_key=group_key,
            receiver=receiver,
            firing=frozenset(decode_json(firing)),
            resolved=frozenset(decode_json(resolved)),
            sent_at=sent_at,
            expires_at=expires_at,
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(
            f"stored notification record {group_key!r} → {receiver!r} unreadable: {exc}"
        ) from None


DELIVERY_COLUMNS = ("id", "group_key", "receiver", "firing", "resolved", "decided_at", "sent_at")


def delivery_to_row(d: Delivery) -> tuple[Any, ...]:
    try:
        return (str(d.id), str(d.group_key), str(d.receiver),
                encode_json(sorted(map(str, d.firing))), encode_json(sorted(map(str, d.resolved))),
                float(d.decided_at), float(d.sent_at))
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot store delivery {d.id!r}: {exc}") from None


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    entry_id, group_key, receiver, firing, resolved, decided_at, sent_at = row
    try:
        return Delivery(id=entry_id, group_key=group_key, receiver=receiver,
                        firing=frozenset(decode_json(firing)),
                        resolved=frozenset(decode_json(resolved)),
                        decided_at=decided_at, sent_at=sent_at)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored delivery {entry_id!r} unreadable: {exc}") from None


# --- silences -----------------------------------------------------------------------------

SILENCE_COLUMNS = ("id", "matchers", "starts_at", "ends_at", "created_at", "created_by", "comment")


def silence_to_row(silence: Silence) -> tuple[Any, ...]:
    try:
        return (
            silence.id,
            encode_json([[m.name, m.op.value, m.value] for m in silence.matchers]),
            float(silence.starts_at),
            float(silence.ends_at),
            float(silence.created_at),
            str(silence.created_by),
            str(silence.comment),
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot store silence {silence.id}: {exc}") from None


def silence_from_row(row: Sequence[Any]) -> Silence:
    silence_id, matchers, starts_at, ends_at, created_at, created_by, comment = row
    try:
        return Silence(
            id=silence_id,
            matchers=tuple(
                Matcher(name=name, op=MatchOp(op), value=value)
                for name, op, value in decode_json(matchers)
            ),
            starts_at=starts_at,
            ends_at=ends_at,
            created_at=created_at,
            created_by=created_by,
            comment=comment,
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored silence {silence_id} unreadable: {exc}") from None


# --- outbox -------------------------------------------------------------------------------


def one_line(error: str) -> str:
    """An error as the outbox keeps it: one line, whatever the cause said."""
    return " ".join(error.split())


OUTBOX_COLUMNS = (
    "id",
    "group_key",
    "receiver",
    "firing",
    "resolved",
    "payload",
    "created_at",
    "expires_at",
    "attempts",
    "next_attempt_at",
    "last_error",
    "failed_at",
    "claimed_by",
    "claimed_until",
    "uncertain",
    "followup",
)


def _optional_time(value: float | None) -> float | None:
    return None if value is None else float(value)


def outbox_to_row(entry: OutboxEntry) -> tuple[Any, ...]:
    try:
        return (
            str(entry.id),
            str(entry.group_key),
            str(entry.receiver),
            encode_json(sorted(map(str, entry.firing))),
            encode_json(sorted(map(str, entry.resolved))),
            str(entry.payload),
            float(entry.created_at),
            float(entry.expires_at),
            int(entry.attempts),
            float(entry.next_attempt_at),
            one_line(str(entry.last_error)),
            _optional_time(entry.failed_at),
            str(entry.claimed_by),
            _optional_time(entry.claimed_until),
            int(bool(entry.uncertain)),
            int(bool(entry.followup)),
        )
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot store outbox entry {entry.id!r}: {exc}") from None


def outbox_from_row(row: Sequence[Any]) -> OutboxEntry:
    values = dict(zip(OUTBOX_COLUMNS, row, strict=True))
    try:
        values["firing"] = frozenset(decode_json(values["firing"]))
        values["resolved"] = frozenset(decode_json(values["resolved"]))
        values["uncertain"] = bool(values["uncertain"])
        values["followup"] = bool(values["followup"])
        return OutboxEntry(**values)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored outbox entry {values['id']!r} unreadable: {exc}") from None


REF_COLUMNS = ("receiver", "key", "value", "expires_at")


# --- source status ------------------------------------------------------------------------


def status_to_text(source: str, status: Mapping[str, Any]) -> str:
    """A source's status as strict JSON: ``runwatch status --json`` prints it as it is, so
    NaN is refused rather than tagged."""
    try:
        return json.dumps(dict(status), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot store status of source {source!r}: {exc}") from None


def status_from_text(source: str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"stored status of source {source!r} unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise CodecError(f"stored status of source {source!r} unreadable: not a mapping")
    return data
