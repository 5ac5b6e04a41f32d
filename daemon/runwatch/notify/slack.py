"""Slack receivers: a bot token (threads, updates, charts) or an incoming webhook.

Bot token, one alert group → one ``chat.postMessage`` (Block Kit from ``render``):

- **Threads.** Refs ``thread:<run path>`` → ``<channel>:<ts>`` name the first message
  about a run. A group may span runs: it goes into the thread of the first of its alerts
  (in :func:`render.ordered` order: most severe firing first) whose run has one. A message
  posted at top level becomes the thread of every run it mentions that had none; a
  message posted into a thread starts no thread for the other runs it mentions.
- **Updates.** Each alert a message announces gets ``message:<fingerprint>`` →
  ``<channel>:<ts>`` (the first announcement only; repeats go into the thread). When an
  alert resolves, that message is rewritten (``chat.update``) to show the group's alerts
  it announced as they now stand, and the resolve itself is posted as a reply in the
  thread — so the channel shows the outcome and the thread keeps the history.
- **Charts** (``charts: true``): a PNG of ``message.charts[fingerprint]`` for up to
  :data:`MAX_CHARTS` firing alerts, uploaded into the thread with ``files_upload_v2``.

Order makes retries safe: the updates (idempotent) first, then the one post, then the
charts — best effort, since the post has happened and a retry would post it twice.
Slack has no idempotency key for ``chat.postMessage``: a process killed after Slack took
the post but before the outbox recorded it posts it again once the claim's lease runs out
(at least once). Each post carries the outbox id in its message ``metadata``
(``event_type`` :data:`METADATA_EVENT`), so such a repeat can be told apart — and could be
looked up (``conversations.history`` with ``include_all_metadata``) before re-posting.

Retries within one send are slack_sdk's own handlers with small bounded counts, for a reset
connection or a 5xx only. A 429 is never slept on here: it is handed back at once as a
temporary failure with ``retry_after``, and the outbox waits it out without a blocked
thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from runwatch.model import AlertState, AlertStatus
from runwatch.notify import render
from runwatch.notify.base import Delivery, DigestContent, Message, ref_list, with_ref
from runwatch.notify.charts import chart_title, firing_charts
from runwatch.notify.outbox import shown_alerts, shown_ref

MAX_CHARTS = 3
METADATA_EVENT = "runwatch_notification"
RETRIES = 2

# ok:false errors that no retry can fix (https://api.slack.com/methods/chat.postMessage).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "invalid_auth", "not_authed", "account_inactive", "token_revoked",
    "token_expired", "not_in_channel", "is_archived", "missing_scope", "no_permission",
    "ekm_access_denied", "restricted_action", "org_login_required", "invalid_blocks",
    "invalid_arguments", "msg_too_long", "too_many_attachments", "no_text",
    "invalid_blocks_format", "channel_is_archived", "cannot_reply_to_message",
    "team_access_not_granted", "not_allowed_token_type", "invalid_token",
})
# Errors that say "later": everything else ok:false is treated as permanent.
TEMPORARY_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
})
# chat.postMessage failures when a thread's parent is gone: post at the top level instead.
# A threaded post that fails with one of these goes to the top of the receiver's channel
# instead: the thread's first message is gone, or its channel is (renamed in the config,
# archived, or left by the bot).
GONE_THREAD_ERRORS = frozenset({"thread_not_found", "message_not_found", "not_in_channel",
                                "channel_not_found", "is_archived", "channel_is_archived"})
# chat.update failures that leave the resolve reply still worth posting.
STALE_MESSAGE_ERRORS = frozenset({"message_not_found", "cant_update_message",
                                  "edit_window_closed", "not_in_channel", "channel_not_found",
                                  "is_archived", "channel_is_archived"})


def retry_handlers(retries: int = RETRIES) -> list[RetryHandler]:
    """Retries inside a send for what passes in a moment (a reset connection, a 5xx). A
    429 is not among them: slack_sdk would sleep its Retry-After in the send, holding the
    daemon's one worker — and every tick — through a burst. It goes back to the outbox,
    deferred by its Retry-After, and the worker moves on."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=retries),
        ServerErrorRetryHandler(max_retry_count=retries),
    ]


