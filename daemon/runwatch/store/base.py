"""The store seam: what the daemon keeps between ticks, restarts and replicas.

Every method is one transaction against the backend and reads no clock: times are
Unix seconds passed in by the caller. Nothing is cached in the process, so several
processes may share one backend (SQLite file, later PostgreSQL) and stay correct — but
the one writer (``claim_writer``) may keep what only it writes (alert states, cursors),
as long as every commit leaves the backend exactly as if nothing were kept — or, for quiet
runs, as of an earlier tick, a run whole (its alerts and cursor), until ``close`` writes
it (``held``).
"""

from __future__ import annotations

import enum
import functools
import os
import re
import secrets
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from runwatch.model import AlertState, AlertStatus


class StoreError(Exception):
    """The store could not do what was asked. One line, naming the store; no traceback.

    ``temporary`` says whether retrying the same call later may succeed (a locked
    database, a full disk) or not (a corrupt file, a schema newer than this code,
    a value the store cannot represent).
    """

    def __init__(self, detail: str, *, store: str, temporary: bool) -> None:
        self.detail = " ".join(str(detail).split())  # one line, whatever the cause said
        self.store = store
        self.temporary = temporary
        super().__init__(f"store {store}: {self.detail}")


class WriterBusy(StoreError):
    """Another process ticks into the store: ``holder`` says which (``runwatch run, pid 4242
    on host-a``). Not temporary: running two writers is a setup to fix, not to wait out."""

    def __init__(self, holder: str, *, store: str) -> None:
        self.holder = holder
        super().__init__(f"held by {holder}", store=store, temporary=False)


class LeaseLost(StoreError):
    """This process held the writer lease and holds it no more: another replica took it
    (a newer epoch), or it could not renew it before it ran out by its own clock. What it
    tried to write was refused, whole; it stands by until it holds the lease again."""

    def __init__(self, detail: str, *, store: str) -> None:
        super().__init__(f"writer lease lost: {detail}", store=store, temporary=False)


LEADER = "leader"  # the one lease today; per-source leases can come later under other names
LEASE_TTL = 30.0  # seconds a writer lease lasts unless renewed (config: ha.lease_ttl)


@dataclass(frozen=True, kw_only=True, slots=True)
class Lease:
    """Who may write into a store, until when (Unix seconds), and under which ``epoch``.

    The epoch grows by one each time the lease changes hands (or is taken again after a
    restart): every write of its holder is checked against it in the same transaction, so
    one that lost the lease — paused, partitioned, slow — writes nothing more. ``mine``:
    the process that read it holds it.
    """

    name: str
    holder: str
    epoch: int
    expires_at: float
    mine: bool = False

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


