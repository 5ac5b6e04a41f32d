"""notify/console: a message printed as the panel its Slack message would be, and what
untrusted text can and cannot do to a terminal."""

from __future__ import annotations

import errno
import io

from rich.console import Console

from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify.base import Message, Reason
from runwatch.notify.console import ConsoleNotifier, message_panel
from runwatch.notify.render import DETAILED

T0 = 1_760_000_000.0


def alert(rule: str = "grad-norm-exploding", *, name: str = "llama-7b", run_id: str = "abc123",
          severity: str = "critical", status: str = "firing", summary: str = "",
          metric: str | None = "train/grad_norm", value: float | None = 12.3,
          location: str = "https://wandb.ai/team/pretrain/runs/abc123") -> AlertState:
    run = RunRef(source="wandb", id=run_id, name=name, project="pretrain", entity="team",
                 location=location)
    return AlertState(
        fingerprint=fingerprint(rule, run), rule=rule, run=run, severity=Severity(severity),
        status=AlertStatus(status), fired_at=T0 - 7500,
        resolved_at=T0 if status == "resolved" else None, metric=metric, value=value,
        step=1200, summary=summary or f"grad norm {value} > 10 at step 1200",
    )


def message(firing=(), resolved=()) -> Message:
    return Message(id="out-1", receiver="team-slack", group_key="{}:{rule=x}",
                   firing=tuple(firing), resolved=tuple(resolved), reason=Reason.FIRST,
                   created_at=T0)


def printed(msg: Message, *, destination: str | None = None) -> tuple[str, str]:
    """(plain text, text with ANSI codes) of the message as the notifier prints it."""
    plain, styled = io.StringIO(), io.StringIO()
    ConsoleNotifier("team-slack", console=Console(file=plain, width=120, color_system=None),
                    destination=destination).send(msg)
    Console(file=styled, width=120, force_terminal=True, color_system="truecolor").print(
        message_panel(msg, destination=destination))
    return plain.getvalue(), styled.getvalue()


def test_panel_carries_what_the_slack_message_does():
    out, _ = printed(message([alert(), alert("grad-norm-spiky", severity="warning")]),
                     destination="#training-alerts")
    lines = out.splitlines()
    assert "🔴 CRITICAL grad-norm-exploding: llama-7b (+1 more)" in lines[0]  # the header
    assert "→ #training-alerts" in lines[-1]
    assert "🔴 CRITICAL llama-7b  https://wandb.ai/team/pretrain/runs/abc123" in out
    assert "Rule: grad-norm-exploding" in out
    assert "train/grad_norm = 12.3 at step 1200" in out
    assert "Firing for 2h 5m" in out  # fired 7500 s before the message was decided
    assert "grad norm 12.3 > 10 at step 1200" in out
    assert out.index("CRITICAL llama-7b") < out.index("WARNING llama-7b")  # most severe first


def test_resolved_and_nonfinite_values_read_as_slack_would_say_them():
    out, _ = printed(message(resolved=[alert("loss-nonfinite", metric="train/loss",
                                             value=float("nan"), status="resolved",
                                             location="/runs/wandb/run-abc123")]))
    assert "✅ RESOLVED loss-nonfinite: llama-7b" in out
    assert "train/loss = NaN at step 1200" in out
    assert "Resolved after 2h 5m" in out
    assert "/runs/wandb/run-abc123" in out  # a run directory: shown as it is
    assert "→ team-slack" in out  # the receiver, when no destination is given


def test_a_large_group_lists_the_rest_compactly():
    alerts = [alert(run_id=f"r{i:02d}", name=f"run-{i:02d}") for i in range(DETAILED + 3)]
    out, _ = printed(message(alerts))
    assert out.count("Rule: grad-norm-exploding") == DETAILED
    assert "• 🔴 grad-norm-exploding · run-12 · train/grad_norm = 12.3 at step 1200" in out


HOSTILE_NAME = "[bold red]pwn[/bold red] [link=http://evil.example]x[/link] :skull:"


def test_rich_markup_in_untrusted_text_is_shown_never_interpreted():
    msg = message([alert(name=HOSTILE_NAME, rule="[blink]rule[/blink]", metric="[red]m[/red]",
                         summary="[on red]summary[/on red]")])
    out, styled = printed(msg)
    for text in (HOSTILE_NAME, "[blink]rule[/blink]", "[red]m[/red] = 12.3",
                 "[on red]summary[/on red]"):
        assert text in out
    assert "\x1b]8;" not in styled  # no hyperlink escape was made from [link=...]
    assert "💀" not in out  # nor an emoji from :skull:


def test_terminal_escapes_and_bidi_overrides_cannot_rewrite_the_screen():
    name = "evil\x1b[2J\x1b]0;title\x07\r\nline2\u202egnp.exe"
    out, styled = printed(message([alert(name=name, summary="ok\x1b[31mred")]))
    assert "\x1b" not in out
    assert "\x1b[2J" not in styled and "\x1b]0;" not in styled
    assert "\u202e" not in out and "\r" not in out
    assert "evil\ufffd[2J" in out
    assert "ok\ufffd[31mred" in out


def test_send_reports_delivery_and_keeps_what_it_printed():
    notifier = ConsoleNotifier("console", console=Console(file=io.StringIO()))
    msg = message([alert()])
    delivery = notifier.send(msg)
    assert delivery.ok and delivery.detail == "printed"
    assert notifier.sent == [msg]
    notifier.close()


def test_a_console_that_cannot_print_is_a_failed_delivery_not_an_exception():
    class Full(io.StringIO):  # (a BrokenPipeError rich handles itself: it exits quietly)
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    notifier = ConsoleNotifier("console", console=Console(file=Full()))
    delivery = notifier.send(message([alert()]))
    assert not delivery.ok and not delivery.temporary
    assert "No space left on device" in delivery.detail
    assert notifier.sent == []
