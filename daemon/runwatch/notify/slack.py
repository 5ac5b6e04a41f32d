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
  :data:`MAX_CHARTS` firing alerts, uploaded into the post's thread with
  ``files_upload_v2`` — as a follow-up outbox entry of its own, once the post is recorded:
  a failed or killed upload is retried alone and never repeats the post.

Exactly once. ``chat.postMessage`` takes no idempotency key, so each post carries its
outbox id in its message ``metadata`` (``event_type`` :data:`METADATA_EVENT`). An entry
taken up again after an attempt that may have reached Slack (``Message.maybe_sent``: its
process died after Slack took the post, or the answer never came) first looks for a post
with its id — ``conversations.history`` of the channel (``conversations.replies`` of the
thread it would go into) with ``include_all_metadata``, from the entry's creation — and
adopts its ``ts`` instead of posting again; a follow-up looks for its charts in the
thread the same way. The look-up needs ``channels:history`` (``groups:history`` for a
private channel); without it the entry is posted again (at least once), which
:meth:`SlackNotifier.check_online` says at start-up, in ``notify-test`` and in
``validate --online``. Posts are therefore never retried inside a send (a reset
connection may come after Slack took the post); the idempotent calls — updates, look-ups,
uploads — are, for a reset connection or a 5xx.

A 429 is never slept on: it is handed back at once as a temporary failure with
``retry_after``, and the outbox waits it out without a blocked thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from json import JSONDecodeError
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from runwatch.model import AlertState, AlertStatus, told_once
from runwatch.notify import render
from runwatch.notify.base import Delivery, DigestContent, Message, ref_list, with_ref
from runwatch.notify.charts import chart_title, firing_charts
from runwatch.notify.outbox import shown_alerts, shown_ref

MAX_CHARTS = 3
METADATA_EVENT = "runwatch_notification"
RETRIES = 2
HISTORY_PAGES = 10  # pages of 200 messages searched for a post that may have been made
CLOCK_SLACK = 120.0  # seconds before the entry's creation the search starts (clock skew)
HISTORY_SCOPES = ("channels:history", "groups:history")

# ok:false errors that no retry can fix (https://api.slack.com/methods/chat.postMessage).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "invalid_auth", "not_authed", "account_inactive", "token_revoked",
    "token_expired", "not_in_channel", "is_archived", "missing_scope", "no_permission",
    "ekm_access_denied", "restricted_action", "org_login_required", "invalid_blocks",
    "invalid_arguments", "msg_too_long", "too_many_attachments", "no_text",
    "invalid_blocks_format", "channel_is_archived", "cannot_reply_to_message",
    "team_access_not_granted", "not_allowed_token_type", "invalid_token",
})
# ok:false errors after which the call may have taken effect all the same ("part of the
# operation may have succeeded"): a post answered so is looked for before it is repeated.
MAYBE_DONE_ERRORS = frozenset({"fatal_error", "internal_error", "request_timeout"})
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
    """A failed Slack call as a Delivery: permanent or temporary, one line, no secret.

    An answer whose body is not JSON (a proxy's error page, a cut-off body) did not come
    from Slack's API as such: temporary, and a post so answered may have been made.
    slack_sdk reports it as an ``ok: false`` whose error is its own sentence, or, for a
    body that starts like JSON, lets the ``JSONDecodeError`` out."""
    retry_after = None
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = _error(exc)
        retry_after = retry_after_seconds(exc.response.headers or {})
        garbled = error.startswith(NON_JSON)
        temporary = status == 429 or status >= 500 or error in TEMPORARY_ERRORS \
            or (garbled and status == 200)
        if garbled:
            body = error[len(NON_JSON):].lstrip(": ")
            what = render.single_line(f"HTTP {status} with a body that is not JSON: {body}", 300)
        else:
            what = (error if status == 200 else f"{error} (HTTP {status})") if error \
                else f"HTTP {status}"
        maybe = status >= 500 or error in MAYBE_DONE_ERRORS or (garbled and status == 200)
    elif isinstance(exc, JSONDecodeError):
        temporary = maybe = True
        what = render.single_line(f"HTTP 200 with a body that is not JSON: {exc.doc[:100]}",
                                  300)
    elif isinstance(exc, OSError | SlackClientError):  # refused, reset, timeout, DNS …
        temporary = True
        what = render.single_line(f"{type(exc).__name__}: {exc}", 300)
        refused = isinstance(exc, ConnectionRefusedError) or isinstance(
            getattr(exc, "reason", None), ConnectionRefusedError)
        maybe = not refused
    else:  # a bug of ours, or of the SDK: retrying the same message will not help
        temporary, maybe = False, False
        what = render.single_line(f"{type(exc).__name__}: {exc}", 300)
    detail = f"slack receiver {receiver!r}: {call} failed: {what}"
    return Delivery(ok=False, detail=_scrub(detail, secrets), temporary=temporary,
                    retry_after=retry_after if temporary else None,
                    maybe_delivered=maybe and temporary and call in POSTING_CALLS)


