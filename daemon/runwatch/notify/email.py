"""Email through SMTP: implicit TLS (``tls``), STARTTLS (``starttls``) or plain, optional
login; multipart/alternative text + HTML, charts inline as ``cid:`` images.

Charts: with ``charts`` (the receiver's ``charts: true``; build_notifier passes it), the
charts the message carries are inlined, at most :data:`MAX_CHARTS`; without it none are.
The pipeline only puts charts into messages for receivers that draw them.

Threading: refs ``thread:<run path>`` hold the ``Message-ID`` of the first email about a
run, and later emails about it carry ``In-Reply-To``/``References`` so mail clients thread
them — the same rule as Slack's threads. Refs ``message:<fingerprint>`` list every email
that showed an alert firing; the email that resolves it replies to each of them, so every
thread that announced it ends with its resolution. The ``Message-ID`` derives from the
outbox id, so a retried send is recognisably the same email.

Every header value built from untrusted text goes through :func:`render.single_line`
(control characters out) before the ``email`` package sees it.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from runwatch.notify import render
from runwatch.notify.base import (
    DIGEST_IMAGE_CID,
    Delivery,
    DigestContent,
    Message,
    ref_list,
    with_ref,
)
from runwatch.notify.charts import firing_charts

MAX_CHARTS = 3
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]{1,250}@[!-;=?-~]{1,250}>$")  # printable, no space, no <>


def message_id(message: Message, sender: str) -> str:
    """A ``Message-ID`` stable across retries of one outbox entry."""
    local = re.sub(r"[^A-Za-z0-9.-]", "-", message.id)[:64] or "message"
    domain = re.sub(r"[^A-Za-z0-9.-]", "-", sender.rpartition("@")[2])[:200] or "runwatch"
    return f"<runwatch.{local}@{domain}>"


def _thread_parent(message: Message) -> str | None:
    for alert in render.ordered(message):
        ref = message.refs.get(f"thread:{alert.run.path}", "")
        if _MESSAGE_ID.match(ref):
            return ref
    return None


def replies_to(message: Message) -> list[str]:
    """The emails ``message`` answers: its run's thread, and every email that showed one of
    the alerts it resolves firing."""
    closed = [value for a in message.resolved
              for value in ref_list(message.refs, f"message:{a.fingerprint}")]
    return [ref for ref in dict.fromkeys([_thread_parent(message) or "", *closed])
            if _MESSAGE_ID.match(ref)]


def build_email(message: Message, *, sender: str, to: Sequence[str],
                max_charts: int = MAX_CHARTS) -> EmailMessage:
    """The email for ``message``: headers, text and HTML parts, inline charts."""
    if message.digest is not None:
        return digest_email(message, message.digest, sender=sender, to=to)
    email = _headed(message, render.subject(message), sender=sender, to=to)
    parents = replies_to(message)
    if parents:
        email["In-Reply-To"] = " ".join(parents)
        email["References"] = " ".join(parents)

    drawn, _ = firing_charts(message, max_charts)
    images = {alert.fingerprint: (make_msgid(domain="runwatch.invalid"), png)
              for alert, _, png in drawn}

    email.set_content(render.text(message))
    email.add_alternative(
        render.html(message, images={fp: cid[1:-1] for fp, (cid, _) in images.items()}),
        subtype="html",
    )
    if images:
        html_part = email.get_payload()[1]
        for fingerprint, (cid, png) in images.items():
            html_part.add_related(png, "image", "png", cid=cid,
                                  filename=f"{fingerprint}.png", disposition="inline")
    return email


def _headed(message: Message, subject: str, *, sender: str, to: Sequence[str]
            ) -> EmailMessage:
    """An email with the headers every runwatch mail has."""
    email = EmailMessage()
    email["Subject"] = subject
    email["From"] = sender
    email["To"] = ", ".join(to)
    email["Date"] = formatdate(message.created_at, usegmt=True)
    email["Message-ID"] = message_id(message, sender)
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    email["X-Runwatch-Group"] = render.single_line(message.group_key, 200)
    email["X-Runwatch-Reason"] = render.single_line(str(message.reason), 40)
    return email


def digest_email(message: Message, digest: DigestContent, *, sender: str,
                 to: Sequence[str]) -> EmailMessage:
    """A digest: its text and HTML, the chart inline in the HTML (the digest's chart is its
    point, so it goes with or without the receiver's ``charts``)."""
    email = _headed(message, render.single_line(digest.title), sender=sender, to=to)
    email.set_content(digest.text)
    email.add_alternative(digest.html, subtype="html")
    if digest.image:
        email.get_payload()[1].add_related(digest.image, "image", "png",
                                           cid=f"<{DIGEST_IMAGE_CID}>", filename="digest.png",
                                           disposition="inline")
    return email


def classify(receiver: str, exc: Exception) -> Delivery:
    """An SMTP failure as a Delivery: 4xx, refused, timeouts are temporary; 5xx and a
    rejected login are permanent."""
    def failed(what: str, temporary: bool) -> Delivery:
        return Delivery(ok=False,
                        detail=f"email receiver {receiver!r}: {render.single_line(what, 300)}",
                        temporary=temporary)

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        answers = ", ".join(f"{rcpt} ({code} {_text(text)})"
                            for rcpt, (code, text) in exc.recipients.items())
        return failed(f"every recipient refused: {answers}",
                      bool(codes) and all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return failed(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}",
                      exc.smtp_code == 454)  # 454: temporary authentication failure
    if isinstance(exc, smtplib.SMTPResponseException):
        return failed(f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}",
                      400 <= exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return failed(f"server does not support it: {exc}", False)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return failed(f"server disconnected: {exc}", True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return failed(f"TLS certificate not trusted: {exc.verify_message or exc}", False)
    if isinstance(exc, OSError):  # refused, reset, timeout, DNS, TLS handshake …
        return failed(f"{type(exc).__name__}: {exc}", True)
    return failed(f"{type(exc).__name__}: {exc}", False)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class EmailNotifier:
    """One SMTP server, one sender, a fixed list of recipients. A connection per send:
    alert mail is rare, and a held connection would time out between alerts anyway."""

    def __init__(self, name: str, *, host: str, port: int, sender: str, to: Sequence[str],
                 starttls: bool = False, tls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, charts: bool = True):
        if tls and starttls:
            raise ValueError("use tls or starttls, not both")
        self.name = name
        self.host, self.port = host, port
        self.sender, self.to = sender, tuple(to)
        self.starttls, self.tls = starttls, tls
        self._username, self._password = username, password
        self.timeout = timeout
        self._ssl_context = ssl_context
        # True draws what a message carries (a message only carries charts that were asked
        # for); build_notifier passes the config's `charts`, false unless set.
        self.charts = charts

    def close(self) -> None:
        pass

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self._context())
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                smtp.starttls(context=self._context())
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: Message) -> Delivery:
        try:
            email = build_email(message, sender=self.sender, to=self.to,
                                max_charts=MAX_CHARTS if self.charts else 0)
            with self._connect() as smtp:
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(email, from_addr=self.sender,
                                            to_addrs=list(self.to))
        except Exception as exc:  # a Notifier answers, never raises
            delivery = classify(self.name, exc)
            if self._password and self._password in delivery.detail:
                return Delivery(ok=False, temporary=delivery.temporary,
                                detail=delivery.detail.replace(self._password, "***"))
            return delivery
        detail = f"email receiver {self.name!r}: sent {email['Message-ID']}"
        if refused:
            detail += "; refused: " + ", ".join(
                f"{rcpt} ({code})" for rcpt, (code, _) in refused.items())
        here = str(email["Message-ID"])
        refs = {}
        if _thread_parent(message) is None:
            refs = {f"thread:{a.run.path}": here for a in render.ordered(message)
                    if f"thread:{a.run.path}" not in message.refs}
        refs.update((f"message:{a.fingerprint}",
                     with_ref(message.refs, f"message:{a.fingerprint}", here))
                    for a in message.firing)
        return Delivery(ok=True, detail=detail, refs=refs)
