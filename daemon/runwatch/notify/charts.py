"""A small PNG of the metric that fired: its points up to the firing point, the threshold
as a dashed line, the firing point marked.

Drawn with matplotlib's object API on the Agg canvas — no pyplot, so no global figure
state and no GUI backend, safe from any thread of the daemon. Metric keys are untrusted:
text is drawn with ``parse_math=False`` so a ``$`` in a key is a dollar, not mathtext.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runwatch.model import AlertState
from runwatch.notify import render
from runwatch.notify.base import Chart, Message

if TYPE_CHECKING:
    from runwatch.analysis.characterize import RunReport

MAX_POINTS = 2000  # more than a 600-pixel-wide chart can show
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chart_png(chart: Chart, *, title: str = "") -> bytes | None:
    """The chart as PNG bytes; None when it has no finite point to draw."""
    points = [(s, v) for s, v in zip(chart.steps, chart.values, strict=False)
              if isinstance(v, int | float)]
    if len(points) > MAX_POINTS:
        stride = math.ceil(len(points) / MAX_POINTS)
        kept = points[::stride]
        if kept[-1] != points[-1]:
            kept.append(points[-1])
        points = kept
    finite = [(s, v) for s, v in points if math.isfinite(v)]
    if not finite:
        return None

    figure = Figure(figsize=(6, 2.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = [s for s, _ in points]
    values = [v if math.isfinite(v) else math.nan for _, v in points]
    axes.plot(steps, values, linewidth=1.2, color="#1565c0")
    if chart.threshold is not None and math.isfinite(chart.threshold):
        axes.axhline(chart.threshold, color="#c62828", linestyle="--", linewidth=1,
                     label=f"threshold {chart.threshold:.4g}")
    fired = _firing_point(chart, finite)
    if fired is not None:
        axes.plot([fired[0]], [fired[1]], marker="o", markersize=7, color="#c62828",
                  linestyle="none", label=f"fired at step {fired[0]}")
    axes.set_xlabel("step", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.set_title(title or chart.metric, fontsize=9, loc="left", parse_math=False)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def chart_title(alert: AlertState, chart: Chart) -> str:
    """``rule · run · metric``, one line (untrusted parts: cap it where it is used)."""
    return render.one_line(f"{alert.rule} · {alert.run.display_name} · {chart.metric}")


def firing_charts(message: Message, limit: int
                  ) -> tuple[list[tuple[AlertState, Chart, bytes]], list[str]]:
    """PNGs of the charts ``message`` carries for its firing alerts, most severe first, at
    most ``limit``; and a note per chart that could not be drawn. A chart is a bonus: one
    that cannot be drawn must never cost the message it belongs to."""
    drawn: list[tuple[AlertState, Chart, bytes]] = []
    notes: list[str] = []
    for alert in render.ordered(message)[: len(message.firing)]:
        chart = message.charts.get(alert.fingerprint)
        if chart is None or len(drawn) >= limit:
            continue
        try:
            png = chart_png(chart, title=render.truncate(chart_title(alert, chart), 100))
        except Exception as exc:
            notes.append(f"chart not drawn ({type(exc).__name__})")
            continue
        if png is not None:
            drawn.append((alert, chart, png))
    return drawn, notes


def _firing_point(chart: Chart, finite: list[tuple[int, float]]) -> tuple[int, float] | None:
    if chart.firing_step is None:
        return finite[-1]
    at = [(s, v) for s, v in finite if s == chart.firing_step]
    if at:
        return at[-1]
    before = [(s, v) for s, v in finite if s <= chart.firing_step]
    return before[-1] if before else None


# --- the digest's grid of loss curves -------------------------------------------------------

DIGEST_PANELS = 9  # running runs drawn, worst first; the rest are in the text
DIGEST_COLUMNS = 3


def digest_png(runs: Sequence[RunReport], alerts: Sequence[AlertState] = (), *,
               panels: int = DIGEST_PANELS) -> bytes | None:
    """A small grid of the running runs' loss curves (the first ``panels``, worst first),
    each alert firing on a run marked where it fired; None when no run has a curve."""
    drawn = [r for r in runs if r.curves.get("loss") is not None][:panels]
    if not drawn:
        return None
    marks: dict[str, list[AlertState]] = {}
    for alert in alerts:
        if alert.step is not None:
            marks.setdefault(alert.run.path, []).append(alert)
    columns = min(DIGEST_COLUMNS, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    figure = Figure(figsize=(2.6 * columns, 1.9 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for i, report in enumerate(drawn):
        axes = figure.add_subplot(rows, columns, i + 1)
        curve = report.curves["loss"]
        values = [v if math.isfinite(v) else math.nan for v in curve.values]
        axes.plot(curve.steps, values, linewidth=1.0, color=_HEALTH_COLOUR[str(report.health)])
        for alert in marks.get(report.run.path, ()):
            axes.axvline(alert.step, color="#c62828" if alert.severity == "critical"
                         else "#ef6c00", linestyle=":", linewidth=1)
        axes.set_title(render.truncate(render.one_line(report.run.display_name), 28),
                       fontsize=7, loc="left", parse_math=False)
        axes.tick_params(labelsize=5)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


_HEALTH_COLOUR = {"healthy": "#1565c0", "warning": "#ef6c00", "critical": "#c62828"}
