"""Persistence: alert states, source cursors, the notification log, silences, the outbox."""

from runwatch.store.base import (
    Collected,
    Matcher,
    MatchOp,
    NotificationRecord,
    OutboxEntry,
    Silence,
    Store,
    StoreError,
    open_store,
)

__all__ = [
    "Collected",
    "MatchOp",
    "Matcher",
    "NotificationRecord",
    "OutboxEntry",
    "Silence",
    "Store",
    "StoreError",
    "open_store",
]