def retry_after_seconds(headers: Mapping[str, Any]) -> float | None:
    """The Retry-After header in seconds (slack_sdk keeps header values as str or [str])."""
    for key, value in headers.items():
        if key.lower() != "retry-after":
            continue
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        try:
            return max(float(value), 0.0)
        except (TypeError, ValueError):
            return None
    return None


def parse_ref(value: str) -> tuple[str, str] | None:
    """``"C123:1700000000.000100"`` → ``("C123", "1700000000.000100")``."""
    channel, sep, ts = value.partition(":")
    return (channel, ts) if sep and channel and ts else None


def classify(receiver: str, call: str, exc: Exception, *, secrets: tuple[str, ...] = ()
             ) -> Delivery:
    """A failed Slack call as a Delivery: permanent or temporary, one line, no secret."""
    retry_after = None
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = str(data.get("error") or "")
        retry_after = retry_after_seconds(exc.response.headers or {})
        temporary = status == 429 or status >= 500 or error in TEMPORARY_ERRORS
        what = (error if status == 200 else f"{error} (HTTP {status})") if error \
            else f"HTTP {status}"
    elif isinstance(exc, OSError | SlackClientError):  # refused, reset, timeout, DNS …
        temporary = True
        what = render.single_line(f"{type(exc).__name__}: {exc}", 300)
    else:  # a bug of ours, or of the SDK: retrying the same message will not help
        temporary = False
        what = render.single_line(f"{type(exc).__name__}: {exc}", 300)
    detail = f"slack receiver {receiver!r}: {call} failed: {what}"
    return Delivery(ok=False, detail=_scrub(detail, secrets), temporary=temporary,
                    retry_after=retry_after if temporary else None)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def digest_fallback(digest: DigestContent) -> str:
    """The ``text`` beside a digest's blocks (notifications, screen readers)."""
    return render.truncate(render.mrkdwn(f"{digest.title}: {digest.summary}"),
                           render.FALLBACK_LIMIT)


