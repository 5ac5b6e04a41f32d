"""render: the words of a notification, and what untrusted text can and cannot do to them.
Also the small pure pieces next to it: the chart PNG and the receivers' offline checks."""

from __future__ import annotations

import re

import pytest

from runwatch.config.receivers import Receiver
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify import render
from runwatch.notify.base import Chart, Message, Reason
from runwatch.notify.charts import PNG_SIGNATURE, chart_png, firing_charts
from runwatch.notify.receivers import receiver_problems

T0 = 1_760_000_000.0
HOSTILE = ["<!channel>", "<!here>", "<@U024BE7LH>", "<http://evil.example|click me>",
           "*bold* _it_ ~strike~ `code`", "a & b > c", "\r\nBcc: evil@x", "{value.__class__}"]


def alert(rule: str = "grad-norm-exploding", *, name: str = "llama-7b", run_id: str = "abc123",
          severity: str = "critical", status: str = "firing", location: str | None = None,
          summary: str = "grad norm 12.3 > 10 at step 1200", metric: str = "train/grad_norm",
          fired_at: float = T0 - 7500) -> AlertState:
    run = RunRef(source="wandb", id=run_id, name=name, project="pretrain", entity="team",
                 location=(location if location is not None
                           else f"https://wandb.ai/team/pretrain/runs/{run_id}"))
    return AlertState(
        fingerprint=fingerprint(rule, run), rule=rule, run=run, severity=Severity(severity),
        status=AlertStatus(status), fired_at=fired_at,
        resolved_at=T0 if status == "resolved" else None, metric=metric, value=12.3,
        step=1200, summary=summary,
    )


def message(firing=(), resolved=(), **fields) -> Message:
    fields.setdefault("reason", Reason.FIRST)
    return Message(id="out-1", receiver="team-slack", group_key="{}:{rule=x}",
                   firing=tuple(firing), resolved=tuple(resolved), created_at=T0, **fields)


def text_objects(blocks):
    """Every text object in ``blocks``: (type, text)."""
    for block in blocks:
        if "text" in block:
            yield block["text"]["type"], block["text"]["text"]
        for item in block.get("fields", []) + block.get("elements", []):
            yield item["type"], item["text"]


# --- words ----------------------------------------------------------------------------

def test_headline_and_subject_name_the_most_severe_alert_and_count_the_rest():
    msg = message([alert("grad-norm-high", severity="warning", run_id="r1"),
                   alert(run_id="r2"), alert(run_id="r3", severity="info")])
    assert render.headline(msg) == "CRITICAL grad-norm-exploding: llama-7b (+2 more)"
    assert render.subject(msg) == "[runwatch] CRITICAL grad-norm-exploding: llama-7b (+2 more)"
    resolved = message(resolved=[alert(status="resolved")])
    assert render.subject(resolved) == "[runwatch] RESOLVED grad-norm-exploding: llama-7b"


@pytest.mark.parametrize("seconds, expected", [
    (0, "0s"), (59, "59s"), (60, "1m"), (3600, "1h"), (7500, "2h 5m"), (86400, "1d"),
    (97200, "1d 3h"), (-5, "0s"),
])
def test_duration(seconds, expected):
    assert render.duration(seconds) == expected


def test_age_is_measured_against_the_message_time():
    assert render.age(alert(fired_at=T0 - 7500), T0) == "firing for 2h 5m"
    done = alert(status="resolved", fired_at=T0 - 600)
    assert render.age(done, T0 + 9999) == "resolved after 10m"


@pytest.mark.parametrize("value, expected", [
    (12.3, "12.3"), (float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "-inf"),
    (1e-9, "1e-09"), (None, ""),
])
def test_format_value(value, expected):
    assert render.format_value(value) == expected


