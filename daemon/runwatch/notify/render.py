"""The words of a notification, in every format a receiver speaks: plain text, Slack Block
Kit, HTML, and an email subject.

Run names, tags, metric keys and summaries come from whoever launched the run, so every
piece of them is treated as hostile here, once, for every receiver:

- Slack: untrusted text goes into ``plain_text`` objects (never parsed for mentions, links
  or formatting) wherever Block Kit allows; where it must sit in ``mrkdwn`` (a run's name
  as the label of its link, the compact list of a large group) ``&``, ``<`` and ``>`` are
  escaped — so no ``<!channel>``, ``<@U…>`` or ``<http://x|link>`` survives — and the
  formatting characters ``* _ ~ ` `` at a word's edge are fenced with zero-width spaces
  so they cannot open or close bold, italics, strikethrough or code (inside a word, as in
  ``grad_norm``, they cannot anyway, and stay as they are).
- HTML: ``html.escape``; only ``http(s)://`` locations become links.
- Email headers and one-line details: control characters (CR, LF, …) become spaces,
  then the length is capped (:func:`single_line`).
- A terminal: control and format characters become U+FFFD (:func:`printable`).

Slack's limits (header 150 characters, section text 3000, a field 2000, 50 blocks a
message) are met by construction: the first :data:`DETAILED` alerts get a section each,
the rest a line each in a compact list, and what even that cannot hold is counted.
"""

from __future__ import annotations

import html as _html
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runwatch.model import AlertState, AlertStatus, RunRef, Severity, told_once
from runwatch.notify.base import Message

MARK = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}
RESOLVED_MARK = "✅"

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
BLOCK_LIMIT = 50
DETAILED = 10  # alerts shown with a section each; the rest go to the compact list
FALLBACK_LIMIT = 3000  # the notification text; Slack truncates past 40,000 anyway

NAME_LIMIT = 120  # one untrusted name (run, rule, metric) where space is short
SUMMARY_LIMIT = 1000
SUBJECT_LIMIT = 200

# Control characters, line separators and bidi overrides/isolates (a run name must not
# reverse the text around it).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A marker between two letters or digits (grad_norm) can neither open nor close formatting;
# only those at a word's edge are fenced, so ordinary names stay copyable.
_FORMATTING = re.compile(r"(?<![^\W_])([*_~`])|([*_~`])(?![^\W_])")
_ZWSP = "\u200b"


# --- untrusted text -------------------------------------------------------------------

def one_line(text: str) -> str:
    """``text`` with every control character (CR, LF, TAB, NUL, …) turned into a space."""
    return _CONTROL.sub(" ", text)


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def single_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """One line, no control character, runs of spaces squeezed, at most ``limit`` long: fit
    for an email header or a receiver's one-line error detail."""
    return truncate(" ".join(one_line(text).split()), limit)


def printable(text: str) -> str:
    """``text`` with control and format characters (ESC, CR, RTL overrides) as U+FFFD, so
    an untrusted name can neither restyle nor rewrite a terminal."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def mrkdwn(text: str) -> str:
    """Untrusted ``text`` as inert Slack mrkdwn: shows as itself, mentions and links
    nothing, formats nothing."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _FORMATTING.sub(lambda m: _ZWSP + m.group() + _ZWSP, one_line(text))


def mrkdwn_code(text: str) -> str:
    """Untrusted ``text`` as a Slack inline code span (a backtick inside cannot close it)."""
    text = one_line(text).replace("`", "ˋ")
    return "`" + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "`"


def run_link(run: RunRef) -> str | None:
    """The run's page, when its location is one (W&B runs); None for a run directory."""
    location = run.location.strip()
    if location.lower().startswith(("http://", "https://")) and not _CONTROL.search(location):
        return location
    return None