def lease_clock() -> float:
    """Seconds on the clock a lease's holder counts its validity by: CLOCK_BOOTTIME where
    there is one (it goes on while the host is suspended, where the monotonic clock stops),
    else the monotonic clock. Never the wall clock, which may jump."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def replica_name() -> str:
    """Who this process is among replicas: ``RUNWATCH_REPLICA`` when set (a pod's name),
    else ``host:pid``."""
    import socket

    return os.environ.get("RUNWATCH_REPLICA", "").strip() or f"{socket.gethostname()}:{os.getpid()}"


def writer_name(command: str) -> str:
    """Who this process is, as a store's writer: ``runwatch run, pid 4242 on host-a``."""
    import os
    import socket

    return f"runwatch {command}, pid {os.getpid()} on {socket.gethostname()}"


# --- silences -----------------------------------------------------------------------------


class MatchOp(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


_MATCHER_SYNTAX = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.:/-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*\Z", re.S)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, kw_only=True, slots=True)
class Matcher:
    """One label condition of a silence, with Alertmanager's meaning.

    Regular expressions are anchored (the whole value must match); a label the alert
    does not carry counts as the empty string.
    """

    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a matcher needs a label name")
        try:
            object.__setattr__(self, "op", MatchOp(self.op))
        except ValueError:
            ops = ", ".join(op.value for op in MatchOp)
            raise ValueError(f"matcher {self.name}: unknown operator {self.op!r} ({ops})") from None
        if self.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            try:
                _regex(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self}: invalid regular expression: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``."""
        found = _MATCHER_SYNTAX.match(text)
        if not found:
            raise ValueError(f"not a matcher: {text!r} (expected name=value, !=, =~ or !~)")
        name, op, value = found.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name=name, op=MatchOp(op), value=value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op is MatchOp.EQUAL:
            return actual == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return actual != self.value
        hit = _regex(self.value).fullmatch(actual) is not None
        return hit if self.op is MatchOp.REGEX else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Silence:
    """Mutes every alert whose labels match all ``matchers`` while ``starts_at <= now < ends_at``.

    Expiring a silence moves ``ends_at`` (and a future ``starts_at``) to the moment it
    was expired; whether it is pending, active or expired is always derived from the
    times.
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_at: float
    created_by: str = ""
    comment: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "matchers", tuple(self.matchers))
        if not self.matchers:
            raise ValueError("a silence needs at least one matcher")
        if all(m.matches({}) for m in self.matchers):
            raise ValueError(
                "a silence needs at least one matcher that does not match an empty label "
                f"(it would mute everything): {', '.join(map(str, self.matchers))}"
            )
        if self.ends_at < self.starts_at:
            raise ValueError("a silence cannot end before it starts")

    def pending(self, now: float) -> bool:
        return now < self.starts_at

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def expired(self, now: float) -> bool:
        return self.ends_at <= now

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def new_silence(
    *,
    matchers: Iterable[Matcher],
    ends_at: float,
    now: float,
    starts_at: float | None = None,
    created_by: str = "",
    comment: str = "",
) -> Silence:
    """A silence about to be added, with a fresh id; ValueError if it would never be active."""
    starts_at = now if starts_at is None else starts_at
    if not ends_at > starts_at:
        raise ValueError("a silence must end after it starts")
    if not ends_at > now:
        raise ValueError("a silence must end in the future")
    return Silence(
        id=secrets.token_hex(8),
        matchers=tuple(matchers),
        starts_at=float(starts_at),
        ends_at=float(ends_at),
        created_at=float(now),
        created_by=created_by,
        comment=comment,
    )


# --- notification log ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Told:
    """What one message told one receiver about one alert group: the alert fingerprints
    firing and resolved in it, as they were then."""

    group_key: str
    receiver: str
    firing: frozenset[str] = frozenset()
    resolved: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "firing", frozenset(self.firing))
        object.__setattr__(self, "resolved", frozenset(self.resolved))

    @property
    def key(self) -> tuple[str, str]:
        return (self.group_key, self.receiver)


@dataclass(frozen=True, kw_only=True, slots=True)
class NotificationRecord(Told):
    """What was last sent to one receiver about one alert group (Alertmanager's nflog entry).

    The record is kept until ``expires_at``; garbage collection then deletes it, and a
    missing record means "never told".
    """

    sent_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery(Told):
    """One message that reached a receiver: the delivery log, kept for the status pages
    ("what was sent about this alert, and to whom") until collected with resolved alerts.
    ``id`` is its outbox entry's; ``decided_at`` when its content was decided."""

    id: str
    decided_at: float
    sent_at: float


# --- outbox -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxEntry:
    """One decided message for one receiver, kept until it is delivered or has failed.

    ``payload`` is the message as text (``notify/outbox.py`` encodes it; the store never
    looks inside). ``firing``/``resolved`` are its alert fingerprints and, with
    ``created_at`` and ``expires_at``, become the notification record written in the
    same transaction that ends a successful delivery.

    A pending entry is due when ``next_attempt_at <= now`` and no live claim holds it
    (``claimed_until`` unset or past). ``failed_at`` set means it failed for good.

    ``uncertain``: an earlier attempt may have reached the receiver — its claim ran out
    unsettled (the process died), or the receiver never answered — so the next attempt
    looks for it before sending again. ``followup``: a later step of a message already
    delivered (Slack: its charts, into the post's thread): not news of its own, so it
    writes no notification record and is never superseded.
    """

    id: str
    group_key: str
    receiver: str
    firing: frozenset[str] = frozenset()
    resolved: frozenset[str] = frozenset()
    payload: str
    created_at: float
    expires_at: float  # of the notification record a delivery writes
    attempts: int = 0
    next_attempt_at: float
    last_error: str = ""
    failed_at: float | None = None
    claimed_by: str = ""
    claimed_until: float | None = None
    uncertain: bool = False
    followup: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "firing", frozenset(self.firing))
        object.__setattr__(self, "resolved", frozenset(self.resolved))

    @property
    def key(self) -> tuple[str, str]:
        return (self.group_key, self.receiver)

    @property
    def failed(self) -> bool:
        return self.failed_at is not None

    def claimed(self, now: float) -> bool:
        return self.claimed_until is not None and now < self.claimed_until

    def due(self, now: float) -> bool:
        return not self.failed and self.next_attempt_at <= now and not self.claimed(now)

    def record(self) -> NotificationRecord:
        """What the notification log says once this entry has been delivered.

        ``sent_at`` is when its content was decided: that is the state the receiver
        now knows, and an alert that fired after it is news.
        """
        return NotificationRecord(
            group_key=self.group_key,
            receiver=self.receiver,
            firing=self.firing,
            resolved=self.resolved,
            sent_at=self.created_at,
            expires_at=self.expires_at,
        )

    def delivered(self, sent_at: float) -> Delivery:
        """What the delivery log keeps of this entry, sent at ``sent_at``."""
        return Delivery(id=self.id, group_key=self.group_key, receiver=self.receiver,
                        firing=self.firing, resolved=self.resolved,
                        decided_at=self.created_at, sent_at=float(sent_at))


