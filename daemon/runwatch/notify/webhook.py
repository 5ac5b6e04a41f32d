"""A JSON POST of the alert group, shaped like Alertmanager's webhook (``version: "4"``) so
the tools that read that can read this.

Payload (``Content-Type: application/json``, UTF-8)::

    {
      "version": "4",                    # Alertmanager webhook format version
      "runwatch_version": "0.1.0",       # the runwatch that sent it
      "id": "<outbox id>",               # the same on every retry: deduplicate on it
      "receiver": "ops-hook",
      "status": "firing" | "resolved",   # firing while any alert of the group fires
      "reason": "first" | "changed" | "repeat" | "resolved" | "test",
      "alerts": [{
        "status": "firing" | "resolved",  # firing, with endsAt set, for what the
                                           # training code raised (told once: news)
        "labels": {"alertname": <rule>, "severity": ..., "run": <run path>,
                   "run_id": ..., "run_name": ..., "project": ..., "entity": ...,
                   <the rule's labels>},
        "annotations": {"summary": ..., "metric": ..., "value": ..., "step": ...},
        "startsAt": RFC 3339 (UTC), "endsAt": RFC 3339, or "0001-01-01T00:00:00Z" while firing,
        "generatorURL": <the run's page, or "">,
        "fingerprint": <the alert's fingerprint>
      }],
      "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
      "externalURL": "", "groupKey": <group key>, "truncatedAlerts": 0
    }

Label and annotation values are strings (as in Alertmanager); the run fields come from
whoever launched the run and are not escaped — a consumer rendering them must.

Headers: ``X-Runwatch-Delivery: <id>`` and ``Idempotency-Key: <id>``, the outbox id, the
same on every retry of one message: delivery is at least once, and a receiver that keeps
the keys it saw drops a repeat; ``Authorization: Bearer <token>`` with
``bearer_token``; with ``hmac_secret``, ``X-Runwatch-Timestamp: <unix seconds>`` and
``X-Runwatch-Signature: sha256=<hex>``, the HMAC-SHA256 under the secret of
``<timestamp> + "." + <body bytes>``. A receiver recomputes it over the raw body, compares
in constant time, and rejects timestamps more than a few minutes off its clock — the
timestamp is signed, so a captured request cannot be replayed later with a fresh one.

Answers: 2xx is delivered; a redirect is not followed (the body would be lost or re-sent
elsewhere) and is permanent, as is any 4xx but 408 and 429; 408, 429, 5xx, timeouts and
connection errors are temporary (``retry_after`` from a 429's or 503's Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import runwatch
from runwatch.model import AlertState, AlertStatus, told_once
from runwatch.notify import render
from runwatch.notify.base import Delivery, Message
from runwatch.store.base import redact_url, url_secrets

PAYLOAD_VERSION = "4"
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(seconds: float | None) -> str:
    if seconds is None:
        return ZERO_TIME
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def alert_labels(alert: AlertState) -> dict[str, str]:
    run = alert.run
    labels = {str(k): str(v) for k, v in alert.labels.items()}
    labels.update({"alertname": alert.rule, "severity": str(alert.severity),
                   "run": run.path, "run_id": run.id})
    for key, value in (("run_name", run.name), ("project", run.project),
                       ("entity", run.entity)):
        if value:
            labels[key] = value
    return labels


def alert_annotations(alert: AlertState) -> dict[str, str]:
    annotations = {"summary": alert.summary}
    if alert.metric:
        annotations["metric"] = alert.metric
    if alert.value is not None:
        annotations["value"] = render.format_value(alert.value)
    if alert.step is not None:
        annotations["step"] = str(alert.step)
    if alert.status is AlertStatus.RESOLVED and alert.resolution:
        annotations["resolution"] = alert.resolution
    return annotations


def _common(maps: Iterable[Mapping[str, str]]) -> dict[str, str]:
    maps = list(maps)
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def payload(message: Message) -> dict[str, Any]:
    """The JSON document for ``message`` (see the module docstring)."""
    alerts = render.ordered(message)
    items = [{
        # Told once (raised by the training code): news, ending when it was told.
        "status": "resolved" if a.status is AlertStatus.RESOLVED and not told_once(a)
        else "firing",
        "labels": alert_labels(a),
        "annotations": alert_annotations(a),
        "startsAt": rfc3339(render.since(a)),
        "endsAt": rfc3339(a.resolved_at) if a.status is AlertStatus.RESOLVED else ZERO_TIME,
        "generatorURL": render.run_link(a.run) or "",
        "fingerprint": a.fingerprint,
    } for a in alerts]
    return {
        "version": PAYLOAD_VERSION,
        "runwatch_version": runwatch.__version__,
        "id": message.id,
        "receiver": message.receiver,
        "status": "firing" if message.firing or any(map(told_once, message.resolved))
        else "resolved",
        "reason": str(message.reason),
        "alerts": items,
        "groupLabels": {str(k): str(v) for k, v in message.group_labels.items()},
        "commonLabels": _common(i["labels"] for i in items),
        "commonAnnotations": _common(i["annotations"] for i in items),
        "externalURL": "",
        "groupKey": message.group_key,
        "truncatedAlerts": 0,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``<timestamp>.<body>``: what ``X-Runwatch-Signature`` holds."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class WebhookNotifier:
    """POSTs :func:`payload` to one URL, once per send (retries are the outbox's)."""

    def __init__(self, name: str, *, url: str, bearer_token: str | None = None,
                 hmac_secret: str | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] | None = None):
        self.name = name
        self.url = url
        self._bearer_token = bearer_token
        self._hmac_secret = hmac_secret
        self.timeout = timeout
        self._clock = clock or (lambda: time.time())  # looked up per call (freezegun)
        self._opener = urllib.request.build_opener(_NoRedirects())

    def close(self) -> None:
        pass

    def request(self, message: Message) -> urllib.request.Request:
        data = dict(message.digest.body) if message.digest is not None else payload(message)
        body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": f"runwatch/{runwatch.__version__}",
                   "X-Runwatch-Delivery": render.single_line(message.id, 200),
                   "Idempotency-Key": render.single_line(message.id, 200)}
        if self._bearer_token:
            headers["Authorization"] = f"Bearer {self._bearer_token}"
        if self._hmac_secret:
            timestamp = str(int(self._clock()))
            headers["X-Runwatch-Timestamp"] = timestamp
            headers["X-Runwatch-Signature"] = signature(self._hmac_secret, timestamp, body)
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def send(self, message: Message) -> Delivery:
        try:
            request = self.request(message)
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            return self._failed(exc.code, exc.headers.get("Retry-After"), exc.reason)
        except Exception as exc:  # a Notifier answers, never raises
            temporary = isinstance(exc, OSError)  # URLError, refused, timeout, reset
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return Delivery(ok=False, temporary=temporary,
                            detail=self._detail(f"{type(exc).__name__}: {reason}"))
        return Delivery(ok=True, detail=self._detail(f"HTTP {status}"))

    def _failed(self, status: int, retry_after: str | None, reason: Any) -> Delivery:
        temporary = status in (408, 429) or status >= 500
        return Delivery(ok=False, detail=self._detail(f"failed: HTTP {status} {reason}"),
                        temporary=temporary,
                        retry_after=_retry_after(retry_after) if temporary else None)

    def _detail(self, what: str) -> str:
        """One line about a send, its secrets masked: the token, the HMAC key, and the URL's
        credentials and query string, which errors may quote whole or in part (http.client:
        ``nonnumeric port: 'hunter2@host'``)."""
        text = f"webhook receiver {self.name!r}: {what}".replace(self.url, redact_url(self.url))
        for secret in (self._bearer_token, self._hmac_secret, *url_secrets(self.url)):
            if secret:
                text = text.replace(secret, "***")
        return render.single_line(text, 400)
