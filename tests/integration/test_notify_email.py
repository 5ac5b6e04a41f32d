"""Email end to end: the notifier's smtplib against a real SMTP server (aiosmtpd) in plain,
STARTTLS and implicit-TLS modes, asserting on the messages the server received."""

from __future__ import annotations

import socket
import ssl

import pytest

from builders import notify_alert as alert
from builders import notify_message
from runwatch.config.receivers import Receiver
from runwatch.notify.base import Chart, Message
from runwatch.notify.charts import PNG_SIGNATURE
from runwatch.notify.email import EmailNotifier
from runwatch.notify.receivers import build_notifier

# aiosmtpd counts only STARTTLS as TLS; plain mode requires AUTH without it on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")


def message(firing=(), resolved=(), *, refs=None, charts=None, id="out-1") -> Message:
    return notify_message(firing, resolved, receiver="oncall", refs=refs, charts=charts, id=id)


def notifier(server, *, trust=None, password: str = "secret", **kwargs) -> EmailNotifier:
    context = ssl.create_default_context(cafile=str(trust[0])) if trust else None
    return EmailNotifier(
        "oncall", host="127.0.0.1", port=server.port, sender="runwatch@example.com",
        to=["oncall@example.com", "ml@example.com"], starttls=server.mode == "starttls",
        tls=server.mode == "tls", username="alice", password=password, timeout=5,
        ssl_context=context, **kwargs,
    )


@pytest.mark.parametrize("mail_server", ["plain", "starttls", "tls"], indirect=True)
def test_an_alert_arrives_as_text_and_html(mail_server, request):
    trust = request.getfixturevalue("mail_cert") if mail_server.mode != "plain" else None
    alerts = [alert(), alert("loss-spike", severity="warning"), alert("x", run_id="r2")]
    delivery = notifier(mail_server, trust=trust).send(message(alerts))
    assert delivery.ok, delivery.detail
    [got] = mail_server.received
    assert got.login == "alice"
    assert got.mail_from == "runwatch@example.com"
    assert got.rcpt_tos == ("oncall@example.com", "ml@example.com")
    email = got.message
    assert email["Subject"] == "[runwatch] CRITICAL grad-norm-exploding: llama-7b (+2 more)"
    assert email["From"] == "runwatch@example.com"
    assert email["To"] == "oncall@example.com, ml@example.com"
    assert email["Message-ID"] == "<runwatch.out-1@example.com>"
    assert email["Auto-Submitted"] == "auto-generated"
    assert email.get_content_type() == "multipart/alternative"
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert "grad_norm = 12.3 at step 1200, firing for 1h" in text
    assert "https://wandb.ai/team/pretrain/runs/abc123" in text
    assert '<a href="https://wandb.ai/team/pretrain/runs/abc123">llama-7b</a>' in html
    here = "<runwatch.out-1@example.com>"
    assert {k: v for k, v in delivery.refs.items() if k.startswith("thread:")} == {
        "thread:team/pretrain/abc123": here, "thread:team/pretrain/r2": here}
    assert sorted(v for k, v in delivery.refs.items() if k.startswith("message:")) == [here] * 3


def test_build_notifier_sends_through_the_configured_server(mail_server):
    receiver = Receiver.model_validate({"name": "oncall", "email": {
        "smtp": f"127.0.0.1:{mail_server.port}", "username": "alice", "password": "secret",
        "from": "runwatch@example.com", "to": "oncall@example.com"}})
    assert build_notifier(receiver, timeout=5).send(message([alert()])).ok
    assert mail_server.received[0].rcpt_tos == ("oncall@example.com",)


