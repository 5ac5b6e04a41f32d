"""The seam between deciding what to tell and telling it: one message, one receiver.

The pipeline (routing, inhibition, silences, dedup, the outbox) builds :class:`Message`
values; a :class:`Notifier` turns one into a Slack post, an email or a webhook call and
answers with a :class:`Delivery`. Notifiers never raise for a delivery problem: they say
whether retrying can help, and the outbox decides when.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runwatch.model import AlertState


class Reason(enum.StrEnum):
    """Why a message is (or is not) sent; logged with every decision."""

    FIRST = "first"  # nothing was sent for this group before
    CHANGED = "changed"  # new alerts fire in the group
    REPEAT = "repeat"  # still firing, and the repeat interval has elapsed
    RESOLVED = "resolved"  # alerts the receiver was told about have resolved
    NONE = "do-not-notify"
    TEST = "test"  # `runwatch notify-test`
    DIGEST = "digest"  # the scheduled digest


@dataclass(frozen=True, kw_only=True, slots=True)
class Chart:
    """Points of one metric up to the firing point, for receivers with ``charts: true``."""

    metric: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    threshold: float | None = None
    firing_step: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DigestContent:
    """A digest as every kind of receiver sends it, rendered once when it was composed (the
    outbox keeps it as it was: a retry an hour later sends the same morning's digest)."""

    title: str  # the email's subject
    summary: str  # one line of counts: beside the title where there is no room for more
    text: str  # plain text: the email's text part
    blocks: tuple[Mapping[str, Any], ...]  # Slack Block Kit, within Slack's limits
    html: str  # the email's HTML part; the image is ``cid:`` DIGEST_IMAGE_CID
    body: Mapping[str, Any]  # a webhook's JSON body
    image: bytes | None = None  # PNG: the running runs' loss curves


DIGEST_IMAGE_CID = "digest-chart@runwatch.invalid"


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """What one receiver is told about one alert group, as decided once and kept in the outbox.

    ``refs`` carries what earlier deliveries to this receiver returned that this message
    builds on, by key: ``thread:<run path>`` — the first message about a run (Slack posts
    later messages about the run into its thread); ``message:<fingerprint>`` — every
    message that showed an alert firing, oldest first (:func:`ref_list`: each is updated,
    or replied to, when it resolves); ``shown:<message ref>`` — the alerts that message
    showed, as it last showed them (:func:`runwatch.notify.outbox.shown_alerts`), so a
    rewrite shows every one of them.
    """

    id: str  # the outbox id: stable across retries, usable as an idempotency key
    receiver: str
    group_key: str
    group_labels: Mapping[str, str] = field(default_factory=dict)
    firing: tuple[AlertState, ...] = ()
    resolved: tuple[AlertState, ...] = ()
    reason: Reason
    created_at: float  # when it was decided: "firing for 2h" is measured against it
    charts: Mapping[str, Chart] = field(default_factory=dict)  # by alert fingerprint
    refs: Mapping[str, str] = field(default_factory=dict)
    digest: DigestContent | None = None  # set: this message is a digest, not alert news
    # An earlier attempt may have reached the receiver (its process died, or no answer
    # came): a receiver that can look for it does so before sending again.
    maybe_sent: bool = False
    # Set: a follow-up of the delivered message that this ref names (the post's own ref,
    # as its Delivery gave it): Slack uploads the charts into that post's thread.
    follows: str = ""


REF_LIST_LIMIT = 25  # messages remembered per alert: the newest, when one fires for days


def ref_list(refs: Mapping[str, str], key: str) -> list[str]:
    """The values of a list ref (``message:<fingerprint>``), oldest first."""
    return refs.get(key, "").split()


def with_ref(refs: Mapping[str, str], key: str, value: str) -> str:
    """The list ref ``key`` with ``value`` appended (once; at most REF_LIST_LIMIT kept, the
    first — the announcement, which threads hang on — always among them)."""
    values = [v for v in ref_list(refs, key) if v != value] + [value]
    if len(values) > REF_LIST_LIMIT:
        values = values[:1] + values[-(REF_LIST_LIMIT - 1):]
    return " ".join(values)


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery:
    """A receiver's answer to one send."""

    ok: bool
    detail: str = ""  # one line: the receiver's answer or error; never a secret
    temporary: bool = False  # a retry may succeed (429, 5xx, timeout, SMTP 4xx, refused)
    retry_after: float | None = None  # seconds, when the receiver said so
    refs: Mapping[str, str] = field(default_factory=dict)  # new refs to remember (keys as above)
    maybe_delivered: bool = False  # failed, but it may have arrived (a timeout, a 5xx)
    # Later steps, queued with this delivery's record and sent on their own (Slack's
    # charts): their failure never repeats what was delivered.
    followups: tuple[Message, ...] = ()


class Notifier(Protocol):
    """One configured receiver, ready to send."""

    name: str

    def send(self, message: Message) -> Delivery:
        """Deliver ``message``; every failure is a ``Delivery(ok=False, ...)``, never raised."""
        ...

    def close(self) -> None: ...
