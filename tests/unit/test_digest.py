"""The digest (analysis/digest.py, notify/digest_render.py, digests.py): its model, every
rendering of it, Slack's limits on a big one, its chart, and which period is due when."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from matplotlib.image import imread

from builders import T0, series, snapshot
from runwatch.analysis.digest import compose
from runwatch.config.models import default_rules_path
from runwatch.config.rules import load_rules
from runwatch.digests import Period, content, due, scheduled
from runwatch.keys import DEFAULT_ALIASES
from runwatch.model import AlertState, AlertStatus, RunState, Severity, fingerprint
from runwatch.notify import digest_render as words
from runwatch.notify.base import Message, Reason
from runwatch.notify.charts import PNG_SIGNATURE, digest_png
from runwatch.notify.outbox import decode_message, new_entry
from runwatch.schedule import cron_trigger

RULES = load_rules([default_rules_path()], Path(".")).rules
DAY = 86400.0
START, END = T0, T0 + DAY  # the period; runs' rows end at END - 60


def falling(n: int) -> list[float]:
    return [2.0 / (1 + 0.05 * i) for i in range(n)]


def live(run_id: str, *, project: str = "pretrain", loss=None, name=None, **kw):
    values = loss if loss is not None else falling(60)
    h = {"train/loss": series(values, start_time=END - 60 * len(values), interval=60.0)}
    return snapshot(h, run_id=run_id, name=name or run_id, project=project,
                    heartbeat=END - 30, **kw)


def ended(run_id: str, state: RunState, at: float, *, project: str = "pretrain"):
    h = {"train/loss": series(falling(30), start_time=at - 300, interval=10.0)}
    return snapshot(h, run_id=run_id, name=run_id, project=project, state=state,
                    heartbeat=at, progress=at)


def alert(rule: str, run, *, status=AlertStatus.FIRING, fired_at=START + 3600,
          severity=Severity.CRITICAL, summary="") -> AlertState:
    return AlertState(fingerprint=fingerprint(rule, run.ref), rule=rule, run=run.ref,
                      severity=severity, status=status, fired_at=fired_at,
                      resolved_at=None if status == AlertStatus.FIRING else fired_at + 60,
                      summary=summary or f"{rule} on {run.ref.name}", step=10)


def small_digest():
    ok = live("ok", config={"max_steps": 120})
    bad = live("bad", loss=[*falling(59), math.nan])
    done = ended("done", RunState.FINISHED, START + 7200)
    boom = ended("boom", RunState.CRASHED, START + 3600, project="rl")
    old = ended("old", RunState.FINISHED, START - 3600)
    alerts = [alert("loss-nonfinite", bad, fired_at=END - 100),
              alert("grad-norm-spiky", ok, status=AlertStatus.RESOLVED,
                    severity=Severity.WARNING, fired_at=START + 100),
              alert("run-crashed", boom, fired_at=START + 3600),
              alert("grad-norm-exploding", old, status=AlertStatus.RESOLVED,
                    fired_at=START - 7200)]
    return compose(runs=[ok, bad, done, boom, old], alerts=alerts, start=START, end=END,
                   rules=RULES, aliases=DEFAULT_ALIASES)


def test_compose_sorts_runs_and_alerts_into_projects():
    d = small_digest()
    assert [s.project for s in d.sections] == ["pretrain", "rl"]
    pretrain, rl = d.sections
    assert [r.run.id for r in pretrain.running] == ["bad", "ok"]  # worst first
    assert [r.run.id for r in pretrain.ended] == ["done"]  # "old" ended before the period
    assert [(a.rule, a.status) for a in pretrain.fired] == [
        ("loss-nonfinite", "firing"), ("grad-norm-spiky", "resolved")]
    assert [a.rule for a in pretrain.firing] == ["loss-nonfinite"]
    assert [r.run.id for r in rl.ended] == ["boom"] and rl.ended[0].health == "critical"
    assert d.outcome_counts() == {RunState.CRASHED: 1, RunState.FINISHED: 1}


def test_text_rendering():
    d = small_digest()
    eta = d.sections[0].running[1].pace.eta
    assert words.text(d) == (
        "runwatch digest, Fri 10 Oct 2025\n"
        "2025-10-09 08:53 UTC to 2025-10-10 08:53 UTC\n"
        "2 running (1 critical) · 2 ended (1 crashed, 1 finished) · 3 alerts fired,"
        " 2 still firing\n"
        "\n"
        "pretrain:\n"
        "  running (2):\n"
        "    🔴 bad — step 59 — loss is nan at step 59\n"
        f"    🟢 ok — step 59/120 (49%), ETA {words.format_duration(eta)}\n"
        "  ended (1):\n"
        "    🏁 done — finished at step 29\n"
        "  alerts fired (2):\n"
        "    🔴 bad — loss-nonfinite (critical) — loss-nonfinite on bad\n"
        "    ✅ ok — grad-norm-spiky (resolved) — grad-norm-spiky on ok\n"
        "  still firing (1):\n"
        "    🔴 bad — loss-nonfinite (critical) — loss-nonfinite on bad\n"
        "\n"
        "rl:\n"
        "  ended (1):\n"
        "    💥 boom — crashed at step 29 — run crashed at step 29\n"
        "  alerts fired (1):\n"
        "    🔴 boom — run-crashed (critical) — run-crashed on boom\n"
        "  still firing (1):\n"
        "    🔴 boom — run-crashed (critical) — run-crashed on boom\n")
    assert eta == pytest.approx((120 - 59) * 60)


def test_webhook_body_and_html_read_the_same_model():
    d = small_digest()
    body = words.body(d)
    assert body["kind"] == "digest" and body["totals"]["fired"] == 3
    assert [p["project"] for p in body["projects"]] == ["pretrain", "rl"]
    assert body["projects"][0]["running"][0]["health"] == "critical"
    json.dumps(body, allow_nan=False)  # NaN travels as a string
    html = words.html(d, image_cid="x@y")
    assert '<img src="cid:x@y"' in html and "loss is nan at step 59" in html


def test_hostile_names_are_inert_everywhere():
    evil = live("e1", name="<!channel> *bold* <script>alert(1)</script>", project="<b>p</b>")
    d = compose(runs=[evil], alerts=[], start=START, end=END, rules=RULES,
                aliases=DEFAULT_ALIASES)
    blocks = json.dumps(words.slack_blocks(d))
    assert "<!channel>" not in blocks and "&lt;!channel&gt;" in blocks
    html = words.html(d)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>p</b>" not in html


def test_a_digest_of_300_runs_stays_within_slacks_limits():
    runs = [live(f"r{i:03d}", project=f"p{i % 3}", name=f"run-{i:03d}-" + "x" * 60)
            for i in range(300)]
    runs += [ended(f"e{i:03d}", RunState.FAILED, START + i, project=f"p{i % 3}")
             for i in range(60)]
    alerts = [alert("grad-norm-exploding", r, summary="y" * 300) for r in runs[:200]]
    d = compose(runs=runs, alerts=alerts, start=START, end=END, rules=RULES,
                aliases=DEFAULT_ALIASES)
    blocks = words.slack_blocks(d)
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(text) <= 3000 for text in sections)
    assert sum(map(len, sections)) <= 30_000
    text = json.dumps(blocks, ensure_ascii=False)
    # Three projects of four lists: 10 lines each, the rest counted; every project shown.
    assert text.count("… and 90 more") == 3 and "projects not shown" not in text
    assert [b["text"]["text"].split("\n")[0] for b in blocks
            if b["type"] == "section" and b["text"]["text"].startswith("*p")] == [
        "*p0*", "*p1*", "*p2*"]
    assert len(words.slack_fallback(d)) <= 3000


def test_the_chart_is_a_png_of_a_grid():
    d = small_digest()
    png = digest_png(d.running, d.firing)
    assert png.startswith(PNG_SIGNATURE)
    height, width, _ = imread(io.BytesIO(png)).shape
    assert (width, height) == (520, 190)  # two panels side by side
    many = compose(runs=[live(f"r{i}") for i in range(20)], alerts=[], start=START,
                   end=END, rules=RULES, aliases=DEFAULT_ALIASES)
    height, width, _ = imread(io.BytesIO(digest_png(many.running))).shape
    assert (width, height) == (780, 570)  # nine panels, three by three
    assert digest_png(()) is None


def test_a_digest_message_survives_the_outbox():
    rendered = content(small_digest())
    assert rendered.image and rendered.image.startswith(PNG_SIGNATURE)
    message = Message(id="digest-1", receiver="team", group_key="digest",
                      reason=Reason.DIGEST, created_at=END, digest=rendered)
    back = decode_message(new_entry(message, expires_at=END + DAY))
    assert back.digest == rendered and back.reason == Reason.DIGEST


# --- which period is due ----------------------------------------------------------------

EIGHT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()
DAILY = cron_trigger("0 8 * * *")
HOURS = 3600.0


@pytest.mark.parametrize(("sent", "now", "expected"), [
    (None, EIGHT, Period(start=EIGHT - DAY, end=EIGHT)),  # first ever: the day before
    (EIGHT - DAY, EIGHT + 60, Period(start=EIGHT - DAY, end=EIGHT)),
    (EIGHT + 5, EIGHT + 600, None),  # sent already (a restart finds the record)
    (EIGHT - DAY, EIGHT + 5 * HOURS, Period(start=EIGHT - DAY, end=EIGHT)),  # within grace
    (EIGHT - DAY, EIGHT + 7 * HOURS, None),  # missed by 7 h: skipped, not sent late
    (EIGHT - 3 * DAY, EIGHT + 60, Period(start=EIGHT - 3 * DAY, end=EIGHT)),  # days down
    (EIGHT - 30 * DAY, EIGHT + 60, Period(start=EIGHT - 7 * DAY, end=EIGHT)),  # capped
    (EIGHT - DAY + 5, EIGHT - 60, None),  # before today's time: yesterday's went out
])
def test_due(sent, now, expected):
    period, why = due(DAILY, sent=sent, now=now, grace=6 * HOURS)
    assert period == expected, why
    if expected is None and now - EIGHT > 6 * HOURS:
        assert "missed by 7.0 h" in why


def test_scheduled_times_follow_the_zone():
    berlin = cron_trigger("0 8 * * 1-5", __import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    times = scheduled(berlin, EIGHT - 7 * DAY, EIGHT)
    assert len(times) == 5  # weekdays only
    assert all(datetime.fromtimestamp(t, UTC).hour == 7 for t in times)  # 08:00 CET