# --- garbage collection -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class BoardEntry:
    """One run's row of the status pages' board, as the writer last saved it: which run
    (``path``) of which source, when a tick last read it, and the board's own encoding of
    the row (``web.board``; opaque to the store)."""

    path: str
    source: str
    seen: float
    body: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Collected:
    """How many entries one ``collect_garbage`` deleted, by kind."""

    notifications: int = 0
    alerts: int = 0
    cursors: int = 0
    silences: int = 0
    outbox: int = 0
    refs: int = 0
    deliveries: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


# Statuses whose alerts may be collected once nothing has touched them for a retention.
COLLECTIBLE_STATUSES = frozenset({AlertStatus.RESOLVED, AlertStatus.INACTIVE})


def alert_touched(alert: AlertState, updated_at: float) -> float:
    """When an alert last mattered, for garbage collection.

    The later of ``resolved_at`` and ``last_seen`` (the last evaluation); the time it
    was last written when it has neither. Every backend uses this same rule.
    """
    times = [t for t in (alert.resolved_at, alert.last_seen) if t is not None]
    return max(times) if times else updated_at


# --- the seam -----------------------------------------------------------------------------


class Store(Protocol):
    """Persistence for alert states, source cursors, the notification log, silences, and
    the notification outbox with the delivery refs it leaves.

    Each call is one transaction; a ``StoreError`` says whether retrying helps. No
    call reads the clock. Closing twice is harmless; any other call after ``close``
    raises a non-temporary ``StoreError``.
    """

    def load_alerts(self, fingerprints: Iterable[str] | None = None) -> dict[str, AlertState]:
        """The stored states of ``fingerprints`` (unknown ones are absent); None means all."""
        ...

    def alerts(
        self,
        *,
        status: AlertStatus | Collection[AlertStatus] | None = None,
        run_path: str | None = None,
        project: str | None = None,
        rule: str | None = None,
        resolution: str | None = None,
    ) -> list[AlertState]:
        """Alerts matching every given filter, ordered by run path, rule, fingerprint;
        ``resolution`` is a prefix of why they resolved (``"run ended"``: those that held
        until their run ended)."""
        ...

    def load_cursors(self, source: str) -> dict[str, str]:
        """Run key → the opaque cursor text ``source`` stored for it."""
        ...

    def commit_tick(
        self,
        *,
        source: str,
        alerts: Iterable[AlertState],
        cursors: Mapping[str, str],
        now: float,
    ) -> None:
        """Upsert alert states and ``source``'s cursors together, all or nothing.

        A crash never leaves a cursor past alerts that were not stored (nor past check
        memory: a restart resumes from the cursor with the memory of the same tick, and
        evaluates exactly as an uninterrupted daemon would). Cursors and alerts written
        here count as touched at ``now`` for garbage collection. A backend may write only
        the columns that differ from the stored state, as long as the result is the same.
        """
        ...

    def last_notification(self, group_key: str, receiver: str) -> NotificationRecord | None:
        """The newest record for (group, receiver), expired or not, until collected."""
        ...

    def record_notification(self, record: NotificationRecord) -> None:
        """Store ``record`` unless one with a later ``sent_at`` is already there."""
        ...

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
        """Create a silence (``starts_at`` defaults to ``now``); ValueError if it is invalid."""
        ...

    def silences(self, now: float, *, include_expired: bool = False) -> list[Silence]:
        """Active and pending silences (and expired ones too if asked), oldest start first."""
        ...

    def expire_silence(self, silence_id: str, now: float) -> bool:
        """End a silence at ``now`` (no-op if already over); False if there is no such id."""
        ...

    # --- outbox and delivery refs: see notify/outbox.py for how they are used ---------------

    def enqueue(self, entries: Iterable[OutboxEntry]) -> int:
        """Add ``entries`` in one transaction, before anything is sent.

        Each supersedes the pending entries of its (group, receiver) that were decided no
        later than it, that nobody holds a live claim on at its ``created_at`` and that are
        not follow-ups: those
        are deleted, and their number returned (an older decision written late by another
        process never deletes a newer one). Failed entries are kept. ValueError if an id
        is already there.
        """
        ...

    def outbox(
        self,
        *,
        group_key: str | None = None,
        receiver: str | None = None,
        include_failed: bool = True,
    ) -> list[OutboxEntry]:
        """Entries matching every given filter, oldest first (``created_at``, then id)."""
        ...

    def outbox_depth(self) -> int:
        """How many entries wait to be sent (failed ones not counted), without reading them."""
        ...

    def claim_outbox(
        self,
        now: float,
        *,
        claimant: str,
        lease: float,
        receivers: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Atomically take up to ``limit`` due entries (oldest first) for ``claimant``.

        Each taken entry gets ``claimed_by = claimant``, ``claimed_until = now + lease``
        and one more attempt; nobody else can take it until the lease runs out. An entry
        taken from a claim that ran out unsettled becomes ``uncertain``. Only entries of
        ``receivers`` are taken, when given.
        """
        ...

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
        """A delivery succeeded: in one transaction, record the entry's notification
        (``OutboxEntry.record``; not for a follow-up) and — when ``sent_at`` is given: it
        reached the receiver then, rather than being dropped unsent — log it as a
        ``Delivery``, remember ``refs`` for its receiver until ``refs_expire_at``, add
        ``followups`` and delete the entry.

        False (and nothing changed) if ``claimant`` no longer holds the entry.
        """
        ...

    def retry_outbox(
        self, entry_id: str, *, claimant: str, next_attempt_at: float, error: str,
        uncertain: bool = False,
    ) -> bool:
        """A delivery failed for now: release the claim, try again at ``next_attempt_at``;
        ``uncertain``: it may have reached the receiver all the same."""
        ...

    def fail_outbox(self, entry_id: str, *, claimant: str | None, error: str, now: float) -> bool:
        """A delivery failed for good: keep the entry as failed, never try it again.

        ``claimant=None`` fails an entry nobody holds (say, its receiver was removed).
        """
        ...

    def load_refs(self, receiver: str, keys: Iterable[str], now: float) -> dict[str, str]:
        """``receiver``'s unexpired delivery refs among ``keys`` (``thread:…``, ``message:…``)."""
        ...

    def deliveries(self, fingerprints: Iterable[str]) -> list[Delivery]:
        """The logged deliveries about any of the alerts ``fingerprints`` (firing or
        resolved in them), oldest first."""
        ...

    def collect_garbage(
        self,
        now: float,
        *,
        resolved_retention: float,
        cursor_retention: float,
        silence_retention: float | None = None,
        outbox_retention: float | None = None,
    ) -> Collected:
        """Delete what nothing needs any more, in one transaction.

        Notification records and delivery refs past ``expires_at``; resolved or inactive
        alerts not touched (see ``alert_touched``) within ``resolved_retention``; cursors
        not written within ``cursor_retention``; silences that ended more than
        ``silence_retention`` ago and failed outbox entries that failed more than
        ``outbox_retention`` ago (both default to ``resolved_retention``); deliveries
        logged more than ``resolved_retention`` ago. Pending outbox entries are never
        collected.
        """
        ...

    def save_status(self, source: str, status: Mapping[str, Any], now: float) -> None:
        """What the daemon last did for ``source`` (last tick, duration, runs, errors), a
        JSON-able mapping kept for ``runwatch status``; replaces the previous one."""
        ...

    def load_status(self) -> dict[str, dict[str, Any]]:
        """Every source's last saved status, by source name."""
        ...

    def save_board(self, entries: Iterable[BoardEntry], *, forget_before: float) -> None:
        """Replace the saved board rows of ``entries``' runs, and forget every row last
        seen before ``forget_before``: what the status pages show after a restart or on a
        standby. Only the writer saves (fenced, as every write)."""
        ...

    def load_board(self) -> list[BoardEntry]:
        """Every saved board row, by run path."""
        ...

    def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""
        ...

    def claim_writer(self, holder: str, *, now: float | None = None, ttl: float = LEASE_TTL,
                     standby: bool = False, take: bool = True) -> Lease:
        """Become — or, called again, stay — the one process that writes into this store:
        take the writer lease (``LEADER``) for ``ttl`` seconds from ``now`` (None: the
        system clock; a lease is about real time), or renew it. Two ticking processes
        would each read alerts, evaluate and overwrite the other's states unseen — and both
        notify. The lease is taken when it is free or has run out (a new epoch), renewed
        when this store object holds it; a SQLite store also takes a lock only one process
        of a host can hold (``WriterBusy`` when another has it, ``standby`` or not).

        Held by another and not run out: ``WriterBusy`` naming the holder, or, with
        ``standby``, that lease (``mine`` False). ``take=False`` only renews (a heartbeat
        beside a running job: a new epoch is taken only where nothing was read under an
        older one). While it holds the lease, every write of this store object is fenced by
        its epoch (``LeaseLost`` once a newer one exists or the lease ran out by this
        process's clock); ``close`` flushes and releases it."""
        ...

    def check_writer(self) -> None:
        """Right before something leaves the process (a message sent): ``LeaseLost``
        unless this store object still holds the writer lease — its epoch current, and a
        third of it still ahead by its own clock. Nothing for a store that never held it."""
        ...

    def leases(self) -> list[Lease]:
        """Every writer lease as stored (``mine`` as this store object sees it)."""
        ...

    def close(self) -> None: ...


# --- opening by URL -----------------------------------------------------------------------


# Query options runwatch's own stores read: not secret, shown as they are.
_PLAIN_OPTIONS = frozenset({"busy_timeout"})  # runwatch's own SQLite option
# runwatch's own PostgreSQL options (taken out of the URL), and libpq's that are no secret
_PG_OPTIONS = frozenset({"busy_timeout", "schema", "password_file"})
_PG_PLAIN = _PG_OPTIONS | {"sslmode", "connect_timeout", "application_name"}
_SHORTEST_SECRET = 4  # shorter pieces of a URL are not masked in free text: "HTTP 5***3"


def redact_url(url: str) -> str:
    """``url`` fit for messages and logs: the password (or a user name given alone, often a
    token), the query string (unless it holds only runwatch's own store options) and any
    fragment masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.username is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            alone = parts.password is None
            netloc = f"{'***' if alone else parts.username + ':***'}@{host}"
    except ValueError:
        return "<unparseable URL>"
    if netloc == parts.netloc and not parts.fragment and not _secret_query(parts.query):
        return url
    # Joined by hand: urlunsplit would drop sqlite:////'s empty host.
    text = f"{parts.scheme}:" if parts.scheme else ""
    if url[len(text):].startswith("//"):
        text += "//" + netloc
    text += parts.path
    if parts.query:  # libpq takes ?password=…, webhooks ?token=…
        text += "?" + ("***" if _secret_query(parts.query) else parts.query)
    return text + ("#***" if parts.fragment else "")


def url_secrets(url: str) -> list[str]:
    """The pieces of ``url`` that :func:`redact_url` masks, as written in it, longest first:
    to mask them in free text that quotes only part of the URL (``nonnumeric port:
    'hunter2@host'``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo, at, _ = parts.netloc.rpartition("@")
    pieces = [userinfo if at else "", parts.password or "", parts.fragment]
    if parts.username is not None and parts.password is None:
        pieces.append(parts.username)
    if _secret_query(parts.query):
        items = parts.query.split("&")
        pieces += [parts.query, *(item.partition("=")[2] or item for item in items)]
    found = {p for p in pieces if len(p) >= _SHORTEST_SECRET}
    return sorted(found, key=len, reverse=True)


def _secret_query(query: str) -> bool:
    return any(item.partition("=")[0] not in _PLAIN_OPTIONS | _PG_PLAIN
               for item in query.split("&") if item)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreLocation:
    """What a store URL names, checked without opening (or creating) anything."""

    scheme: str  # "sqlite", "postgresql" or "memory"
    path: str = ""  # SQLite: the database file as written (``~`` not expanded)
    busy_timeout: float | None = None  # seconds a call waits for a lock; None: the default
    dsn: str = ""  # PostgreSQL: the URL libpq is given (runwatch's own options taken out)
    schema: str | None = None  # PostgreSQL: the schema the store's tables live in
    password_file: str | None = None  # PostgreSQL: a file holding the password


def parse_store_url(url: str) -> StoreLocation:
    """The store ``url`` names; ValueError, in words that never quote the URL, when
    :func:`open_store` would refuse it. ``runwatch validate`` and the config use this.

    * ``sqlite:///relative/path.db`` — relative to the working directory;
    * ``sqlite:////absolute/path.db`` — four slashes: the path itself starts with ``/``
      (SQLAlchemy's convention); ``~`` is expanded; ``?busy_timeout=SECONDS`` optional;
    * ``postgresql://user[:password]@host[:port]/database`` (or ``postgres://``) — libpq's
      URL, its options (``sslmode`` …) passed through; runwatch's own: ``schema=NAME``
      (default: the server's search path), ``password_file=PATH``, ``busy_timeout=SECONDS``;
    * ``memory://`` — in this process only, gone on exit (tests, dry runs).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError("not a store URL (expected sqlite:///path.db, postgresql://host/database"
                         " or memory://)")
    if scheme == "memory":
        if rest:
            raise ValueError("memory:// takes no path")
        return StoreLocation(scheme="memory")
    if scheme in ("postgres", "postgresql"):
        return _postgres_location(rest)
    if scheme != "sqlite":
        raise ValueError(f"unknown store scheme {scheme!r} (expected sqlite:///path.db,"
                         " postgresql://host/database or memory://)")
    location, _, query = rest.partition("?")
    if not location.startswith("/") or location == "/":
        raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - _PLAIN_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (sqlite takes busy_timeout)")
    return StoreLocation(scheme="sqlite", path=location[1:], busy_timeout=_busy_timeout(options))


def _busy_timeout(options: Mapping[str, list[str]]) -> float | None:
    if "busy_timeout" not in options:
        return None
    try:
        busy_timeout = float(options["busy_timeout"][-1])
    except ValueError:
        busy_timeout = -1.0
    if not 0 <= busy_timeout < 86400:
        raise ValueError("busy_timeout must be a number of seconds, 0 to 86400")
    return busy_timeout


def _postgres_location(rest: str) -> StoreLocation:
    location, _, query = rest.partition("?")
    if "#" in location or "#" in query:
        raise ValueError("a PostgreSQL store URL takes no #fragment")
    options = parse_qs(query, keep_blank_values=True)
    passed = [item for item in query.split("&")
              if item and item.partition("=")[0] not in _PG_OPTIONS]
    schema = options["schema"][-1] if "schema" in options else None
    if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise ValueError("schema must be a plain SQL name (letters, digits, _)")
    password_file = options["password_file"][-1] if "password_file" in options else None
    dsn = "postgresql://" + location + ("?" + "&".join(passed) if passed else "")
    return StoreLocation(scheme="postgresql", dsn=dsn, schema=schema,
                         password_file=password_file, busy_timeout=_busy_timeout(options))


def open_store(url: str) -> Store:
    """Open the store ``url`` names (see :func:`parse_store_url`)."""
    try:
        where = parse_store_url(url)
    except ValueError as exc:
        raise StoreError(str(exc), store=redact_url(url), temporary=False) from None
    if where.scheme == "memory":
        from runwatch.store.memory import MemoryStore

        return MemoryStore()
    if where.scheme == "postgresql":
        return _open_postgres(url, where)
    from runwatch.store.sqlite import DEFAULT_BUSY_TIMEOUT, SqliteStore

    busy_timeout = DEFAULT_BUSY_TIMEOUT if where.busy_timeout is None else where.busy_timeout
    return SqliteStore(os.path.expanduser(where.path), busy_timeout=busy_timeout)


def _open_postgres(url: str, where: StoreLocation) -> Store:
    name = redact_url(url)
    try:
        from runwatch.store.postgres import DEFAULT_BUSY_TIMEOUT, PostgresStore
    except ImportError as exc:
        raise StoreError(str(exc), store=name, temporary=False) from None
    password = None
    if where.password_file is not None:
        path = os.path.expanduser(where.password_file)
        try:
            with open(path, encoding="utf-8") as file:
                password = file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read password_file {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}",
                             store=name, temporary=False) from None
    busy_timeout = DEFAULT_BUSY_TIMEOUT if where.busy_timeout is None else where.busy_timeout
    return PostgresStore(where.dsn, name=name, schema=where.schema, password=password,
                         busy_timeout=busy_timeout)