def test_text_lists_firing_and_resolved_with_links_and_ages():
    msg = message([alert()], [alert("loss-nonfinite", status="resolved", run_id="r9")])
    body = render.text(msg)
    assert "FIRING (1)\n- [CRITICAL] grad-norm-exploding: llama-7b" in body
    assert "run: https://wandb.ai/team/pretrain/runs/abc123" in body
    assert "train/grad_norm = 12.3 at step 1200, firing for 2h 5m" in body
    assert "RESOLVED (1)\n- [RESOLVED] loss-nonfinite" in body


# --- Slack ----------------------------------------------------------------------------

def test_blocks_show_severity_rule_linked_run_metric_value_step_age_summary():
    blocks = render.slack_blocks(message([alert()]))
    assert blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "emoji": True,
        "text": "🔴 CRITICAL grad-norm-exploding: llama-7b"}}
    section = blocks[1]
    assert section["text"] == {"type": "mrkdwn", "verbatim": True, "text": (
        "🔴 *CRITICAL* <https://wandb.ai/team/pretrain/runs/abc123|llama-7b>")}
    assert [f["text"] for f in section["fields"]] == [
        "Rule: grad-norm-exploding", "train/grad_norm = 12.3 at step 1200",
        "Firing for 2h 5m"]
    assert blocks[2] == {"type": "context", "elements": [
        {"type": "plain_text", "text": "grad norm 12.3 > 10 at step 1200", "emoji": True}]}


def test_a_run_directory_is_shown_as_code_not_as_a_link():
    blocks = render.slack_blocks(message([alert(location="/runs/run-1 <x>|`y`")]))
    assert blocks[1]["text"]["text"] == "🔴 *CRITICAL* llama-7b `/runs/run-1 &lt;x&gt;|ˋyˋ`"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_untrusted_text_cannot_mention_link_or_format_in_slack(hostile):
    msg = message([alert(hostile, name=hostile, summary=hostile, metric=hostile)])
    blocks = render.slack_blocks(msg)
    for kind, text in [*text_objects(blocks), ("mrkdwn", render.slack_fallback(msg))]:
        assert "\n" not in text or kind == "mrkdwn"
        assert "\r" not in text
        if kind != "mrkdwn":
            continue  # plain_text is shown as written: Slack parses nothing in it
        # The only angle brackets left are the run's own link.
        assert re.findall(r"<[^>]*>", text) in (
            [], ["<https://wandb.ai/team/pretrain/runs/abc123|"
                 + render.mrkdwn(hostile) + ">"])
        for marker in "*_~`":  # formatting characters are fenced by zero-width spaces
            for found in re.finditer(re.escape(marker), render.mrkdwn(hostile)):
                i = found.start()
                assert render.mrkdwn(hostile)[i - 1] == "\u200b"
    assert any(text == f"Rule: {render.one_line(hostile)}" for _, text in text_objects(blocks))


