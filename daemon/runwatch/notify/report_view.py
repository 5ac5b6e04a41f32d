"""Health reports on a terminal: rich tables with sparklines.

Run names, config values and metric keys are untrusted: they go into ``Text`` objects
(rich markup is never interpreted) through ``printable`` (terminal escapes and bidi
overrides shown as U+FFFD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from runwatch.analysis.characterize import Health, RunReport
from runwatch.analysis.compare import Aligned, Comparison
from runwatch.analysis.watch import WatchReport
from runwatch.duration import format_duration
from runwatch.model import Series
from runwatch.notify.digest_render import when
from runwatch.notify.render import format_value, printable

HEALTH_STYLE = {Health.HEALTHY: "green", Health.WARNING: "yellow", Health.CRITICAL: "bold red"}
HEALTH_MARK = {Health.HEALTHY: "●", Health.WARNING: "▲", Health.CRITICAL: "✖"}
BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 24


def sparkline(series: Series | None, width: int = SPARK_WIDTH) -> str:
    """The curve in ``width`` block characters (each the mean of its share of points);
    a non-finite stretch is ``×``."""
    if series is None or not series.values:
        return ""
    values = series.values
    n = len(values)
    width = min(width, n)
    buckets = []
    for i in range(width):
        part = values[i * n // width:(i + 1) * n // width] or values[-1:]
        finite = [v for v in part if math.isfinite(v)]
        buckets.append(math.fsum(finite) / len(finite) if finite else math.nan)
    finite = [b for b in buckets if math.isfinite(b)]
    if not finite:
        return "×" * width
    lo, hi = min(finite), max(finite)
    span = hi - lo
    return "".join("×" if not math.isfinite(b) else
                   BARS[0 if span == 0 else min(7, int((b - lo) / span * 8))] for b in buckets)


def ago(seconds: float | None) -> str:
    return "—" if seconds is None else f"{format_duration(seconds)} ago"


def health_text(health: Health) -> Text:
    return Text(f"{HEALTH_MARK[health]} {health}", style=HEALTH_STYLE[health])


def _when(seconds: float | None) -> str:
    return "—" if seconds is None else when(seconds)


def progress_text(r: RunReport) -> str:
    pace = r.pace
    step = "—" if pace.step is None else f"{pace.step:,}"
    if pace.total:
        step += f" / {pace.total:,} ({pace.fraction:.0%})"
    return step


def eta_text(r: RunReport) -> str:
    if r.ended:
        return "ended"
    if r.pace.eta is not None:
        return format_duration(r.pace.eta)
    return "unknown" if not r.pace.total else "unknown (no pace)"


def characterize_view(r: RunReport) -> RenderableType:
    title = Text.assemble(health_text(r.health), "  ",
                          Text(printable(r.run.display_name), style="bold"), "  ",
                          Text(printable(r.run.path), style="dim"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("state", Text(f"{r.state} ({r.liveness})"))
    for reason in r.reasons:
        facts.add_row(Text(str(reason.severity), style=HEALTH_STYLE[Health(
            "critical" if reason.severity == "critical" else "warning")]),
            Text(printable(reason.text) + (f"  ({reason.rule})" if reason.rule else "")))
    if r.loss is not None:
        loss = r.loss
        change = f"{loss.change:+.1%}, " if loss.finite else ""
        facts.add_row("loss", Text(
            f"{printable(r.loss_key or '')}: {format_value(loss.first)} → "
            f"{format_value(loss.last)} ({change}{loss.direction})  "
            f"{sparkline(r.curves.get('loss'))}"))
    else:
        facts.add_row("loss", "not logged")
    if r.grad is not None:
        g = r.grad
        verdict = "ok" if g.ok else "holding: " + ", ".join(g.holding)
        bounds = "; ".join(g.bounds) or "no rule on it"
        facts.add_row("grad norm", Text(
            f"{printable(g.key)}: {format_value(g.latest)} (recent max "
            f"{format_value(g.recent_max)}), {verdict}  {sparkline(r.curves.get('grad_norm'))}"
            f"\nrules: {printable(bounds)}"))
    for e in r.evals:
        facts.add_row("eval", Text(f"{printable(e.key)}: {format_value(e.latest)} at step "
                                   f"{e.latest_step:,} (best {format_value(e.best)} at step "
                                   f"{e.best_step:,})"))
    facts.add_row("heartbeat", ago(r.heartbeat_age))
    facts.add_row("last row", ago(r.progress_age))
    facts.add_row("step", Text(progress_text(r) + (f"  ({printable(r.pace.step_key)})"
                                                   if r.pace.step_key else "")))
    if r.pace.rate:
        facts.add_row("pace", f"{r.pace.rate * 3600:,.0f} steps/h")
    if r.tokens_per_s is not None:
        facts.add_row("tokens/s", format_value(r.tokens_per_s))
    facts.add_row("ETA", Text(eta_text(r) + (f" (total from {printable(r.pace.total_from)})"
                                             if r.pace.total_from and not r.ended else "")))
    facts.add_row("started", _when(r.started))
    if r.config:
        facts.add_row("config", Text(printable(", ".join(
            f"{k}={_short(v)}" for k, v in r.config.items()))))
    return Group(title, facts)


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def watch_view(w: WatchReport) -> RenderableType:
    parts: list[RenderableType] = []
    running = Table("health", "run", "step", "ETA", "loss", "reasons", box=None,
                    title=f"{len(w.running)} running", title_justify="left")
    for r in w.running:
        running.add_row(health_text(r.health), Text(printable(r.run.display_name)),
                        progress_text(r), eta_text(r),
                        sparkline(r.curves.get("loss"), 12),
                        Text(printable("; ".join(x.text for x in r.reasons[:2]))))
    parts.append(running)
    ended = Table("outcome", "run", "step", "ended", "health", "reasons", box=None,
                  title=f"{len(w.ended)} ended since {_when(w.since)}", title_justify="left")
    for state, runs in w.by_outcome().items():
        for r in runs:
            ended.add_row(str(state), Text(printable(r.run.display_name)), progress_text(r),
                          ago(None if r.last_seen is None else w.now - r.last_seen),
                          health_text(r.health),
                          Text(printable("; ".join(x.text for x in r.reasons[:2]))))
    parts.append(ended)
    return Group(*parts)


def _aligned_rows(table: Table, name: str, points: Sequence[Aligned]) -> None:
    for p in points:
        table.add_row(f"{name} @ {p.step:,}", format_value(p.a), format_value(p.b))


def compare_view(c: Comparison) -> RenderableType:
    a, b = c.a, c.b
    table = Table(box=None)
    table.add_column("")
    table.add_column(Text(printable(a.run.display_name)))
    table.add_column(Text(printable(b.run.display_name)))
    table.add_row("health", health_text(a.health), health_text(b.health))
    table.add_row("state", str(a.state), str(b.state))
    table.add_row("step", progress_text(a), progress_text(b))
    for key, va, vb in c.config[:20]:
        table.add_row(Text(printable(key)), Text(printable(_short(va))),
                      Text(printable(_short(vb))))
    if len(c.config) > 20:
        table.add_row(f"… {len(c.config) - 20} more config differences", "", "")
    _aligned_rows(table, "loss", c.loss)
    _aligned_rows(table, "grad norm", c.grad_norm)
    for e in c.evals:
        at = f" @ {e.step:,}" if e.step is not None else " (latest)"
        table.add_row(Text(printable(e.key) + at), format_value(e.a), format_value(e.b))
    table.add_row("steps/h", _rate(a.pace.rate), _rate(b.pace.rate))
    table.add_row("tokens/s", format_value(a.tokens_per_s), format_value(b.tokens_per_s))
    names = {"a": a.run.display_name, "b": b.run.display_name}
    verdict = (f"winner: {printable(names[c.winner])}" if c.winner else "no clear winner")
    return Group(table, Text(verdict, style="bold"),
                 *(Text("  " + printable(reason)) for reason in c.reasons))


def _rate(rate: float | None) -> str:
    return "—" if not rate else f"{rate * 3600:,.0f}"


def digest_view(digest: Any, zone: Any = None) -> RenderableType:
    """The digest on a terminal: what its Slack message says, as tables."""
    from runwatch.notify import digest_render as words

    parts: list[RenderableType] = [
        Text(words.title(digest, zone), style="bold"),
        Text(words.period(digest, zone), style="dim"),
        Text(words.summary_line(digest)),
    ]
    for s in digest.sections:
        parts.append(Text(f"\n{printable(s.project)}", style="bold underline"))
        if s.running:
            table = Table("health", "run", "step", "ETA", "loss", "reason", box=None,
                          title=f"running ({len(s.running)})", title_justify="left")
            for r in s.running:
                table.add_row(health_text(r.health), Text(printable(r.run.display_name)),
                              progress_text(r), eta_text(r), sparkline(r.curves.get("loss"), 12),
                              Text(printable(r.reasons[0].text if r.reasons else "")))
            parts.append(table)
        if s.ended:
            table = Table("outcome", "run", "step", "health", "reason", box=None,
                          title=f"ended ({len(s.ended)})", title_justify="left")
            for r in s.ended:
                table.add_row(str(r.state), Text(printable(r.run.display_name)),
                              progress_text(r), health_text(r.health),
                              Text(printable(r.reasons[0].text if r.reasons else "")))
            parts.append(table)
        for heading, alerts in (("alerts fired", s.fired), ("still firing", s.firing)):
            if not alerts:
                continue
            table = Table("", "rule", "run", "summary", box=None,
                          title=f"{heading} ({len(alerts)})", title_justify="left")
            for a in alerts:
                mark, what, why = words.alert_words(a)
                table.add_row(mark, Text(printable(what)), Text(printable(a.run.display_name)),
                              Text(printable(why)))
            parts.append(table)
    if not digest.sections:
        parts.append(Text("Nothing ran and nothing fired."))
    for error in digest.errors:
        parts.append(Text(f"not read: {printable(error)}", style="yellow"))
    return Group(*parts)