def _slack_url(url: str) -> str:
    # Inside <url|label> only these three would end or split the link.
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def slack_run(run: RunRef, limit: int = NAME_LIMIT) -> str:
    """The run's name in mrkdwn, linked to its page, or followed by its directory as code."""
    label = mrkdwn(truncate(run.display_name, limit))
    url = run_link(run)
    if url is not None:
        return f"<{_slack_url(url)}|{label}>"
    if run.location:
        return f"{label} {mrkdwn_code(truncate(run.location, 2 * limit))}"
    return label


# --- shared words ---------------------------------------------------------------------

def ordered(message: Message) -> tuple[AlertState, ...]:
    """Firing alerts and those told once (what the training code raised), most severe
    first (stable among equals), then resolved ones. The first is the group's *lead*: it
    names the subject and its run keys Slack threads."""
    news = sorted((*message.firing, *(a for a in message.resolved if told_once(a))),
                  key=lambda a: -a.severity.rank)
    return (*news, *(a for a in message.resolved if not told_once(a)))


def format_value(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``2h 5m``, ``3d 4h``."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        rest = minutes % 60
        return f"{hours}h {rest}m" if rest else f"{hours}h"
    rest = hours % 24
    return f"{days}d {rest}h" if rest else f"{days}d"


def since(alert: AlertState) -> float | None:
    return alert.fired_at if alert.fired_at is not None else alert.active_since


def age(alert: AlertState, now: float) -> str:
    """How long the alert has fired (or did, until it resolved), as of ``now``."""
    if told_once(alert):
        return "told once"
    start = since(alert)
    if start is None:
        resolved = alert.status is AlertStatus.RESOLVED and alert.resolution
        return f"resolved ({alert.resolution})" if resolved else ""
    if alert.status is AlertStatus.RESOLVED:
        end = alert.resolved_at if alert.resolved_at is not None else now
        why = f" ({alert.resolution})" if alert.resolution else ""
        return f"resolved after {duration(end - start)}{why}"
    return f"firing for {duration(now - start)}"


def measurement(alert: AlertState) -> str:
    """``grad_norm = 450 at step 43, since step 35 (10.4), now 380``: the worst point, where
    the condition began (its first bad point) and the newest value — the parts known."""
    parts = []
    if alert.metric:
        parts.append(one_line(truncate(alert.metric, NAME_LIMIT)))
    if alert.value is not None:
        parts.append(("= " if parts else "value ") + format_value(alert.value))
    if alert.step is not None:
        parts.append(f"at step {alert.step}")
    text = " ".join(parts)
    if alert.since_step is not None and alert.since_step != alert.step:
        first = f" ({format_value(alert.first_value)})" if alert.first_value is not None else ""
        text += f", since step {alert.since_step}{first}"
    if alert.latest_value is not None and alert.latest_step not in (None, alert.step):
        text += f", now {format_value(alert.latest_value)}"
    return text


def severity_word(alert: AlertState) -> str:
    if alert.status is AlertStatus.RESOLVED and not told_once(alert):
        return "RESOLVED"
    return str(alert.severity).upper()


def mark(alert: AlertState) -> str:
    if alert.status is AlertStatus.RESOLVED and not told_once(alert):
        return RESOLVED_MARK
    return MARK.get(alert.severity, "⚪")


def headline(message: Message) -> str:
    """``CRITICAL grad-norm-exploding: llama-7b (+2 more)``; raw (not escaped) text."""
    if not message.firing and not message.resolved:
        return f"{message.group_key}: nothing to report"
    return title(message.firing, message.resolved)


def title(firing: Sequence[AlertState], resolved: Sequence[AlertState] = ()) -> str:
    """The headline of some alerts: the lead's severity, rule and run, and a count (what
    was told once counts with what fires)."""
    news = [*firing, *(a for a in resolved if told_once(a))]
    closed = [a for a in resolved if not told_once(a)]
    lead = sorted(news, key=lambda a: -a.severity.rank)[0] if news else closed[0]
    word = str(lead.severity).upper() if news else "RESOLVED"
    count = len(news) if news else len(closed)
    more = f" (+{count - 1} more)" if count > 1 else ""
    if news and closed:
        more += f", {len(closed)} resolved"
    return (f"{word} {truncate(lead.rule, NAME_LIMIT)}: "
            f"{truncate(lead.run.display_name, NAME_LIMIT)}{more}")


def subject(message: Message) -> str:
    """The email subject: ``[runwatch] CRITICAL grad-norm-exploding: llama-7b (+2 more)``."""
    return single_line(f"[runwatch] {headline(message)}")


# --- plain text -----------------------------------------------------------------------

def text(message: Message) -> str:
    """The whole message as plain text (email's text part, logs, ``notify-test``)."""
    lines = [one_line(headline(message)), ""]
    shown = ordered(message)
    firing = [a for a in shown if a.status is AlertStatus.FIRING]
    told = [a for a in shown if told_once(a)]
    closed = [a for a in message.resolved if not told_once(a)]
    for title, alerts in (("FIRING", firing), ("RAISED BY THE TRAINING CODE", told),
                          ("RESOLVED", closed)):
        if not alerts:
            continue
        lines.append(f"{title} ({len(alerts)})")
        for alert in alerts:
            lines.extend(_text_alert(alert, message.created_at))
        lines.append("")
    lines.append(f"-- runwatch, group {one_line(message.group_key)}")
    return "\n".join(lines) + "\n"


def _text_alert(alert: AlertState, now: float) -> list[str]:
    run = one_line(alert.run.display_name)
    lines = [f"- [{severity_word(alert)}] {one_line(alert.rule)}: {run}"]
    where = run_link(alert.run) or one_line(alert.run.location or alert.run.path)
    lines.append(f"  run: {where}")
    detail = ", ".join(p for p in (measurement(alert), age(alert, now)) if p)
    if detail:
        lines.append(f"  {detail}")
    if alert.summary:
        lines.append(f"  {one_line(truncate(alert.summary, SUMMARY_LIMIT))}")
    return lines


# --- Slack Block Kit ------------------------------------------------------------------

def _plain(text: str, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(one_line(text), limit) or " ",
            "emoji": True}


def _md(text: str) -> dict[str, Any]:
    # verbatim: Slack must not turn bare URLs, channel names or @mentions in untrusted text
    # into links or pings; what should be a link is written as one.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def slack_alert_blocks(alert: AlertState, now: float) -> list[dict[str, Any]]:
    """One alert: a section (severity, run link; fields: rule, measurement, age) and, when
    it has one, its summary as plain text in a context block."""
    fields = [_plain(text, FIELD_LIMIT)
              for text in (f"Rule: {alert.rule}", measurement(alert), age(alert, now).capitalize())
              if text]
    blocks: list[dict[str, Any]] = [{
        "type": "section",
        "text": _md(f"{mark(alert)} *{severity_word(alert)}* {slack_run(alert.run)}"),
        "fields": fields,
    }]
    if alert.summary:
        blocks.append({"type": "context",
                       "elements": [_plain(alert.summary, SUMMARY_LIMIT)]})
    return blocks


def compact_line(alert: AlertState) -> str:
    """One alert as one mrkdwn line of the compact list."""
    value = measurement(alert)
    tail = f" · {mrkdwn(truncate(value, 2 * NAME_LIMIT // 3))}" if value else ""
    line = (f"• {mark(alert)} {mrkdwn(truncate(alert.rule, NAME_LIMIT // 2))} · "
            f"{slack_run(alert.run, NAME_LIMIT // 2)}{tail}")
    if len(line) > SECTION_LIMIT // 4:  # a pathological URL or name: drop the link
        line = (f"• {mark(alert)} {mrkdwn(truncate(alert.rule, 40))} · "
                f"{mrkdwn(truncate(alert.run.display_name, 40))}")
    return line


def slack_blocks(message: Message, alerts: Sequence[AlertState] | None = None,
                 *, title: str | None = None) -> list[dict[str, Any]]:
    """Block Kit for ``alerts`` (default: the whole group), within Slack's limits."""
    alerts = ordered(message) if alerts is None else tuple(alerts)
    heading = title if title is not None else headline(message)
    lead_mark = mark(alerts[0]) if alerts else RESOLVED_MARK
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{lead_mark} {heading}", HEADER_LIMIT)}
    ]
    detailed, rest = alerts[:DETAILED], alerts[DETAILED:]
    for alert in detailed:
        blocks.extend(slack_alert_blocks(alert, message.created_at))
    if rest:
        room = BLOCK_LIMIT - len(blocks) - 1  # keep one for "… not shown"
        sections, shown = _pack(compact_line(a) for a in rest), 0
        for section in sections[:room]:
            blocks.append({"type": "section", "text": _md(section[0])})
            shown += section[1]
        hidden = len(rest) - shown
        if hidden:
            blocks.append({"type": "context", "elements": [
                _plain(f"… and {hidden} more alerts not shown (Slack's message limits)")]})
    return blocks


