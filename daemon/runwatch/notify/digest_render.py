"""The digest in every format a receiver speaks: plain text, Slack Block Kit, HTML and a
webhook's JSON body — all read from one ``analysis.digest.Digest``.

Untrusted text (run names, rule summaries, project names) is handled as ``render`` does
for alerts: escaped for mrkdwn and HTML, control characters removed. Long digests stay
readable and within Slack's limits (50 blocks, 3,000 characters a section): each project
shows at most ``LIST_LIMIT`` lines of a kind, the rest counted ("… and 40 more"), and what
the message cannot hold at all is counted at its end.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runwatch.analysis.characterize import Health, RunReport
from runwatch.analysis.digest import Digest
from runwatch.duration import format_duration
from runwatch.model import AlertState, AlertStatus, told_once
from runwatch.notify import render
from runwatch.notify.render import (
    BLOCK_LIMIT,
    HEADER_LIMIT,
    MARK,
    RESOLVED_MARK,
    _h,
    _pack,
    mrkdwn,
    slack_run,
    truncate,
)
from runwatch.notify.report_json import SCHEMA_VERSION, number, run_json

LIST_LIMIT = 25  # lines of one kind (running, ended, fired, firing) per project
# Slack renders a message of more than ~40,000 characters cut or not at all: a digest's
# blocks stay well below, whole projects left out (and counted) past it.
SLACK_CHARACTERS = 30_000
HEALTH_MARK = {Health.CRITICAL: "🔴", Health.WARNING: "🟠", Health.HEALTHY: "🟢"}
OUTCOME_MARK = {"crashed": "💥", "failed": "❌", "killed": "⛔", "preempted": "⏸",
                "finished": "🏁"}


def _zone(zone: zoneinfo.ZoneInfo | None) -> Any:
    return zone or UTC


def when(seconds: float, zone: zoneinfo.ZoneInfo | None = None) -> str:
    moment = datetime.fromtimestamp(seconds, _zone(zone))
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def title(digest: Digest, zone: zoneinfo.ZoneInfo | None = None) -> str:
    day = datetime.fromtimestamp(digest.end, _zone(zone)).strftime("%a %d %b %Y")
    return f"runwatch digest, {day}"


def summary_line(digest: Digest) -> str:
    """``12 running (1 critical, 2 warning) · 5 ended (1 crashed, 4 finished) · 7 alerts
    fired, 3 still firing``."""
    health = digest.health_counts()
    bad = ", ".join(f"{n} {h}" for h in (Health.CRITICAL, Health.WARNING) if (n := health[h]))
    parts = [f"{len(digest.running)} running" + (f" ({bad})" if bad else "")]
    outcomes = ", ".join(f"{n} {state}" for state, n in digest.outcome_counts().items())
    parts.append(f"{len(digest.ended)} ended" + (f" ({outcomes})" if outcomes else ""))
    parts.append(f"{len(digest.fired)} alerts fired, {len(digest.firing)} still firing")
    return " · ".join(parts)


def period(digest: Digest, zone: zoneinfo.ZoneInfo | None = None) -> str:
    return f"{when(digest.start, zone)} to {when(digest.end, zone)}"


# --- one line per thing, in words shared by every format ---------------------------------

def _pace(r: RunReport) -> str:
    pace = r.pace
    if pace.step is None:
        return "no step yet"
    text = f"step {pace.step:,}"
    if pace.total:
        text += f"/{pace.total:,} ({pace.fraction:.0%})"
    if not r.ended and pace.eta is not None:
        text += f", ETA {format_duration(pace.eta)}"
    return text


def _why(r: RunReport) -> str:
    return r.reasons[0].text if r.reasons else ""


def running_words(r: RunReport) -> tuple[str, str, str]:
    """(mark, pace, reason) of a running run."""
    return HEALTH_MARK[r.health], _pace(r), _why(r)


def ended_words(r: RunReport) -> tuple[str, str, str]:
    return OUTCOME_MARK.get(str(r.state), "•"), f"{r.state} at {_pace(r)}", _why(r)


def alert_mark(alert: AlertState) -> str:
    if alert.status == AlertStatus.RESOLVED and not told_once(alert):
        return RESOLVED_MARK
    return MARK[alert.severity]


def alert_words(alert: AlertState) -> tuple[str, str, str]:
    state = str(alert.severity) if alert.status != AlertStatus.RESOLVED else (
        f"{alert.severity}, told once" if told_once(alert) else "resolved")
    return alert_mark(alert), f"{alert.rule} ({state})", alert.summary


# --- plain text ------------------------------------------------------------------------

def _text_lines(items: Sequence[Any], words: Callable[[Any], tuple[str, str, str]],
                name: Callable[[Any], str], heading: str) -> list[str]:
    if not items:
        return []
    lines = [f"  {heading} ({len(items)}):"]
    for item in items[:LIST_LIMIT]:
        mark, what, why = words(item)
        line = f"    {mark} {render.one_line(truncate(name(item), 80))} — {what}"
        if why:
            line += f" — {render.one_line(truncate(why, 200))}"
        lines.append(line)
    if len(items) > LIST_LIMIT:
        lines.append(f"    … and {len(items) - LIST_LIMIT} more")
    return lines


def _run_name(r: RunReport) -> str:
    return r.run.display_name


def _alert_name(a: AlertState) -> str:
    return a.run.display_name


def text(digest: Digest, zone: zoneinfo.ZoneInfo | None = None) -> str:
    lines = [title(digest, zone), period(digest, zone), summary_line(digest), ""]
    for s in digest.sections:
        lines.append(f"{render.one_line(s.project)}:")
        lines += _text_lines(s.running, running_words, _run_name, "running")
        lines += _text_lines(s.ended, ended_words, _run_name, "ended")
        lines += _text_lines(s.fired, alert_words, _alert_name, "alerts fired")
        lines += _text_lines(s.firing, alert_words, _alert_name, "still firing")
        lines.append("")
    if not digest.sections:
        lines.append("Nothing ran and nothing fired.")
    for error in digest.errors:
        lines.append(f"not read: {render.one_line(error)}")
    return "\n".join(lines).rstrip() + "\n"


# --- Slack -----------------------------------------------------------------------------

SLACK_LINE = 250  # characters a Slack line takes, about: sizes the lists to the budget


def _slack_line(mark: str, name: str, what: str, why: str) -> str:
    line = f"{mark} {name} — {mrkdwn(what)}"
    return line + (f" — {mrkdwn(truncate(why, 120))}" if why else "")


def _slack_lines(items: Sequence[Any], words: Callable[[Any], tuple[str, str, str]],
                 heading: str, limit: int, *, count: int | None = None,
                 note: str = "") -> list[str]:
    """The lines of one kind in one project, the unshown counted."""
    if not items and not note:
        return []
    lines = [f"*{heading}* ({len(items) if count is None else count})"]
    for item in items[:limit]:
        mark, what, why = words(item)
        lines.append(_slack_line(mark, slack_run(item.run, 60), what, why))
    if len(items) > limit:
        lines.append(f"… and {len(items) - limit} more")
    if note:
        lines.append(note)
    return lines


def slack_blocks(digest: Digest, zone: zoneinfo.ZoneInfo | None = None
                 ) -> list[dict[str, Any]]:
    """Block Kit: a header, the period and the counts, then a section per project —
    within Slack's limits, the lists shortened to share the room fairly among projects."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": truncate(f"📋 {title(digest, zone)}", HEADER_LIMIT)}},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": mrkdwn(period(digest, zone))}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(summary_line(digest))}},
    ]
    lists = sum(bool(s.running) + bool(s.ended) + bool(s.fired) + bool(s.firing)
                for s in digest.sections)
    limit = max(3, min(LIST_LIMIT, SLACK_CHARACTERS // SLACK_LINE // max(lists, 1)))
    wanted: list[list[dict[str, Any]]] = []  # a project's blocks, in order
    for s in digest.sections:
        fired = {a.fingerprint for a in s.fired}
        older = [a for a in s.firing if a.fingerprint not in fired]
        again = len(s.firing) - len(older)
        lines = [f"*{mrkdwn(truncate(s.project, 100))}*"]
        lines += _slack_lines(s.running, running_words, "Running", limit)
        lines += _slack_lines(s.ended, ended_words, "Ended", limit)
        lines += _slack_lines(s.fired, alert_words, "Alerts fired", limit)
        if s.firing:
            lines += _slack_lines(older, alert_words, "Still firing", limit,
                                  count=len(s.firing),
                                  note=f"(and {again} fired above)" if again else "")
        wanted.append([{"type": "divider"}] + [
            {"type": "section", "text": {"type": "mrkdwn", "text": packed}}
            for packed, _ in _pack(lines)])
    room = BLOCK_LIMIT - len(blocks) - 1 - (1 if digest.errors else 0)
    characters = SLACK_CHARACTERS
    left_out = 0
    for i, mine in enumerate(wanted):
        size = sum(len(b["text"]["text"]) for b in mine if "text" in b)
        if len(mine) > room or size > characters:
            left_out = len(wanted) - i
            break
        blocks += mine
        room -= len(mine)
        characters -= size
    if left_out:
        blocks.append({"type": "context", "elements": [{"type": "plain_text", "text":
                       f"… and {left_out} more projects not shown (Slack's message limits)"}]})
    if digest.errors:
        errors = "; ".join(digest.errors)
        blocks.append({"type": "context", "elements": [
            {"type": "plain_text", "text": truncate(f"not read: {render.one_line(errors)}",
                                                    2000)}]})
    return blocks


def slack_fallback(digest: Digest, zone: zoneinfo.ZoneInfo | None = None) -> str:
    return truncate(mrkdwn(f"{title(digest, zone)}: {summary_line(digest)}"), 3000)


# --- HTML ------------------------------------------------------------------------------

_COLOUR = {Health.CRITICAL: "#c62828", Health.WARNING: "#ef6c00", Health.HEALTHY: "#2e7d32"}


def _html_run(r: RunReport) -> str:
    url = render.run_link(r.run)
    name = _h(truncate(r.run.display_name, 120))
    return f'<a href="{_h(url)}">{name}</a>' if url else name


def _html_list(items: Sequence[Any], words: Callable[[Any], tuple[str, str, str]],
               name: Callable[[Any], str], heading: str) -> str:
    if not items:
        return ""
    rows = []
    for item in items[:LIST_LIMIT]:
        mark, what, why = words(item)
        rows.append(f"<li>{_h(mark)} {name(item)} — {_h(what)}"
                    + (f" — <i>{_h(truncate(why, 300))}</i>" if why else "") + "</li>")
    if len(items) > LIST_LIMIT:
        rows.append(f"<li>… and {len(items) - LIST_LIMIT} more</li>")
    return f"<h4>{_h(heading)} ({len(items)})</h4>\n<ul>\n" + "\n".join(rows) + "\n</ul>\n"


def html(digest: Digest, *, image_cid: str | None = None,
         zone: zoneinfo.ZoneInfo | None = None) -> str:
    def run_name(r: RunReport) -> str:
        return _html_run(r)

    def alert_name(a: AlertState) -> str:
        url = render.run_link(a.run)
        name = _h(truncate(a.run.display_name, 120))
        return f'<a href="{_h(url)}">{name}</a>' if url else name

    parts = [
        "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n",
        f"<h2>{_h(title(digest, zone))}</h2>\n",
        f'<p style="color:#555">{_h(period(digest, zone))}</p>\n',
        f"<p><b>{_h(summary_line(digest))}</b></p>\n",
    ]
    if image_cid:
        parts.append(f'<p><img src="cid:{_h(image_cid)}" alt="loss curves of the running'
                     f' runs" width="720"></p>\n')
    for s in digest.sections:
        parts.append(f"<h3>{_h(s.project)}</h3>\n")
        parts.append(_html_list(s.running, running_words, run_name, "Running"))
        parts.append(_html_list(s.ended, ended_words, run_name, "Ended"))
        parts.append(_html_list(s.fired, alert_words, alert_name, "Alerts fired"))
        parts.append(_html_list(s.firing, alert_words, alert_name, "Still firing"))
    if not digest.sections:
        parts.append("<p>Nothing ran and nothing fired.</p>\n")
    for error in digest.errors:
        parts.append(f'<p style="color:#c62828">not read: {_h(error)}</p>\n')
    parts.append('<p style="color:#777;font-size:small">runwatch</p>\n</body></html>\n')
    return "".join(parts)


# --- webhook JSON -------------------------------------------------------------------------

def _alert_json(a: AlertState) -> dict[str, Any]:
    return {"rule": a.rule, "severity": str(a.severity), "status": str(a.status),
            "run": {"path": a.run.path, "name": a.run.display_name, "project": a.run.project,
                    "location": a.run.location},
            "summary": a.summary, "metric": a.metric, "value": number(a.value),
            "step": a.step, "fired_at": a.fired_at, "resolved_at": a.resolved_at}


def body(digest: Digest) -> dict[str, Any]:
    """The webhook body: ``kind: "digest"`` beside the alert notifications' shape."""
    return {
        "kind": "digest", "version": SCHEMA_VERSION,
        "period": {"start": digest.start, "end": digest.end},
        "summary": summary_line(digest),
        "totals": {"running": {str(h): n for h, n in digest.health_counts().items()},
                   "ended": {str(s): n for s, n in digest.outcome_counts().items()},
                   "fired": len(digest.fired), "firing": len(digest.firing)},
        "projects": [{
            "project": s.project,
            "running": [run_json(r) for r in s.running],
            "ended": [run_json(r) | {"ended_at": r.last_seen} for r in s.ended],
            "fired": [_alert_json(a) for a in s.fired],
            "firing": [_alert_json(a) for a in s.firing],
        } for s in digest.sections],
        "errors": list(digest.errors),
    }