class SlackNotifier:
    """A bot token (``xoxb-``) posting to one channel through ``chat.postMessage``."""

    def __init__(self, name: str, *, token: str, channel: str, charts: bool = False,
                 base_url: str | None = None, timeout: float = 10.0,
                 retries: int = RETRIES):
        self.name = name
        self.channel = channel
        self.charts = charts
        self._token = token
        self._client = WebClient(
            token=token, base_url=base_url or WebClient.BASE_URL, timeout=timeout,  # type: ignore[arg-type]
            retry_handlers=retry_handlers(retries),
        )

    def close(self) -> None:
        pass  # urllib opens a connection per request; nothing is held

    def send(self, message: Message) -> Delivery:
        if message.digest is not None:
            return self._send_digest(message, message.digest)
        call = "chat.postMessage"
        rewrites = self._rewrites(message)
        try:
            call = "chat.update"
            notes = self._update_resolved(message, rewrites)
            call = "chat.postMessage"
            channel, ts, thread_ts, restarted = self._post(message)
            call = "files_upload_v2"
            notes += self._upload_charts(message, channel, thread_ts or ts)
        except Exception as exc:  # a Notifier answers, never raises
            return classify(self.name, call, exc, secrets=(self._token,))
        refs = self._new_refs(message, channel, ts, threaded=thread_ts is not None,
                              restarted=restarted)
        refs.update((f"shown:{value}", shown_ref(alerts)) for value, alerts in rewrites.items())
        where = f"{channel} thread {thread_ts}" if thread_ts else channel
        detail = f"slack receiver {self.name!r}: posted {ts} to {where}"
        if notes:
            detail += "; " + "; ".join(notes)
        return Delivery(ok=True, detail=_scrub(detail, (self._token,)), refs=refs)

    def _send_digest(self, message: Message, digest: DigestContent) -> Delivery:
        """The digest to the channel, its chart into the post's thread (best effort)."""
        try:
            response = self._client.chat_postMessage(
                channel=self.channel, text=digest_fallback(digest),
                blocks=list(digest.blocks), unfurl_links=False, unfurl_media=False,
                metadata={"event_type": METADATA_EVENT,
                          "event_payload": {"outbox_id": message.id}})
        except Exception as exc:  # a Notifier answers, never raises
            return classify(self.name, "chat.postMessage", exc, secrets=(self._token,))
        channel, ts = str(response["channel"]), str(response["ts"])
        detail = f"slack receiver {self.name!r}: posted the digest {ts} to {channel}"
        if digest.image:
            try:
                self._client.files_upload_v2(
                    channel=channel, thread_ts=ts, file=digest.image, filename="digest.png",
                    title=render.truncate(render.one_line(digest.title), 250),
                    alt_txt="loss curves of the running runs")
            except Exception as exc:  # the digest is out; its chart is a bonus
                failed = classify(self.name, "files_upload_v2", exc, secrets=(self._token,))
                detail += f"; chart not uploaded ({failed.detail.rsplit(': ', 1)[-1]})"
        return Delivery(ok=True, detail=_scrub(detail, (self._token,)))

    # --- steps ----------------------------------------------------------------------

    def _thread(self, message: Message) -> tuple[str, str] | None:
        runs = {a.run.path for a in (*message.firing, *message.resolved)}
        if len(runs) > 1:
            return None  # news about several runs belongs in the channel, not one run's thread
        keys = [f"thread:{path}" for path in runs]
        values = [message.refs.get(key, "") for key in keys]
        if not message.firing:  # a resolve with no thread: reply to the announcement
            values += [(ref_list(message.refs, f"message:{a.fingerprint}") or [""])[0]
                       for a in message.resolved]
        found = (parse_ref(value) for value in values)
        return next((ref for ref in found if ref is not None), None)

    def _rewrites(self, message: Message) -> dict[str, list[AlertState]]:
        """Each message that showed an alert now resolved, with every alert it ever showed
        as it now stands: this message's state where it has one, else as last shown."""
        resolved = {a.fingerprint for a in message.resolved}
        current = {a.fingerprint: a for a in render.ordered(message)}
        targets = dict.fromkeys(value for a in message.resolved
                                for value in ref_list(message.refs, f"message:{a.fingerprint}"))
        rewrites = {}
        for value in targets:
            shown = {a.fingerprint: a for a in shown_alerts(message.refs.get(f"shown:{value}",
                                                                               ""))}
            # A message from before messages kept what they showed: the alerts known to it.
            shown.update((fp, a) for fp, a in current.items() if fp not in shown
                         and value in ref_list(message.refs, f"message:{fp}"))
            alerts = [current.get(fp, a) for fp, a in shown.items()]
            if any(a.fingerprint in resolved for a in alerts):
                rewrites[value] = sorted(alerts, key=_shown_order)
        return rewrites

    def _update_resolved(self, message: Message, rewrites: Mapping[str, list[AlertState]]
                         ) -> list[str]:
        """Rewrite each message that showed an alert now resolved; idempotent."""
        notes = []
        for value, alerts in rewrites.items():
            ref = parse_ref(value)
            if ref is None:
                continue
            channel, ts = ref
            title = render.title(
                [a for a in alerts if a.status is not AlertStatus.RESOLVED],
                [a for a in alerts if a.status is AlertStatus.RESOLVED])
            try:
                self._client.chat_update(
                    channel=channel, ts=ts,
                    text=render.slack_fallback(message, alerts, title=title),
                    blocks=render.slack_blocks(message, alerts, title=title),
                )
            except SlackApiError as exc:
                error = exc.response.get("error") if isinstance(exc.response.data, dict) else ""
                if error not in STALE_MESSAGE_ERRORS:
                    raise
                notes.append(f"not updated {ts}: {error}")
        return notes

    def _post(self, message: Message) -> tuple[str, str, str | None, bool]:
        """Post the group; answers channel, ts, the thread it went into, and whether the
        run's thread was gone and a new one began."""
        thread = self._thread(message)
        channel, thread_ts = thread if thread else (self.channel, None)
        post = {"text": render.slack_fallback(message), "blocks": render.slack_blocks(message),
                "unfurl_links": False, "unfurl_media": False,
                # chat.postMessage takes no idempotency key: the outbox id rides along as
                # message metadata, so a post repeated after a crash is recognisably the same.
                "metadata": {"event_type": METADATA_EVENT,
                             "event_payload": {"outbox_id": message.id}}}
        try:
            response = self._client.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                     **post)
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else ""
            if thread_ts is None or error not in GONE_THREAD_ERRORS:
                raise
            # The thread's first message was deleted: start over at the top level.
            response = self._client.chat_postMessage(channel=self.channel, **post)
            return str(response["channel"]), str(response["ts"]), None, True
        return str(response["channel"]), str(response["ts"]), thread_ts, False

    def _upload_charts(self, message: Message, channel: str, thread_ts: str) -> list[str]:
        if not self.charts:
            return []
        drawn, notes = firing_charts(message, MAX_CHARTS)
        for alert, chart, png in drawn:
            try:
                self._client.files_upload_v2(
                    channel=channel, thread_ts=thread_ts, file=png,
                    filename=f"{alert.fingerprint}.png",
                    title=render.truncate(chart_title(alert, chart), 250),
                    alt_txt=render.truncate(render.one_line(f"chart of {chart.metric}"), 1000),
                )
            except Exception as exc:  # the message is out; a chart is a bonus
                failed = classify(self.name, "files_upload_v2", exc, secrets=(self._token,))
                notes.append(f"chart not uploaded ({failed.detail.rsplit(': ', 1)[-1]})")
        return notes

    def _new_refs(self, message: Message, channel: str, ts: str, *, threaded: bool,
                  restarted: bool) -> dict[str, str]:
        here = f"{channel}:{ts}"
        refs: dict[str, str] = {}
        if not threaded:
            for alert in render.ordered(message):
                key = f"thread:{alert.run.path}"
                if restarted or key not in message.refs:
                    refs[key] = here
        for alert in message.firing:
            key = f"message:{alert.fingerprint}"
            refs[key] = with_ref(message.refs, key, here)
        refs[f"shown:{here}"] = shown_ref(render.ordered(message))
        return refs


