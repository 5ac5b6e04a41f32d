"""Webhook receiver end to end: JSON POSTs to a local HTTP server, the payload's schema,
the signature, and what each answer means."""

from __future__ import annotations

import hashlib
import hmac
import socket

import pytest

import runwatch
from builders import T0, notify_alert, notify_message
from runwatch.config.receivers import Receiver
from runwatch.model import AlertState
from runwatch.notify.base import Message
from runwatch.notify.receivers import build_notifier
from runwatch.notify.webhook import WebhookNotifier, payload


def alert(rule: str = "grad-norm-exploding", *, run_id: str = "abc123",
          name: str = "llama-7b", status: str = "firing", location: str | None = None,
          labels=None) -> AlertState:
    return notify_alert(rule, run_id=run_id, name=name, status=status, location=location,
                        labels=labels or {"team": "llm"})


def message(firing=(), resolved=()) -> Message:
    return notify_message(firing, resolved, receiver="ops-hook",
                          group_key="{}:{alertname=\"x\"}",
                          group_labels={"alertname": "grad-norm-exploding"})


def test_the_payload_follows_alertmanagers_webhook_format(webhook_server):
    hook = WebhookNotifier("ops-hook", url=webhook_server.url, timeout=5)
    firing = alert()
    done = alert(run_id="r2", name="gpt-small", status="resolved", location="/runs/r2")
    delivery = hook.send(message([firing], [done]))
    assert delivery.ok, delivery.detail
    [request] = webhook_server.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["x-runwatch-delivery"] == "out-1"
    assert request.headers["idempotency-key"] == "out-1"  # the same on every retry
    assert "authorization" not in request.headers
    assert "x-runwatch-signature" not in request.headers
    assert request.json == {
        "version": "4",
        "runwatch_version": runwatch.__version__,
        "id": "out-1",
        "receiver": "ops-hook",
        "status": "firing",
        "reason": "first",
        "alerts": [
            {
                "status": "firing",
                "labels": {"team": "llm", "alertname": "grad-norm-exploding",
                           "severity": "critical", "run": "team/pretrain/abc123",
                           "run_id": "abc123", "run_name": "llama-7b",
                           "project": "pretrain", "entity": "team"},
                "annotations": {"summary": "grad norm 12.3 > 10", "metric": "grad_norm",
                                "value": "12.3", "step": "1200"},
                "startsAt": "2025-10-09T07:53:20.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://wandb.ai/team/pretrain/runs/abc123",
                "fingerprint": firing.fingerprint,
            },
            {
                "status": "resolved",
                "labels": {"team": "llm", "alertname": "grad-norm-exploding",
                           "severity": "critical", "run": "team/pretrain/r2",
                           "run_id": "r2", "run_name": "gpt-small",
                           "project": "pretrain", "entity": "team"},
                "annotations": {"summary": "grad norm 12.3 > 10", "metric": "grad_norm",
                                "value": "12.3", "step": "1200"},
                "startsAt": "2025-10-09T07:53:20.000Z",
                "endsAt": "2025-10-09T08:53:20.000Z",
                "generatorURL": "",
                "fingerprint": done.fingerprint,
            },
        ],
        "groupLabels": {"alertname": "grad-norm-exploding"},
        "commonLabels": {"team": "llm", "alertname": "grad-norm-exploding",
                         "severity": "critical", "project": "pretrain", "entity": "team"},
        "commonAnnotations": {"summary": "grad norm 12.3 > 10", "metric": "grad_norm",
                              "value": "12.3", "step": "1200"},
        "externalURL": "",
        "groupKey": "{}:{alertname=\"x\"}",
        "truncatedAlerts": 0,
    }


def test_a_resolved_group_says_resolved():
    assert payload(message(resolved=[alert(status="resolved")]))["status"] == "resolved"


def test_bearer_token_and_a_verifiable_timestamped_signature(webhook_server):
    secret = "0123456789abcdef-secret"
    hook = WebhookNotifier("ops-hook", url=webhook_server.url, bearer_token="tok-123",
                           hmac_secret=secret, clock=lambda: T0)
    assert hook.send(message([alert()])).ok
    [request] = webhook_server.requests
    assert request.headers["authorization"] == "Bearer tok-123"
    timestamp = request.headers["x-runwatch-timestamp"]
    assert timestamp == str(int(T0))
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-runwatch-signature"], f"sha256={expected}")


def test_build_notifier_gives_a_webhook_notifier(webhook_server):
    receiver = Receiver.model_validate({"name": "ops-hook", "webhook": {
        "url": webhook_server.url, "bearer_token": "tok", "hmac_secret": "s" * 20}})
    assert build_notifier(receiver, timeout=5).send(message([alert()])).ok
    assert webhook_server.requests[0].headers["authorization"] == "Bearer tok"


def test_untrusted_text_stays_data(webhook_server):
    hostile = "<!channel>\r\n\"}], \"status\": \"resolved"
    hook = WebhookNotifier("ops-hook", url=webhook_server.url)
    assert hook.send(message([alert(hostile, name=hostile)])).ok
    body = webhook_server.requests[0].json
    assert body["status"] == "firing"
    assert body["alerts"][0]["labels"]["run_name"] == hostile


@pytest.mark.parametrize("status, headers, temporary, retry_after", [
    (400, {}, False, None), (401, {}, False, None), (404, {}, False, None),
    (408, {}, True, None), (429, {"Retry-After": "30"}, True, 30.0),
    (500, {}, True, None), (503, {"Retry-After": "7"}, True, 7.0),
    (302, {"Location": "http://127.0.0.1:1/elsewhere"}, False, None),
])
def test_answers(webhook_server, status, headers, temporary, retry_after):
    webhook_server.respond(status, headers=headers)
    hook = WebhookNotifier("ops-hook", url=webhook_server.url, bearer_token="tok-123")
    delivery = hook.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (
        False, temporary, retry_after)
    assert delivery.detail.startswith(f"webhook receiver 'ops-hook': failed: HTTP {status}")
    assert len(webhook_server.requests) == 1  # no retry here, no redirect followed


def test_connection_refused_and_timeout_are_temporary():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery = WebhookNotifier("h", url=f"http://127.0.0.1:{port}/").send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "refused" in delivery.detail.lower()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        hook = WebhookNotifier("h", url=f"http://127.0.0.1:{silent.getsockname()[1]}/",
                               timeout=0.3)
        delivery = hook.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "timed out" in delivery.detail


# URL → what the answer still says. The config refuses the first two; a notifier built
# any other way must not show them either: errors quote URLs whole or in part.
SECRET_URLS = [
    ("http://ops:hunter2@127.0.0.1/hook", "InvalidURL: nonnumeric port: '***@127.0.0.1'"),
    ("hooks.example.com/hook?token=hunter2", "unknown url type: 'hooks.example.com/hook?***'"),
    ("http://127.0.0.1:{closed}/hook?token=hunter2&x=hunter2", "Connection refused"),
    ("{server}?token=hunter2", "failed: HTTP 500"),
]


@pytest.mark.parametrize(("url", "said"), SECRET_URLS)
def test_a_secret_in_the_url_never_shows_in_an_answer(webhook_server, url, said):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    webhook_server.respond(500)
    hook = WebhookNotifier("ops-hook", url=url.format(closed=closed, server=webhook_server.url),
                           timeout=5)
    delivery = hook.send(message([alert()]))
    assert not delivery.ok
    assert delivery.detail.startswith("webhook receiver 'ops-hook': ")
    assert said in delivery.detail
    assert "hunter2" not in delivery.detail
