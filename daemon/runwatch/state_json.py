"""What the store holds, as JSON: the ``--json`` shapes of ``runwatch alerts``, ``silence
list`` and ``status``, which the status pages' ``/api/v1/…`` answer too. NaN and ±inf are
the strings W&B itself uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runwatch.model import AlertState, status_word
from runwatch.notify.report_json import number
from runwatch.store.base import Lease, OutboxEntry, Silence


def alert_json(a: AlertState) -> dict[str, Any]:
    return {"fingerprint": a.fingerprint, "rule": a.rule, "status": status_word(a),
            "severity": str(a.severity),
            "run": {"path": a.run.path, "id": a.run.id, "name": a.run.name,
                    "location": a.run.location},
            "active_since": a.active_since, "fired_at": a.fired_at,
            "resolved_at": a.resolved_at, "resolution": a.resolution or None,
            "last_seen": a.last_seen, "metric": a.metric,
            "value": number(a.value), "step": a.step, "summary": a.summary,
            "labels": dict(a.labels)}


def outbox_json(e: OutboxEntry) -> dict[str, Any]:
    return {"id": e.id, "receiver": e.receiver, "group": e.group_key, "attempts": e.attempts,
            "created_at": e.created_at, "next_attempt_at": e.next_attempt_at,
            "failed_at": e.failed_at, "last_error": e.last_error}


def silence_state(silence: Silence, now: float) -> str:
    return ("pending" if silence.pending(now) else "active" if silence.active(now)
            else "expired")


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    return {"id": silence.id, "matchers": [str(m) for m in silence.matchers],
            "state": silence_state(silence, now), "starts_at": silence.starts_at,
            "ends_at": silence.ends_at, "created_at": silence.created_at,
            "created_by": silence.created_by, "comment": silence.comment}


def lease_json(lease: Lease) -> dict[str, Any]:
    return {"name": lease.name, "holder": lease.holder, "epoch": lease.epoch,
            "expires_at": lease.expires_at}


def source_names(configured: Sequence[str], saved: Mapping[str, Any]) -> list[str]:
    """The sources ``runwatch status`` lists: the configured ones, then any other saved."""
    return list(configured) + sorted(set(saved) - set(configured))


def status_json(*, sources: Sequence[str], saved: Mapping[str, Any], outbox: int, firing: int,
                leases: Iterable[Lease]) -> dict[str, Any]:
    """``runwatch status --json``: per source (configured first, then any other saved) its
    last tick, the outbox's depth, the firing alerts' count, and the writer leases."""
    names = source_names(sources, saved)
    return {"sources": {n: saved.get(n) for n in names}, "outbox": outbox, "firing": firing,
            "leases": [lease_json(le) for le in leases]}