def _shown_order(alert: AlertState) -> tuple[bool, int]:
    """Firing first, most severe first; then resolved (``render.ordered``'s order)."""
    return (alert.status is AlertStatus.RESOLVED, -alert.severity.rank)


class SlackWebhookNotifier:
    """An incoming webhook: the same blocks, no threads, no updates, no files."""

    def __init__(self, name: str, *, url: str, timeout: float = 10.0,
                 retries: int = RETRIES):
        self.name = name
        self._url = url
        self._client = WebhookClient(url=url, timeout=timeout,  # type: ignore[arg-type]
                                     retry_handlers=retry_handlers(retries))

    def close(self) -> None:
        pass

    def send(self, message: Message) -> Delivery:
        digest = message.digest
        try:
            if digest is not None:  # no files through a webhook: the blocks alone
                response = self._client.send(
                    text=digest_fallback(digest),
                    blocks=list(digest.blocks), unfurl_links=False, unfurl_media=False)
            else:
                response = self._client.send(
                    text=render.slack_fallback(message), blocks=render.slack_blocks(message),
                    unfurl_links=False, unfurl_media=False,
                )
        except Exception as exc:  # a Notifier answers, never raises
            return classify(self.name, "webhook", exc, secrets=(self._url,))
        status, body = response.status_code, render.single_line(response.body or "", 120)
        if status == 200:
            return Delivery(ok=True, detail=f"slack receiver {self.name!r}: webhook {body}")
        temporary = status == 429 or status >= 500
        retry_after = retry_after_seconds(response.headers or {}) if temporary else None
        detail = f"slack receiver {self.name!r}: webhook failed: HTTP {status} {body}".rstrip()
        return Delivery(ok=False, detail=_scrub(detail, (self._url,)), temporary=temporary,
                        retry_after=retry_after)