# slack_sdk's words for an answer whose body is not JSON (a proxy's page, a cut-off body).
NON_JSON = "Received a response in a non-JSON format"
# Calls that may have taken effect although no answer came: the next attempt looks first.
POSTING_CALLS = frozenset({"chat.postMessage", "files_upload_v2"})


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

    takes_followups = True  # its charts come as follow-ups (Message.follows)

    def __init__(self, name: str, *, token: str, channel: str, charts: bool = False,
                 base_url: str | None = None, timeout: float = 10.0,
                 retries: int = RETRIES):
        self.name = name
        self.channel = channel
        self.charts = charts
        self._token = token
        url = base_url or WebClient.BASE_URL
        self._client = WebClient(token=token, base_url=url, timeout=timeout,  # type: ignore[arg-type]
                                 retry_handlers=retry_handlers(retries))
        # Posts are not idempotent: a retry after a reset connection may post twice. The
        # outbox retries them instead, looking first.
        self._poster = WebClient(token=token, base_url=url, timeout=timeout,  # type: ignore[arg-type]
                                 retry_handlers=[])

    def close(self) -> None:
        pass  # urllib opens a connection per request; nothing is held

    def send(self, message: Message) -> Delivery:
        if message.follows:
            return self._send_followup(message)
        call = "chat.update"
        rewrites = self._rewrites(message)
        try:
            notes = self._update_resolved(message, rewrites)
            call = "conversations.history"
            found, looked = self._find_post(message)
            call = "chat.postMessage"
            channel, ts, thread_ts, restarted = found or self._post(message)
        except Exception as exc:  # a Notifier answers, never raises
            return classify(self.name, call, exc, secrets=(self._token,))
        if message.digest is not None:
            refs = {}
        else:
            refs = self._new_refs(message, channel, ts, threaded=thread_ts is not None,
                                  restarted=restarted)
            refs.update((f"shown:{value}", shown_ref(alerts))
                        for value, alerts in rewrites.items())
        if thread_ts is None and (channel_ref := self._channel_ref(message.refs, channel)):
            refs["channel"] = channel_ref
        where = f"{channel} thread {thread_ts}" if thread_ts else channel
        what = "the digest " if message.digest is not None else ""
        verb = "found" if found else "posted"
        detail = f"slack receiver {self.name!r}: {verb} {what}{ts} {'in' if found else 'to'}" \
                 f" {where}"
        if found:
            detail += " (posted by an earlier attempt; not posted again)"
        notes += looked
        if notes:
            detail += "; " + "; ".join(notes)
        return Delivery(ok=True, detail=_scrub(detail, (self._token,)), refs=refs,
                        followups=self._followups(message, f"{channel}:{thread_ts or ts}"))

    # --- steps ----------------------------------------------------------------------

    def _thread(self, message: Message) -> tuple[str, str] | None:
        if message.digest is not None:
            return None
        runs = {a.run.path for a in (*message.firing, *message.resolved)}
        if len(runs) > 1:
            return None  # news about several runs belongs in the channel, not one run's thread
        keys = [f"thread:{path}" for path in runs]
        values = [message.refs.get(key, "") for key in keys]
        if not message.firing:  # a resolve with no thread: reply to the announcement
            values += [value for a in message.resolved
                       for value in ref_list(message.refs, f"message:{a.fingerprint}")]
        found = (parse_ref(value) for value in values)
        return next((ref for ref in found if ref is not None), None)

    def _rewrites(self, message: Message) -> dict[str, list[AlertState]]:
        """Each message that showed an alert now resolved, with every alert it ever showed
        as it now stands: this message's state where it has one, else as last shown."""
        # (What was told once closes nothing an earlier message showed.)
        closed = [a for a in message.resolved if not told_once(a)]
        resolved = {a.fingerprint for a in closed}
        current = {a.fingerprint: a for a in render.ordered(message)}
        targets = dict.fromkeys(value for a in closed
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
                # One old message that cannot be rewritten (gone, too old, refused) must
                # not hold up the resolve; a rate limit or an outage tries again later.
                notes.append(f"not updated {ts}: {_temporary_or(exc) or 'failed'}")
        return notes

    def _post(self, message: Message) -> tuple[str, str, str | None, bool]:
        """Post the group; answers channel, ts, the thread it went into, and whether the
        run's thread was gone and a new one began."""
        thread = self._thread(message)
        channel, thread_ts = thread if thread else (self.channel, None)
        post = {**self._content(message), "unfurl_links": False, "unfurl_media": False,
                # chat.postMessage takes no idempotency key: the outbox id rides along as
                # message metadata, for the look-up before a post is repeated.
                "metadata": {"event_type": METADATA_EVENT,
                             "event_payload": {"outbox_id": message.id}}}
        try:
            response = self._poster.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                     **post)
        except SlackApiError as exc:
            if thread_ts is None or _error(exc) not in GONE_THREAD_ERRORS:
                raise
            # The thread's first message was deleted: start over at the top level.
            response = self._poster.chat_postMessage(channel=self.channel, **post)
            return str(response["channel"]), str(response["ts"]), None, True
        return str(response["channel"]), str(response["ts"]), thread_ts, False

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


    def _content(self, message: Message) -> dict[str, Any]:
        if message.digest is not None:
            return {"text": digest_fallback(message.digest), "blocks": list(message.digest.blocks)}
        return {"text": render.slack_fallback(message), "blocks": render.slack_blocks(message)}

    # --- exactly once -----------------------------------------------------------------

    def _find_post(self, message: Message
                   ) -> tuple[tuple[str, str, str | None, bool] | None, list[str]]:
        """The post an earlier attempt at ``message`` made, if it may have made one: in the
        thread it would have gone into, then in the channel (where a gone thread sends it);
        as :meth:`_post` answers. Also a note when it could not be looked for: then it is
        posted again (at least once). A temporary failure of a look-up raises: the outbox
        tries again later, still looking first."""
        if not message.maybe_sent:
            return None, []
        thread = self._thread(message)
        cannot = "posted again, it may show twice"
        for place in ("thread", "channel"):
            if place == "thread":
                if thread is None:
                    continue
                channel, thread_ts = thread
            else:
                channel, thread_ts = self._channel_id(message.refs), None
                if channel is None:
                    return None, ["not looked up (the channel's ID is unknown: the token"
                                  f" needs channels:read); {cannot}"]
            try:
                found = self._search(channel, thread_ts, message.created_at,
                                     lambda m: _outbox_id(m) == message.id)
            except SlackApiError as exc:
                error = _temporary_or(exc)
                if thread_ts is not None and error in GONE_THREAD_ERRORS:
                    continue  # the thread is gone: the post went to the channel, if at all
                return None, [f"not looked up ({error or 'failed'}); {cannot}"]
            if found is not None:
                # Found where it went; the refs it left (threads) stay as they now are.
                return (channel, str(found["ts"]), thread_ts, False), []
        return None, []

    def _search(self, channel: str, thread_ts: str | None, since: float,
                wanted: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any] | None:
        """The first message in ``channel`` (or in the thread ``thread_ts``) since
        ``since`` that is ``wanted``; at most HISTORY_PAGES pages."""
        cursor = None
        oldest = f"{max(since - CLOCK_SLACK, 0):.6f}"
        for _ in range(HISTORY_PAGES):
            if thread_ts is None:
                page = self._client.conversations_history(
                    channel=channel, oldest=oldest, include_all_metadata=True, limit=200,
                    cursor=cursor)
            else:
                page = self._client.conversations_replies(
                    channel=channel, ts=thread_ts, oldest=oldest, include_all_metadata=True,
                    limit=200, cursor=cursor)
            for item in page.get("messages") or []:
                if isinstance(item, Mapping) and wanted(item):
                    return item
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    def _channel_id(self, refs: Mapping[str, str]) -> str | None:
        """The configured channel's ID: itself when it is one, else as a post to it
        answered (ref ``channel``), else by name through ``conversations.list``."""
        if _is_channel_id(self.channel):
            return self.channel
        known, _, name = refs.get("channel", "").partition(" ")
        if known and name == self.channel:
            return known
        wanted = self.channel.lstrip("#")
        try:
            for page in self._client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=1000):
                for item in page.get("channels") or []:
                    if item.get("name") == wanted:
                        return str(item["id"])
        except SlackApiError as exc:
            _temporary_or(exc)  # a rate limit or an outage: ask again later
            return None  # missing_scope and the like: it cannot be known
        return None

    def _channel_ref(self, refs: Mapping[str, str], channel: str) -> str | None:
        """The ref ``channel`` to remember after a top-level post to ``channel``."""
        if _is_channel_id(self.channel) or refs.get("channel", "") == f"{channel} {self.channel}":
            return None
        return f"{channel} {self.channel}"

    # --- follow-ups: charts into the post's thread -------------------------------------

    def _followups(self, message: Message, thread: str) -> tuple[Message, ...]:
        if message.digest is not None:
            has_charts = message.digest.image is not None
        else:
            has_charts = self.charts and any(a.fingerprint in message.charts
                                             for a in message.firing)
        if not has_charts:
            return ()
        return (dataclasses.replace(message, id=f"{message.id}-charts", follows=thread,
                                    refs={}, maybe_sent=False),)

    def _send_followup(self, message: Message) -> Delivery:
        """Upload ``message``'s charts into the thread it follows; after an attempt that
        may have uploaded some, only those not in the thread yet."""
        ref = parse_ref(message.follows)
        if ref is None:
            return Delivery(ok=False, detail=f"slack receiver {self.name!r}: charts follow"
                            f" no post ({message.follows!r})")
        channel, thread_ts = ref
        uploads, notes = self._uploads(message)
        done: set[str] = set()

        def seen(item: Mapping[str, Any]) -> bool:
            done.update(str(f.get("name")) for f in item.get("files") or []
                        if isinstance(f, Mapping))
            return False  # read the whole thread

        if message.maybe_sent and uploads:
            try:
                self._search(channel, thread_ts, message.created_at, seen)
            except SlackApiError as exc:
                try:
                    error = _temporary_or(exc)
                except SlackApiError:
                    return classify(self.name, "conversations.replies", exc,
                                    secrets=(self._token,))
                if error in GONE_THREAD_ERRORS:  # the post is gone: its charts with it
                    return Delivery(ok=True, detail=f"slack receiver {self.name!r}: charts"
                                    f" not uploaded: the post's thread is gone ({error})")
                notes.append(f"not looked up ({error or 'failed'}); uploaded again, a chart"
                             " may show twice")
        try:
            for filename, title, alt, png in uploads:
                if filename in done:
                    continue
                self._client.files_upload_v2(channel=channel, thread_ts=thread_ts, file=png,
                                             filename=filename, title=title, alt_txt=alt)
                done.add(filename)
        except Exception as exc:  # a Notifier answers, never raises
            failed = classify(self.name, "files_upload_v2", exc, secrets=(self._token,))
            if done & {u[0] for u in uploads}:  # some are up: the retry must look first
                failed = dataclasses.replace(failed, maybe_delivered=failed.temporary)
            return failed
        detail = (f"slack receiver {self.name!r}: {len(uploads)} chart(s) in {channel}"
                  f" thread {thread_ts}")
        if notes:
            detail += "; " + "; ".join(notes)
        return Delivery(ok=True, detail=_scrub(detail, (self._token,)))

    def _uploads(self, message: Message) -> tuple[list[tuple[str, str, str, bytes]], list[str]]:
        """(filename, title, alt text, PNG) of each chart ``message`` carries."""
        digest = message.digest
        if digest is not None:
            return ([("digest.png", render.truncate(render.one_line(digest.title), 250),
                      "loss curves of the running runs", digest.image)]
                    if digest.image else []), []
        drawn, notes = firing_charts(message, MAX_CHARTS)
        return [(f"{alert.fingerprint}.png", render.truncate(chart_title(alert, chart), 250),
                 render.truncate(render.one_line(f"chart of {chart.metric}"), 1000), png)
                for alert, chart, png in drawn], notes

    # --- check ------------------------------------------------------------------------

    def check_online(self, timeout: float = 10.0) -> list[str]:
        """What this token cannot do that delivery relies on, one line each (nothing when
        all is well, or when Slack cannot be asked: sending will say so)."""
        try:
            answer = self._client.auth_test()
        except SlackApiError as exc:
            return [f"slack receiver {self.name!r}: auth.test failed: {_error(exc)}"]
        except Exception:  # unreachable now: the sends will report it
            return []
        header = next((v for k, v in (answer.headers or {}).items()
                       if k.lower() == "x-oauth-scopes"), None)
        if isinstance(header, list | tuple):
            header = header[0] if header else None
        if header is None:
            return []
        scopes = {s.strip() for s in str(header).split(",")}
        if scopes & set(HISTORY_SCOPES):
            return []
        return [f"slack receiver {self.name!r}: the token lacks channels:history"
                " (groups:history for a private channel): a post whose answer was lost is"
                " posted again rather than looked up (at least once, not exactly once)"]


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


def _error(exc: SlackApiError) -> str:
    data = exc.response.data
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def _outbox_id(item: Mapping[str, Any]) -> str | None:
    metadata = item.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != METADATA_EVENT:
        return None
    payload = metadata.get("event_payload")
    return str(payload.get("outbox_id")) if isinstance(payload, Mapping) else None


def _is_channel_id(channel: str) -> bool:
    return channel[:1] in ("C", "G", "D") and channel[1:].isalnum() and channel.isupper()


def _temporary_or(exc: SlackApiError) -> str:
    """Re-raise ``exc`` when trying again later may help (as :func:`classify` judges a
    failed call); else answer its error code."""
    if classify("", "", exc).temporary:
        raise exc
    return _error(exc)