def test_mrkdwn_escapes():
    assert render.mrkdwn("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert render.mrkdwn("*x*") == "\u200b*\u200bx\u200b*\u200b"
    assert render.mrkdwn("a\r\nb") == "a  b"
    assert render.mrkdwn("grad_norm_2 a*b") == "grad_norm_2 a*b"  # inside a word: inert
    assert render.mrkdwn("_x_") == "\u200b_\u200bx\u200b_\u200b"
    assert render.mrkdwn("é_") == "é\u200b_\u200b"


def test_a_very_long_name_is_cut_to_slacks_limits():
    msg = message([alert("r" * 5000, name="n" * 10_000, summary="s" * 10_000,
                         metric="m" * 5000)])
    blocks = render.slack_blocks(msg)
    assert len(blocks[0]["text"]["text"]) <= render.HEADER_LIMIT
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= render.SECTION_LIMIT
            assert all(len(f["text"]) <= render.FIELD_LIMIT for f in block["fields"])
    assert len(render.slack_fallback(msg)) <= render.FALLBACK_LIMIT


@pytest.mark.parametrize("count", [11, 300])
def test_a_large_group_names_every_alert_within_50_blocks(count):
    alerts = [alert(f"rule-{i:03d}", run_id=f"run{i}", name=f"run-{i}") for i in range(count)]
    blocks = render.slack_blocks(message(alerts))
    assert len(blocks) <= render.BLOCK_LIMIT
    shown = " ".join(text for _, text in text_objects(blocks))
    assert all(f"rule-{i:03d}" in shown for i in range(count))
    assert "not shown" not in shown
    assert all(len(b["text"]["text"]) <= render.SECTION_LIMIT
               for b in blocks if b["type"] == "section")


def test_past_what_50_blocks_hold_the_rest_is_counted():
    alerts = [alert(f"rule-{i:04d}-" + "x" * 50, run_id=f"run{i}", name="n" * 60)
              for i in range(3000)]
    blocks = render.slack_blocks(message(alerts))
    assert len(blocks) == render.BLOCK_LIMIT
    assert blocks[-1]["type"] == "context"
    hidden = int(re.search(r"and (\d+) more", blocks[-1]["elements"][0]["text"])[1])
    shown = sum(b["text"]["text"].count("\n") + 1 for b in blocks
                if b["type"] == "section" and b["text"]["text"].startswith("•"))
    assert shown + hidden + render.DETAILED == 3000


# --- email and HTML -------------------------------------------------------------------

@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_subject_is_one_line_whatever_the_run_is_called(hostile):
    subject = render.subject(message([alert(hostile, name=hostile)]))
    assert not re.search(r"[\x00-\x1f\x7f]", subject)
    assert len(subject) <= render.SUBJECT_LIMIT


def test_html_escapes_untrusted_text_and_links_only_web_pages():
    page = render.html(message([
        alert(name="<script>alert(1)</script>", summary="<b>x</b> & y"),
        alert("r2", run_id="local", location='/runs/"><img src=x>'),
    ]))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page
    assert '<a href="https://wandb.ai/team/pretrain/runs/abc123">' in page
    assert "<code>/runs/&quot;&gt;&lt;img src=x&gt;</code>" in page
    assert page.count("<a ") == 1


def test_template_syntax_in_names_is_just_text():
    msg = message([alert(name="{value.__class__}", summary="{run.__init__.__globals__}")])
    assert "llama" not in render.text(msg)
    assert "{value.__class__}" in render.text(msg)
    assert "{run.__init__.__globals__}" in render.html(msg)


# --- charts ---------------------------------------------------------------------------

def test_chart_is_a_png_even_for_hostile_metric_names():
    chart = Chart(metric="$\\frac{x}{$ grad", steps=tuple(range(100)),
                  values=tuple([1.0] * 90 + [float("inf")] + [20.0] * 9),
                  threshold=10.0, firing_step=95)
    png = chart_png(chart, title="<!channel> $x$")
    assert png is not None and png.startswith(PNG_SIGNATURE)


def test_no_chart_without_a_finite_point():
    assert chart_png(Chart(metric="loss", steps=(1, 2), values=(float("nan"),) * 2)) is None
    assert chart_png(Chart(metric="loss", steps=(), values=())) is None


def test_firing_charts_draws_the_lead_first_and_notes_what_cannot_be_drawn():
    good = Chart(metric="grad_norm", steps=(0, 1, 2), values=(1.0, 2.0, 12.3), threshold=10.0)
    broken = Chart(metric="loss", steps=(0, 1), values=(1.0, 2.0),
                   threshold="ten")  # type: ignore[arg-type]
    warn, crit, bad = (alert("w", severity="warning"), alert("c"), alert("b"))
    msg = message([warn, crit, bad], charts={a.fingerprint: good for a in (warn, crit)}
                  | {bad.fingerprint: broken})
    drawn, notes = firing_charts(msg, limit=2)  # order: c, b (undrawable), w
    assert [(a.rule, png.startswith(PNG_SIGNATURE)) for a, _, png in drawn] == [
        ("c", True), ("w", True)]
    assert notes == ["chart not drawn (TypeError)"]
    assert [a.rule for a, _, _ in firing_charts(msg, limit=1)[0]] == ["c"]
    assert firing_charts(msg, limit=0) == ([], [])


# --- receivers: offline checks --------------------------------------------------------

def receiver(**kind) -> Receiver:
    return Receiver.model_validate({"name": "team", **kind})


@pytest.mark.parametrize("token, expected", [
    ("xoxb-1-2-abc", []),
    ("xapp-1-A1-2-abc", ["receiver 'team': slack token is an app-level token (xapp-); "
                         "runwatch needs a bot token (xoxb-)"]),
    ("xoxp-1-2-abc", ["receiver 'team': slack token is a user token (xoxp-); "
                      "runwatch needs a bot token (xoxb-)"]),
    ("hunter2", ["receiver 'team': slack token does not look like a bot token (xoxb-…)"]),
])
def test_slack_token_kind(token, expected):
    problems = receiver_problems(receiver(slack={"token": token, "channel": "#alerts"}))
    assert problems == expected
    assert all(token not in p for p in problems)


def test_clear_text_secrets_are_named():
    email = receiver(email={"smtp": "smtp.example.com", "username": "u", "password": "p",
                            "from": "a@example.com", "to": "b@example.com"})
    assert receiver_problems(email) == [
        "receiver 'team': email would send the password unencrypted: set starttls or tls"]
    ok = receiver(email={"smtp": "smtp.example.com", "starttls": True, "username": "u",
                         "password": "p", "from": "a@example.com", "to": "b@example.com"})
    assert receiver_problems(ok) == []
    hook = receiver(webhook={"url": "http://hooks.example.com/x", "bearer_token": "t",
                             "hmac_secret": "short"})
    assert receiver_problems(hook) == [
        "receiver 'team': webhook sends its bearer token in clear over http://",
        "receiver 'team': webhook hmac_secret is shorter than 16 characters",
    ]


def test_a_resolution_is_shown_with_its_reason():
    import dataclasses

    done = dataclasses.replace(alert(status="resolved", fired_at=T0 - 600),
                               resolution="run ended: killed")
    assert render.age(done, T0 + 9999) == "resolved after 10m (run ended: killed)"
    unstarted = dataclasses.replace(done, fired_at=None, active_since=None)
    assert render.age(unstarted, T0 + 9999) == "resolved (run ended: killed)"


def test_a_measurement_says_where_the_condition_began_and_where_it_is_now():
    import dataclasses

    a = dataclasses.replace(alert(), value=450.0, step=43, since_step=35, first_value=12.0,
                            latest_value=420.0, latest_step=44)
    assert render.measurement(a) == (
        "train/grad_norm = 450 at step 43, since step 35 (12), now 420")


def test_what_the_training_code_raised_is_news_at_its_severity_not_a_recovery():
    from dataclasses import replace

    from runwatch.notify.webhook import payload

    raised = replace(alert("training-code-alert", severity="warning", status="resolved",
                           summary="data loader slow: batch wait", metric=None),
                     resolution="told once", value=None)
    closed = alert("loss-nonfinite", name="other", status="resolved")
    shown = message(resolved=(closed, raised))
    assert render.headline(shown) == "WARNING training-code-alert: llama-7b, 1 resolved"
    assert render.ordered(shown)[0] is raised
    text = render.text(shown)
    assert "RAISED BY THE TRAINING CODE (1)\n- [WARNING] training-code-alert" in text
    assert "at step 1200, told once" in text and "RESOLVED (1)\n- [RESOLVED]" in text
    blocks = render.slack_blocks(shown)
    assert blocks[0]["text"]["text"].startswith(render.MARK[Severity.WARNING])
    sent = payload(shown)
    assert sent["status"] == "firing"
    assert [a["status"] for a in sent["alerts"]] == ["firing", "resolved"]
    assert sent["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"  # it is over: told once
