"""Reports on a terminal (notify/report_view.py): sparklines, and untrusted names that stay
text — rich markup and terminal escapes in a run name, metric key or config value are shown,
never obeyed."""

from __future__ import annotations

import io
import math
from pathlib import Path

from rich.console import Console

from builders import T0, series, snapshot
from runwatch.analysis import characterize, compare, watch
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.keys import DEFAULT_ALIASES
from runwatch.notify.report_view import (
    characterize_view,
    compare_view,
    sparkline,
    watch_view,
)

RULES = load_rules([default_rules_path()], Path(".")).rules
EVIL = "[bold red]boom[/] \x1b[31mred"


def shown(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(renderable)
    return out.getvalue()


def test_sparkline_scales_and_marks_nonfinite_stretches():
    assert sparkline(series([0, 1, 2, 3, 4, 5, 6, 7])) == "▁▂▃▄▅▆▇█"
    assert sparkline(series([1.0] * 5)) == "▁▁▁▁▁"
    assert sparkline(series([1.0, 2.0, math.nan, math.nan]), width=4) == "▁█××"
    assert sparkline(None) == ""


def test_untrusted_text_is_shown_not_obeyed():
    h = {"train/loss": series([2.0 / (1 + i) for i in range(30)]),
         f"eval/{EVIL}": series([0.5] * 30), "train/global_step": series(range(30))}
    run = snapshot(h, name=EVIL, config={"model": EVIL, "max_steps": 100})
    report = characterize(run, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 300)
    text = shown(characterize_view(report))
    assert text.count("[bold red]boom[/]") == 3  # the name, the eval key, the config value
    assert "\x1b" not in text and "\ufffd[31mred" in text
    other = snapshot(h, run_id="b", name="plain")
    both = compare(run, other, rules=RULES, aliases=DEFAULT_ALIASES, now=T0 + 300)
    assert "[bold red]boom[/]" in shown(compare_view(both))
    everyone = watch([run, other], since=T0, now=T0 + 300, rules=RULES,
                     aliases=DEFAULT_ALIASES)
    assert "[bold red]boom[/]" in shown(watch_view(everyone))
