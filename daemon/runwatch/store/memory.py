"""The in-memory store: a real backend for one process (``memory://``) and the test double.

Alert states are kept as the very rows the database backends write (``codec``) and
decoded afresh on every read, so what comes back is what SQLite gives back: tuples
become lists, NaN survives, unstorable values are refused the same way, and a caller
mutating a loaded ``memory`` changes nothing stored. One lock makes every call one
atomic step.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from runwatch.model import AlertState, AlertStatus
from runwatch.store import codec
from runwatch.store.base import (
    COLLECTIBLE_STATUSES,
    LEADER,
    LEASE_TTL,
    BoardEntry,
    Collected,
    Delivery,
    Lease,
    Matcher,
    NotificationRecord,
    OutboxEntry,
    Silence,
    StoreError,
    alert_touched,
    new_silence,
)

NAME = "memory://"

_COLUMN = {name: i for i, name in enumerate(codec.ALERT_COLUMNS)}
_FINGERPRINT, _STATUS, _UPDATED = _COLUMN["fingerprint"], _COLUMN["status"], _COLUMN["updated_at"]
_RESOLUTION = _COLUMN["resolution"]
_FILTERS = (
    ("run_path", _COLUMN["run_path"]),
    ("project", _COLUMN["run_project"]),
    ("rule", _COLUMN["rule"]),
)


def _statuses(status: AlertStatus | Collection[AlertStatus] | None) -> frozenset[str] | None:
    if status is None:
        return None
    if isinstance(status, str):
        return frozenset({AlertStatus(status).value})
    return frozenset(AlertStatus(s).value for s in status)


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._deliveries: dict[str, Delivery] = {}
        self._closed = False
        self._alerts: dict[str, tuple[Any, ...]] = {}  # fingerprint → codec.alert_to_row
        self._status: dict[str, str] = {}  # source → codec.status_to_text
        self._board: dict[str, BoardEntry] = {}  # run path → its saved board row
        self._cursors: dict[str, dict[str, tuple[str, float]]] = {}  # source → key → (v, updated)
        self._notifications: dict[tuple[str, str], NotificationRecord] = {}
        self._silences: dict[str, Silence] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._refs: dict[tuple[str, str], tuple[str, float]] = {}  # (receiver, key) → (v, exp)

    def __repr__(self) -> str:
        return f"MemoryStore({NAME})"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed", store=NAME, temporary=False)

    @staticmethod
    def _refuse(exc: codec.CodecError) -> StoreError:
        return StoreError(str(exc), store=NAME, temporary=False)

    def _decode(self, rows: Iterable[tuple[Any, ...]]) -> list[AlertState]:
        try:
            return [codec.alert_from_row(row) for row in rows]
        except codec.CodecError as exc:
            raise self._refuse(exc) from None

    # --- alerts and cursors ---------------------------------------------------------------

    def load_alerts(self, fingerprints: Iterable[str] | None = None) -> dict[str, AlertState]:
        wanted = None if fingerprints is None else set(fingerprints)
        with self._lock:
            self._check_open()
            if wanted is None:
                rows = list(self._alerts.values())
            else:
                rows = [self._alerts[fp] for fp in wanted if fp in self._alerts]
        return {state.fingerprint: state for state in self._decode(rows)}

    def alerts(
        self,
        *,
        status: AlertStatus | Collection[AlertStatus] | None = None,
        run_path: str | None = None,
        project: str | None = None,
        rule: str | None = None,
        resolution: str | None = None,
    ) -> list[AlertState]:
        statuses = _statuses(status)
        wanted = {"run_path": run_path, "project": project, "rule": rule}
        with self._lock:
            self._check_open()
            rows = [
                row
                for row in self._alerts.values()
                if (statuses is None or row[_STATUS] in statuses)
                and all(wanted[f] is None or row[i] == wanted[f] for f, i in _FILTERS)
                and (resolution is None or row[_RESOLUTION].startswith(resolution))
            ]
        found = self._decode(rows)
        return sorted(found, key=lambda a: (a.run.path, a.rule, a.fingerprint))

    def load_cursors(self, source: str) -> dict[str, str]:
        with self._lock:
            self._check_open()
            return {key: value for key, (value, _) in self._cursors.get(source, {}).items()}

    def commit_tick(
        self,
        *,
        source: str,
        alerts: Iterable[AlertState],
        cursors: Mapping[str, str],
        now: float,
    ) -> None:
        # Everything is encoded before anything changes: all or nothing.
        try:
            rows = [codec.alert_to_row(alert, now) for alert in alerts]
        except codec.CodecError as exc:
            raise self._refuse(exc) from None
        written = {}
        for key, value in cursors.items():
            if not isinstance(value, str):
                raise StoreError(
                    f"cursor {source}/{key}: expected text, got {type(value).__name__}",
                    store=NAME,
                    temporary=False,
                )
            written[str(key)] = (value, float(now))
        with self._lock:
            self._check_open()
            for row in rows:
                self._alerts[row[_FINGERPRINT]] = row
            if written:
                self._cursors.setdefault(source, {}).update(written)

    # --- notification log -----------------------------------------------------------------

    def last_notification(self, group_key: str, receiver: str) -> NotificationRecord | None:
        with self._lock:
            self._check_open()
            return self._notifications.get((group_key, receiver))

    def record_notification(self, record: NotificationRecord) -> None:
        try:
            record = codec.notification_from_row(codec.notification_to_row(record))
        except codec.CodecError as exc:
            raise self._refuse(exc) from None
        with self._lock:
            self._check_open()
            self._record(record)

    def _record(self, record: NotificationRecord) -> None:
        # As the SQL upsert: an older record never replaces a newer one.
        stored = self._notifications.get(record.key)
        if stored is None or record.sent_at >= stored.sent_at:
            self._notifications[record.key] = record

    # --- silences -------------------------------------------------------------------------

    def add_silence(
        self,
        *,
        matchers: Iterable[Matcher],
        ends_at: float,
        now: float,
        starts_at: float | None = None,
        created_by: str = "",
        comment: str = "",
    ) -> Silence:
        silence = new_silence(
            matchers=matchers,
            ends_at=ends_at,
            now=now,
            starts_at=starts_at,
            created_by=created_by,
            comment=comment,
        )
        try:
            silence = codec.silence_from_row(codec.silence_to_row(silence))
        except codec.CodecError as exc:
            raise self._refuse(exc) from None
        with self._lock:
            self._check_open()
            self._silences[silence.id] = silence
        return silence

    def silences(self, now: float, *, include_expired: bool = False) -> list[Silence]:
        with self._lock:
            self._check_open()
            found = [s for s in self._silences.values() if include_expired or not s.expired(now)]
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    def expire_silence(self, silence_id: str, now: float) -> bool:
        with self._lock:
            self._check_open()
            silence = self._silences.get(silence_id)
            if silence is None:
                return False
            if not silence.expired(now):  # as in SQL: both times become min(time, now)
                self._silences[silence_id] = dataclasses.replace(
                    silence, starts_at=min(silence.starts_at, now), ends_at=now
                )
            return True

    # --- outbox and delivery refs ---------------------------------------------------------

    def _copy(self, entry: OutboxEntry) -> OutboxEntry:
        try:
            return codec.outbox_from_row(codec.outbox_to_row(entry))
        except codec.CodecError as exc:
            raise self._refuse(exc) from None

    def enqueue(self, entries: Iterable[OutboxEntry]) -> int:
        added = [self._copy(entry) for entry in entries]
        with self._lock:
            self._check_open()
            ids = [e.id for e in added]
            taken = [i for i in ids if i in self._outbox] or [i for i in ids if ids.count(i) > 1]
            if taken:
                raise ValueError(f"outbox entry {taken[0]!r} already exists")
            superseded = 0
            for entry in added:
                stale = [
                    old.id
                    for old in self._outbox.values()
                    if old.key == entry.key
                    and not old.failed
                    and not old.followup
                    and not old.claimed(entry.created_at)
                    and old.created_at <= entry.created_at
                ]
                for old_id in stale:
                    del self._outbox[old_id]
                superseded += len(stale)
                self._outbox[entry.id] = entry
        return superseded

    def outbox(
        self,
        *,
        group_key: str | None = None,
        receiver: str | None = None,
        include_failed: bool = True,
    ) -> list[OutboxEntry]:
        with self._lock:
            self._check_open()
            found = [
                e
                for e in self._outbox.values()
                if (group_key is None or e.group_key == group_key)
                and (receiver is None or e.receiver == receiver)
                and (include_failed or not e.failed)
            ]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def outbox_depth(self) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for e in self._outbox.values() if not e.failed)

    def claim_outbox(
        self,
        now: float,
        *,
        claimant: str,
        lease: float,
        receivers: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        wanted = None if receivers is None else set(receivers)
        with self._lock:
            self._check_open()
            due = sorted(
                (
                    e
                    for e in self._outbox.values()
                    if e.due(now) and (wanted is None or e.receiver in wanted)
                ),
                key=lambda e: (e.created_at, e.id),
            )[: max(limit, 0)]
            taken = []
            for entry in due:
                entry = dataclasses.replace(
                    entry,
                    claimed_by=claimant,
                    claimed_until=float(now + lease),
                    attempts=entry.attempts + 1,
                    uncertain=entry.uncertain or bool(entry.claimed_by),
                )
                self._outbox[entry.id] = entry
                taken.append(entry)
        return taken

    def _held(self, entry_id: str, claimant: str | None) -> OutboxEntry | None:
        entry = self._outbox.get(entry_id)
        if entry is None or entry.failed or (claimant is not None and entry.claimed_by != claimant):
            return None
        return entry

    def complete_outbox(
        self,
        entry_id: str,
        *,
        claimant: str,
        refs: Mapping[str, str],
        refs_expire_at: float,
        followups: Iterable[OutboxEntry] = (),
        sent_at: float | None = None,
    ) -> bool:
        new_refs = {str(k): (str(v), float(refs_expire_at)) for k, v in refs.items()}
        added = [self._copy(e) for e in followups]
        with self._lock:
            self._check_open()
            entry = self._held(entry_id, claimant)
            if entry is None:
                return False
            if any(e.id in self._outbox for e in added):
                raise ValueError("a follow-up's outbox id already exists")
            if not entry.followup:
                self._record(entry.record())
            if not entry.followup and sent_at is not None:
                self._deliveries.setdefault(entry.id, entry.delivered(sent_at))
            for key, value in new_refs.items():
                self._refs[(entry.receiver, key)] = value
            del self._outbox[entry_id]
            self._outbox.update((e.id, e) for e in added)
            return True

    def retry_outbox(
        self, entry_id: str, *, claimant: str, next_attempt_at: float, error: str,
        uncertain: bool = False,
    ) -> bool:
        return self._release(entry_id, claimant, error, next_attempt_at=float(next_attempt_at),
                             uncertain=uncertain)

    def fail_outbox(self, entry_id: str, *, claimant: str | None, error: str, now: float) -> bool:
        return self._release(entry_id, claimant, error, failed_at=float(now))

    def _release(self, entry_id: str, claimant: str | None, error: str, **changes: Any) -> bool:
        """Let go of a held entry, noting ``error`` and ``changes``; False if not held."""
        with self._lock:
            self._check_open()
            entry = self._held(entry_id, claimant)
            if entry is None:
                return False
            uncertain = bool(changes.pop("uncertain", False)) or entry.uncertain
            self._outbox[entry_id] = self._copy(dataclasses.replace(
                entry, last_error=error, claimed_by="", claimed_until=None,
                uncertain=uncertain, **changes,
            ))
            return True

    def load_refs(self, receiver: str, keys: Iterable[str], now: float) -> dict[str, str]:
        wanted = set(keys)
        with self._lock:
            self._check_open()
            return {
                key: value
                for (r, key), (value, expires_at) in self._refs.items()
                if r == receiver and key in wanted and expires_at > now
            }

    # --- upkeep ---------------------------------------------------------------------------

    def collect_garbage(
        self,
        now: float,
        *,
        resolved_retention: float,
        cursor_retention: float,
        silence_retention: float | None = None,
        outbox_retention: float | None = None,
    ) -> Collected:
        if silence_retention is None:
            silence_retention = resolved_retention
        if outbox_retention is None:
            outbox_retention = resolved_retention
        with self._lock:
            self._check_open()
            notifications = [k for k, r in self._notifications.items() if r.expires_at <= now]
            for key in notifications:
                del self._notifications[key]

            alert_cutoff = now - resolved_retention
            alerts = [
                state.fingerprint
                for state, row in zip(
                    self._decode(self._alerts.values()), self._alerts.values(), strict=True
                )
                if state.status in COLLECTIBLE_STATUSES
                and alert_touched(state, row[_UPDATED]) < alert_cutoff
            ]
            for fp in alerts:
                del self._alerts[fp]

            cursor_cutoff = now - cursor_retention
            cursors = 0
            for source, entries in list(self._cursors.items()):
                stale = [key for key, (_, updated) in entries.items() if updated < cursor_cutoff]
                for key in stale:
                    del entries[key]
                cursors += len(stale)
                if not entries:
                    del self._cursors[source]

            silence_cutoff = now - silence_retention
            silences = [sid for sid, s in self._silences.items() if s.ends_at < silence_cutoff]
            for sid in silences:
                del self._silences[sid]

            outbox_cutoff = now - outbox_retention
            failed = [
                e.id
                for e in self._outbox.values()
                if e.failed_at is not None and e.failed_at < outbox_cutoff
            ]
            for entry_id in failed:
                del self._outbox[entry_id]

            refs = [key for key, (_, expires_at) in self._refs.items() if expires_at <= now]
            for key in refs:
                del self._refs[key]

            logged = [i for i, d in self._deliveries.items() if d.sent_at < alert_cutoff]
            for entry_id in logged:
                del self._deliveries[entry_id]

        return Collected(
            notifications=len(notifications),
            alerts=len(alerts),
            cursors=cursors,
            silences=len(silences),
            outbox=len(failed),
            refs=len(refs),
            deliveries=len(logged),
        )

    def save_status(self, source: str, status: Mapping[str, Any], now: float) -> None:
        try:
            text = codec.status_to_text(source, status)
        except codec.CodecError as exc:
            raise self._refuse(exc) from None
        with self._lock:
            self._check_open()
            self._status[source] = text

    def load_status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._check_open()
            saved = sorted(self._status.items())
        try:
            return {source: codec.status_from_text(source, text) for source, text in saved}
        except codec.CodecError as exc:
            raise self._refuse(exc) from None

    def save_board(self, entries: Iterable[BoardEntry], *, forget_before: float) -> None:
        with self._lock:
            self._check_open()
            board = {p: e for p, e in self._board.items() if e.seen >= forget_before}
            board.update((e.path, e) for e in entries)
            self._board = board

    def load_board(self) -> list[BoardEntry]:
        with self._lock:
            self._check_open()
            return [self._board[p] for p in sorted(self._board)]

    def ping(self) -> None:
        with self._lock:
            self._check_open()

    def claim_writer(self, holder: str, *, now: float | None = None, ttl: float = LEASE_TTL,
                     standby: bool = False, take: bool = True) -> Lease:
        now = time.time() if now is None else float(now)
        with self._lock:  # a memory store lives in one process: it has one writer
            self._check_open()
            held = self._lease
            epoch = held.epoch if held is not None and held.holder == holder else (
                (held.epoch if held is not None else 0) + 1)
            self._lease = Lease(name=LEADER, holder=holder, epoch=epoch,
                                expires_at=now + float(ttl), mine=True)
            return self._lease

    def deliveries(self, fingerprints: Iterable[str]) -> list[Delivery]:
        wanted = set(fingerprints)
        with self._lock:
            self._check_open()
            found = [d for d in self._deliveries.values() if wanted & (d.firing | d.resolved)]
        return sorted(found, key=lambda d: (d.sent_at, d.id))

    def check_writer(self) -> None:
        with self._lock:
            self._check_open()

    def leases(self) -> list[Lease]:
        with self._lock:
            self._check_open()
            return [self._lease] if self._lease is not None else []

    def close(self) -> None:
        with self._lock:
            self._closed = True
