"""The contract between a source of runs and the engine that evaluates them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runwatch.model import RunSnapshot
from runwatch.window import NONE, Window


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
    # Whether the source got an answer from where its runs live this tick (a W&B source
    # whose every request failed did not), and, once it has not for longer than the source
    # tolerates, one line saying so: the tick keeps one `source-unreachable` alert firing
    # while it is set and resolves it when the source is reachable again.
    reachable: bool = True
    unreachable: str | None = None


class Source(Protocol):
    """Something that can be asked, once per tick, what changed in its runs."""

    name: str

    def poll(self, cursors: Mapping[str, str], wanted_keys: frozenset[str], now: float, *,
             keys_for: Callable[[RunSnapshot], frozenset[str]] | None = None,
             needs_config: bool = True, window: Window = NONE) -> Poll:
        """Snapshots of the runs to evaluate, resuming each run from its cursor.

        ``wanted_keys`` are the history keys whose new points the caller evaluates;
        ``keys_for(snapshot)`` narrows them to what the rules matching one run read (after
        alias resolution against the run's keys), for sources that pay per key fetched;
        ``needs_config`` says whether any rule matches on run config; ``window`` is the
        history the rules need of a run seen for the first time (a source reads that, or
        its own ``first_read`` when larger, not the whole history); ``now`` is the tick's
        time in Unix seconds.
        """
        ...
