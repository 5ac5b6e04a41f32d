"""The durable outbox: decided messages are stored before they are sent, then drained.

Draining takes one due entry at a time with an atomic claim (a lease: another process
cannot take it until the lease runs out), sends it, and settles it in one transaction:

* delivered — the notification record and the refs the receiver returned are written
  and the entry deleted, together;
* failed for now (429, 5xx, timeout, refused) — tried again after an exponential backoff
  (``BACKOFF_BASE`` doubling up to ``BACKOFF_CAP``, at least the receiver's
  ``retry_after``), until the entry is ``GIVE_UP_AFTER`` old;
* failed for good — kept as failed with its error, logged once naming the receiver, and
  never tried again.

A crash after the receiver took a message but before the transaction that settles it
leaves the entry claimed; once its lease runs out (or the daemon sees its claimant is
dead) the entry is taken up again as *uncertain*, as is one whose attempt got no answer
(a timeout, a 5xx): the message goes out with ``maybe_sent`` and the same ``Message.id``.
Slack looks for a post carrying that id and adopts it (exactly once); email and webhooks
send again with the same ``Message-ID`` / ``Idempotency-Key`` (at least once, with a key
the other side can dedupe on). A crash before sending (or before the claim) loses
nothing: the next drain sends the entry once.

A delivery may bring follow-ups (Slack: the charts, uploaded into the post's thread):
they are queued in the transaction that records the delivery and sent as entries of
their own, so a failed or killed upload is retried alone and never repeats the post.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runwatch.model import AlertState
from runwatch.notify.base import (
    Chart,
    Delivery,
    DigestContent,
    Message,
    Notifier,
    Reason,
    ref_list,
)
from runwatch.store import codec
from runwatch.store.base import OutboxEntry, Store

log = logging.getLogger("runwatch.notify.outbox")

PAYLOAD_VERSION = 1
DEFAULT_LEASE = 300.0  # seconds one claim holds an entry: far above a notifier's timeout
BACKOFF_BASE = 30.0
BACKOFF_CAP = 1800.0
RETRY_AFTER_CAP = 3600.0  # a receiver asking for more than this is asked again sooner
GIVE_UP_AFTER = 86400.0  # a message still undelivered a day later is stale news
REF_RETENTION = 14 * 86400.0  # how long a Slack thread or message id is remembered


# --- the stored form ----------------------------------------------------------------------


def encode_message(message: Message) -> str:
    """``message`` as the outbox's payload text (alerts without their check memory)."""
    data = {
        "v": PAYLOAD_VERSION,
        "group_labels": dict(message.group_labels),
        "reason": str(message.reason),
        "firing": [codec.alert_to_data(a, memory=False) for a in message.firing],
        "resolved": [codec.alert_to_data(a, memory=False) for a in message.resolved],
        "charts": {fp: dataclasses.asdict(chart) for fp, chart in message.charts.items()},
    }
    if message.digest is not None:
        data["digest"] = _digest_data(message.digest)
    if message.follows:
        data["follows"] = message.follows
    return codec.encode_json(data)


def _digest_data(digest: DigestContent) -> dict[str, Any]:
    return {"title": digest.title, "summary": digest.summary, "text": digest.text,
            "blocks": list(digest.blocks), "html": digest.html, "body": dict(digest.body),
            "image": base64.b64encode(digest.image).decode() if digest.image else None}


def _digest(data: Mapping[str, Any] | None) -> DigestContent | None:
    if data is None:
        return None
    image = data.get("image")
    return DigestContent(title=data["title"], summary=data["summary"], text=data["text"],
                         blocks=tuple(data["blocks"]), html=data["html"], body=data["body"],
                         image=base64.b64decode(image) if image else None)