def _pack(lines: Iterable[str]) -> list[tuple[str, int]]:
    """Lines joined into texts of at most SECTION_LIMIT characters, with their counts."""
    packed: list[tuple[str, int]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + 1 + len(line) > SECTION_LIMIT:
            packed.append(("\n".join(current), len(current)))
            current, size = [], 0
        current.append(line)
        size += len(line) + (1 if len(current) > 1 else 0)
    if current:
        packed.append(("\n".join(current), len(current)))
    return packed


def slack_fallback(message: Message, alerts: Sequence[AlertState] | None = None,
                   *, title: str | None = None) -> str:
    """The ``text`` beside the blocks (notifications, screen readers): mrkdwn, escaped."""
    alerts = ordered(message) if alerts is None else tuple(alerts)
    heading = title if title is not None else headline(message)
    lines = [mrkdwn(heading)]
    lines += [f"{mark(a)} {mrkdwn(truncate(a.summary, 300))}" for a in alerts[:3] if a.summary]
    return truncate("\n".join(lines), FALLBACK_LIMIT)


# --- HTML -----------------------------------------------------------------------------

_SEVERITY_COLOUR = {"CRITICAL": "#c62828", "WARNING": "#ef6c00", "INFO": "#1565c0",
                    "RESOLVED": "#2e7d32"}


def _h(text: str) -> str:
    return _html.escape(one_line(text), quote=True)


def html(message: Message, *, images: Mapping[str, str] | None = None) -> str:
    """The whole message as an HTML document; ``images`` maps an alert's fingerprint to
    the ``cid:`` (without the brackets) of its inline chart."""
    images = images or {}
    rows = []
    for alert in ordered(message):
        word = severity_word(alert)
        url = run_link(alert.run)
        name = _h(alert.run.display_name)
        run = (f'<a href="{_h(url)}">{name}</a>' if url
               else f"{name} <code>{_h(alert.run.location or alert.run.path)}</code>")
        detail = ", ".join(p for p in (measurement(alert), age(alert, message.created_at)) if p)
        cells = [
            f'<span style="color:{_SEVERITY_COLOUR.get(word, "#000")};font-weight:bold">'
            f"{_h(word)}</span> <b>{_h(alert.rule)}</b>: {run}",
        ]
        if detail:
            cells.append(f"<br>{_h(detail)}")
        if alert.summary:
            cells.append(f"<br><i>{_h(truncate(alert.summary, SUMMARY_LIMIT))}</i>")
        if alert.fingerprint in images:
            cells.append(f'<br><img src="cid:{_h(images[alert.fingerprint])}" '
                         f'alt="{_h(alert.metric or "chart")}" width="600">')
        rows.append(f'<li style="margin-bottom:12px">{"".join(cells)}</li>')
    return (
        "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n"
        f"<h2>{_h(headline(message))}</h2>\n<ul>\n" + "\n".join(rows) + "\n</ul>\n"
        f'<p style="color:#777;font-size:small">runwatch, group {_h(message.group_key)}</p>\n'
        "</body></html>\n"
    )
