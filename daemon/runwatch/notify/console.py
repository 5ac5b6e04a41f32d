"""A receiver that prints: each message as a rich panel carrying what its Slack message would.

``runwatch demo`` sends through it, so what a newcomer sees is the pipeline's real output —
one panel per alert group, as Slack would get one message — with the words of
``render.py``: the header with its severity marker, then per alert the run, rule,
metric/value/step, firing age and summary. Run names, rules, metric keys and summaries are
untrusted: they go into ``Text`` objects (rich markup such as ``[bold red]`` is never
interpreted) with control and format characters (terminal escapes, bidi overrides) shown
as U+FFFD.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from runwatch.model import AlertState, AlertStatus, Severity, told_once
from runwatch.notify.base import Delivery, Message
from runwatch.notify.render import (
    DETAILED,
    NAME_LIMIT,
    RESOLVED_MARK,
    SUMMARY_LIMIT,
    age,
    headline,
    mark,
    measurement,
    ordered,
    printable,
    run_link,
    severity_word,
    truncate,
)

STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "bold yellow",
         Severity.INFO: "bold cyan"}
RESOLVED_STYLE = "bold green"


def _style(alert: AlertState) -> str:
    if alert.status is AlertStatus.RESOLVED and not told_once(alert):
        return RESOLVED_STYLE
    return STYLE.get(alert.severity, "bold")


def _detailed(alert: AlertState, now: float) -> Text:
    """One alert as Slack's section shows it: severity and run, then rule, measurement
    and age (the section's fields), then the summary (its context block)."""
    line = Text()
    line.append(f"{mark(alert)} ")
    line.append(severity_word(alert), style=_style(alert))
    line.append(" ")
    line.append(printable(truncate(alert.run.display_name, NAME_LIMIT)), style="bold")
    where = run_link(alert.run) or alert.run.location
    if where:
        line.append(f"  {printable(truncate(where, 2 * NAME_LIMIT))}", style="dim")
    fields = [f"Rule: {truncate(alert.rule, NAME_LIMIT)}", measurement(alert),
              age(alert, now).capitalize()]
    line.append("\n   " + "   ".join(printable(f) for f in fields if f))
    if alert.summary:
        line.append("\n   ")
        line.append(printable(truncate(alert.summary, SUMMARY_LIMIT)), style="italic")
    return line


def _compact(alert: AlertState) -> Text:
    """One alert as a line of Slack's compact list (past the first ``DETAILED``)."""
    parts = [truncate(alert.rule, NAME_LIMIT // 2),
             truncate(alert.run.display_name, NAME_LIMIT // 2), measurement(alert)]
    return Text(f"• {mark(alert)} " + " · ".join(printable(p) for p in parts if p))


def message_panel(message: Message, *, destination: str | None = None) -> Panel:
    """The rich panel for one message: what its Slack message carries, in a terminal."""
    alerts = ordered(message)
    lead = alerts[0] if alerts else None
    title = Text(f"{mark(lead) if lead else RESOLVED_MARK} ")
    title.append(printable(headline(message)), style=_style(lead) if lead else RESOLVED_STYLE)
    body: list[RenderableType] = [_detailed(a, message.created_at) for a in alerts[:DETAILED]]
    body += [_compact(a) for a in alerts[DETAILED:]]
    return Panel(
        Group(*body) if body else Text("nothing to report"),
        title=title, title_align="left",
        subtitle=Text(f"→ {printable(destination or message.receiver)}", style="dim"),
        subtitle_align="right",
        border_style=(_style(lead) if lead else RESOLVED_STYLE).removeprefix("bold "),
        expand=True,
    )


class ConsoleNotifier:
    """A :class:`~runwatch.notify.base.Notifier` printing to a console (or a file)."""

    def __init__(self, name: str, *, console: Console | None = None, file: IO[str] | None = None,
                 destination: str | None = None) -> None:
        self.name = name
        self.console = console if console is not None else Console(file=file)
        self.destination = destination
        self.sent: list[Message] = []  # what was printed, in order: the demo counts them

    def send(self, message: Message) -> Delivery:
        try:
            if message.digest is not None:
                self.console.print(Panel(Text(printable(message.digest.text)),
                                         title=Text(printable(message.digest.title)),
                                         title_align="left", expand=True))
            else:
                self.console.print(message_panel(message, destination=self.destination))
        except OSError as exc:  # a closed pipe or a full disk: the contract says report it
            return Delivery(ok=False, detail=f"cannot print: {exc}", temporary=False)
        self.sent.append(message)
        return Delivery(ok=True, detail="printed")

    def close(self) -> None:
        """Nothing to release: the console belongs to the caller."""