def decode_message(entry: OutboxEntry, refs: Mapping[str, str] | None = None) -> Message:
    """The message ``entry`` holds, with ``refs``; CodecError if its payload is unreadable."""
    data = codec.decode_json(entry.payload)
    try:
        if data.get("v") != PAYLOAD_VERSION:
            raise codec.CodecError(f"payload version {data.get('v')!r} is not {PAYLOAD_VERSION}")
        return Message(
            id=entry.id,
            receiver=entry.receiver,
            group_key=entry.group_key,
            group_labels=dict(data["group_labels"]),
            firing=tuple(codec.alert_from_data(a) for a in data["firing"]),
            resolved=tuple(codec.alert_from_data(a) for a in data["resolved"]),
            reason=Reason(data["reason"]),
            created_at=entry.created_at,
            charts={fp: _chart(c) for fp, c in data["charts"].items()},
            refs=dict(refs or {}),
            digest=_digest(data.get("digest")),
            maybe_sent=entry.uncertain,
            follows=str(data.get("follows") or ""),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise codec.CodecError(f"outbox entry {entry.id} unreadable: {exc}") from None


def _chart(data: Mapping[str, Any]) -> Chart:
    return Chart(metric=data["metric"], steps=tuple(data["steps"]), values=tuple(data["values"]),
                 threshold=data.get("threshold"), firing_step=data.get("firing_step"))


def new_entry(message: Message, *, expires_at: float) -> OutboxEntry:
    """The outbox entry for a just-decided ``message``, due at once."""
    return OutboxEntry(
        id=message.id,
        group_key=message.group_key,
        receiver=message.receiver,
        firing=frozenset(a.fingerprint for a in message.firing),
        resolved=frozenset(a.fingerprint for a in message.resolved),
        payload=encode_message(message),
        created_at=message.created_at,
        expires_at=expires_at,
        next_attempt_at=message.created_at,
        followup=bool(message.follows),
    )


def ref_keys(alerts: tuple[AlertState, ...]) -> set[str]:
    """The refs a message about ``alerts`` may build on (see ``Message.refs``)."""
    keys = {f"thread:{a.run.path}" for a in alerts}
    keys.update(f"message:{a.fingerprint}" for a in alerts)
    return keys


def load_refs(store: Store, receiver: str, alerts: tuple[AlertState, ...], now: float
              ) -> dict[str, str]:
    """Every ref a message about ``alerts`` builds on: threads, the messages that showed
    each alert firing, what each of those messages showed, and the receiver's own
    ``channel`` (Slack: the configured channel's ID, once a post has answered it)."""
    refs = store.load_refs(receiver, ref_keys(alerts) | {"channel"}, now)
    shown = {f"shown:{value}" for a in alerts
             for value in ref_list(refs, f"message:{a.fingerprint}")}
    return refs | store.load_refs(receiver, shown, now) if shown else refs


def shown_ref(alerts: Iterable[AlertState]) -> str:
    """The ``shown:<message ref>`` value: the alerts one message shows, as it shows them."""
    return codec.encode_json([codec.alert_to_data(a, memory=False) for a in alerts])


def shown_alerts(text: str) -> list[AlertState]:
    """The alerts a ``shown:`` ref holds; none if it is missing or unreadable (a ref from
    before messages kept what they showed)."""
    if not text:
        return []
    try:
        return [codec.alert_from_data(a) for a in codec.decode_json(text)]
    except (codec.CodecError, AttributeError, KeyError, TypeError, ValueError):
        return []


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempts + 1``: what the receiver asked for when it
    said (a rate limit says when it lifts: doubling on top would only delay the burst),
    else 30 s doubling to the cap."""
    if retry_after is not None and retry_after > 0:
        return min(retry_after, RETRY_AFTER_CAP)
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempts - 1, 0))


# --- draining -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class DrainReport:
    sent: int = 0
    retrying: int = 0  # failed for now, scheduled again
    failed: int = 0  # failed for good
    lost: int = 0  # delivered, but another process had taken the entry meanwhile
    superseded: int = 0  # dropped unsent: a newer message about its group went out first
    followups: int = 0  # later steps of delivered messages done (Slack charts): not "sent"
    errors: tuple[str, ...] = ()  # one line per failure, naming the receiver
    by_receiver: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)


def new_claimant() -> str:
    """Who is draining: host, process and a random part, for claims and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def drain(
    store: Store,
    notifiers: Mapping[str, Notifier],
    now: float,
    *,
    claimant: str | None = None,
    lease: float = DEFAULT_LEASE,
    give_up_after: float = GIVE_UP_AFTER,
    max_sends: int = 1000,
) -> DrainReport:
    """Send every due outbox entry whose receiver is in ``notifiers``, oldest first.

    A receiver that fails for now is not tried again in this drain (its other entries
    wait for the next one). A ``StoreError`` stops the drain and propagates: nothing is
    sent that could not then be recorded.
    """
    claimant = claimant or new_claimant()
    live = set(notifiers)
    counts = {"sent": 0, "retrying": 0, "failed": 0, "lost": 0, "superseded": 0,
              "followups": 0}
    errors: list[str] = []
    per_receiver: dict[str, dict[str, int]] = {}
    for _ in range(max_sends):
        taken = store.claim_outbox(now, claimant=claimant, lease=lease, receivers=live, limit=1)
        if not taken:
            break
        entry = taken[0]
        outcome, error = _deliver(store, notifiers[entry.receiver], entry, now,
                                  claimant=claimant, give_up_after=give_up_after)
        if entry.followup and outcome == "sent":
            outcome = "followups"
        counts[outcome] += 1
        mine = per_receiver.setdefault(entry.receiver, {})
        mine[outcome] = mine.get(outcome, 0) + 1
        if error:
            errors.append(error)
        if outcome == "retrying":
            live.discard(entry.receiver)
    return DrainReport(**counts, errors=tuple(errors), by_receiver=per_receiver)


def _deliver(
    store: Store, notifier: Notifier, entry: OutboxEntry, now: float, *, claimant: str,
    give_up_after: float,
) -> tuple[str, str]:
    where = f"receiver {entry.receiver}: message {entry.id} ({entry.group_key})"
    context = {"receiver": entry.receiver, "message_id": entry.id, "group": entry.group_key}
    last = None if entry.followup else store.last_notification(entry.group_key, entry.receiver)
    if last is not None and last.sent_at > entry.created_at:
        # A newer message about this group was delivered meanwhile (this one's claim ran
        # out after a crash): sending it now would tell the receiver something older.
        store.complete_outbox(entry.id, claimant=claimant, refs={}, refs_expire_at=now)
        log.info("%s: dropped, a newer message about the group was sent at %.0f", where,
                 last.sent_at, extra=context)
        return "superseded", ""
    try:
        message = decode_message(entry)
    except codec.CodecError as exc:
        return _fail(store, entry, now, claimant, f"{where}: {exc}")
    if message.follows and not getattr(notifier, "takes_followups", False):
        # The receiver changed kind since (a bot token became a webhook): the message was
        # delivered; its follow-up has nowhere to go, and must not repeat it.
        store.complete_outbox(entry.id, claimant=claimant, refs={}, refs_expire_at=now)
        log.info("%s: dropped, the receiver takes no follow-ups now", where, extra=context)
        return "superseded", ""
    message = dataclasses.replace(
        message, refs=load_refs(store, entry.receiver, message.firing + message.resolved, now))
    store.check_writer()  # a replica that lost the lease meanwhile sends nothing (LeaseLost)
    try:
        delivery = notifier.send(message)
    except Exception as exc:  # the contract says never; a bug must not stop the others
        delivery = Delivery(ok=False, temporary=True,
                            detail=f"unexpected {type(exc).__name__}: {exc}")
    if delivery.ok:
        followups = [new_entry(dataclasses.replace(f, created_at=now), expires_at=now)
                     for f in delivery.followups]
        done = store.complete_outbox(entry.id, claimant=claimant, refs=delivery.refs, sent_at=now,
                                     refs_expire_at=now + REF_RETENTION, followups=followups)
        if not done:
            log.warning("%s: delivered after its claim ran out; it may arrive twice", where,
                        extra=context)
            return "lost", ""
        log.info("%s: delivered (%s) after %d attempt(s)%s", where, message.reason,
                 entry.attempts, f": {delivery.detail}" if delivery.detail else "",
                 extra=context | {"reason": str(message.reason)})
        return "sent", ""
    detail = " ".join((delivery.detail or "failed without detail").split())
    if not delivery.temporary:
        return _fail(store, entry, now, claimant, f"{where}: {detail}")
    if now - entry.created_at >= give_up_after:
        return _fail(store, entry, now, claimant,
                     f"{where}: gave up after {entry.attempts} attempts: {detail}")
    retry_at = now + backoff(entry.attempts, delivery.retry_after)
    store.retry_outbox(entry.id, claimant=claimant, next_attempt_at=retry_at, error=detail,
                       uncertain=delivery.maybe_delivered)
    log.warning("%s: attempt %d failed, retrying in %.0fs: %s", where, entry.attempts,
                retry_at - now, detail, extra=context)
    return "retrying", f"{where}: {detail} (retrying)"


def _fail(store: Store, entry: OutboxEntry, now: float, claimant: str, error: str
          ) -> tuple[str, str]:
    store.fail_outbox(entry.id, claimant=claimant, error=error, now=now)
    log.error("%s (not retried)", error, extra={"receiver": entry.receiver,
                                                "message_id": entry.id})
    return "failed", error
