"""The contract between a source of runs and the engine that evaluates them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runwatch.model import RunSnapshot


@dataclass(frozen=True, kw_only=True, slots=True)
class Poll:
    """What one tick of a source produced."""

    snapshots: tuple[RunSnapshot, ...] = ()  # runs to evaluate this tick
    # New or changed cursors (opaque JSON strings) keyed by run key. The caller stores
    # them only after evaluation succeeded, and hands them back on the next poll.
    cursors: Mapping[str, str] = field(default_factory=dict)
    # One-line messages, e.g. "path/run-x.wandb: bad CRC at offset 12345; records
    # before it are used".
    errors: tuple[str, ...] = ()


class Source(Protocol):
    """Something that can be asked, once per tick, what changed in its runs."""

    name: str

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float) -> Poll:
        """Snapshots of the runs to evaluate, resuming each run from its cursor.

        ``wanted_keys`` are the history keys whose new points the caller evaluates;
        ``now`` is the tick's time in Unix seconds.
        """
        ...