def test_later_mail_about_a_run_replies_to_the_first(mail_server):
    mailer = notifier(mail_server)
    first = mailer.send(message([alert()]))
    second = mailer.send(message(resolved=[alert(status="resolved")], refs=first.refs,
                                 id="out-2"))
    assert second.ok and second.refs == {}  # it shows nothing firing
    reply = mail_server.received[1].message
    assert reply["Subject"] == "[runwatch] RESOLVED grad-norm-exploding: llama-7b"
    assert reply["In-Reply-To"] == "<runwatch.out-1@example.com>"
    assert reply["References"] == "<runwatch.out-1@example.com>"


def test_a_chart_is_inline_as_a_cid_image(mail_server):
    a = alert()
    chart = Chart(metric="grad_norm", steps=(0, 100, 200), values=(1.0, 2.0, 12.3),
                  threshold=10.0, firing_step=200)
    assert notifier(mail_server).send(message([a], charts={a.fingerprint: chart})).ok
    email = mail_server.received[0].message
    related = email.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    assert image.get_content_type() == "image/png"
    assert image.get_content().startswith(PNG_SIGNATURE)
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part.get_content()


@pytest.mark.parametrize("name", ["llama\r\nBcc: evil@x", "llama\nBcc: evil@x",
                                  "llama\rBcc: evil@x", "x\x00\x1b[31m\u2028Bcc: evil@x"])
def test_no_header_injection_through_run_or_rule_names(mail_server, name):
    hostile = alert("rule\r\nBcc: evil@x\r\n\r\nbody", name=name)
    mailer = notifier(mail_server)
    delivery = mailer.send(message([hostile], refs={
        "thread:team/pretrain/abc123": "<a@b>\r\nBcc: evil@x"}))
    assert delivery.ok, delivery.detail
    [got] = mail_server.received
    assert got.rcpt_tos == ("oncall@example.com", "ml@example.com")
    email = got.message
    assert email["Bcc"] is None
    assert email["In-Reply-To"] is None  # a ref that is no Message-ID is ignored
    assert "\n" not in email["Subject"] and "\r" not in email["Subject"]
    raw_headers = got.data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in raw_headers and b"\rBcc" not in raw_headers


def test_smtp_4xx_is_temporary_and_5xx_permanent(mail_server):
    mailer = notifier(mail_server)
    mail_server.fail_next(451, text="4.3.0 try again later")
    delivery = mailer.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert delivery.detail == "email receiver 'oncall': SMTP 451 4.3.0 try again later"
    mail_server.fail_next(554, text="5.7.1 rejected as spam")
    delivery = mailer.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, False)
    assert mailer.send(message([alert()])).ok


def test_a_refused_login_is_permanent_and_the_password_not_shown(mail_server):
    delivery = notifier(mail_server, password="wrong-password").send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, False)
    assert delivery.detail.startswith("email receiver 'oncall': login refused: 535")
    assert "wrong-password" not in delivery.detail


def test_connection_refused_and_timeout_are_temporary():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = EmailNotifier("oncall", host="127.0.0.1", port=port, sender="a@example.com",
                           to=["b@example.com"], timeout=2)
    delivery = mailer.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "ConnectionRefusedError" in delivery.detail
    with socket.socket() as silent:  # accepts (backlog), never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        mailer = EmailNotifier("oncall", host="127.0.0.1", port=silent.getsockname()[1],
                               sender="a@example.com", to=["b@example.com"], timeout=0.3)
        delivery = mailer.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "timed out" in delivery.detail


@pytest.mark.parametrize("mail_server", ["tls"], indirect=True)
def test_an_untrusted_certificate_is_permanent(mail_server):
    delivery = notifier(mail_server).send(message([alert()]))  # the system's CAs only
    assert (delivery.ok, delivery.temporary) == (False, False)
    assert "certificate not trusted" in delivery.detail


@pytest.mark.parametrize("mail_server", ["plain"], indirect=True)
def test_starttls_against_a_server_without_it_is_permanent(mail_server):
    mailer = notifier(mail_server, trust=None)
    mailer.starttls = True
    delivery = mailer.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, False)
    assert "STARTTLS" in delivery.detail
