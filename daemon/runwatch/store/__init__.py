"""Persistence: alert states, source cursors, the notification log and silences."""

from runwatch.store.base import (
    Collected,
    Matcher,
    MatchOp,
    NotificationRecord,
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
    "Silence",
    "Store",
    "StoreError",
    "open_store",
]
