"""From a parsed receiver config to a ready :class:`Notifier`, and the offline checks
``runwatch validate`` runs on receivers (no network: a token's kind, clear-text secrets)."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from runwatch.config.document import PathKey
from runwatch.config.fields import is_local_host
from runwatch.config.receivers import Receiver
from runwatch.notify.base import Notifier
from runwatch.notify.email import EmailNotifier
from runwatch.notify.slack import SlackNotifier, SlackWebhookNotifier
from runwatch.notify.webhook import WebhookNotifier


def build_notifier(receiver: Receiver, *, timeout: float = 10.0) -> Notifier:
    """The notifier for ``receiver``; nothing is contacted until the first send."""
    if receiver.slack is not None:
        slack = receiver.slack
        if slack.token is not None:
            assert slack.channel is not None  # the config model insists
            return SlackNotifier(receiver.name, token=slack.token.get_secret_value(),
                                 channel=slack.channel, charts=slack.charts,
                                 base_url=slack.api_url, timeout=timeout)
        assert slack.webhook_url is not None
        return SlackWebhookNotifier(receiver.name, url=slack.webhook_url.get_secret_value(),
                                    timeout=timeout)
    if receiver.email is not None:
        email = receiver.email
        context = None
        if email.ca_file is not None:  # instead of the system's CAs, as curl's --cacert
            context = ssl.create_default_context(cafile=str(email.ca_file))
        return EmailNotifier(
            receiver.name, host=email.smtp_host, port=email.smtp_port, sender=email.sender,
            to=email.to, starttls=email.starttls, tls=email.tls, username=email.username,
            password=email.password.get_secret_value() if email.password else None,
            charts=email.charts, timeout=timeout, ssl_context=context,
        )
    if receiver.webhook is not None:
        hook = receiver.webhook
        return WebhookNotifier(
            receiver.name, url=hook.url, timeout=timeout,
            bearer_token=hook.bearer_token.get_secret_value() if hook.bearer_token else None,
            hmac_secret=hook.hmac_secret.get_secret_value() if hook.hmac_secret else None,
        )
    raise ValueError(f"receiver {receiver.name!r} has no kind")  # the model forbids it


# Slack token prefixes (https://api.slack.com/authentication/token-types).
_TOKEN_KINDS = {
    "xoxp-": "a user token (xoxp-)",
    "xapp-": "an app-level token (xapp-)",
    "xoxa-": "a workspace app token (xoxa-)",
    "xoxe.": "a token-rotation token (xoxe.)",
    "xoxe-": "a refresh token (xoxe-)",
    "xoxc-": "a browser session token (xoxc-)",
    "xoxs-": "a session token (xoxs-)",
    "xoxr-": "a refresh token (xoxr-)",
}
MIN_HMAC_SECRET = 16


def receiver_problems(receiver: Receiver) -> list[str]:
    """What would keep ``receiver`` from working, one line each naming it; empty if none."""
    return [message for _, message in receiver_findings(receiver)]


def receiver_findings(receiver: Receiver) -> list[tuple[PathKey, str]]:
    """:func:`receiver_problems` with where each is in the receiver (``("slack", "token")``),
    for the config loader to put its file and line on it."""
    problems: list[tuple[PathKey, str]] = []

    def problem(where: PathKey, text: str) -> None:
        problems.append((where, f"receiver {receiver.name!r}: {text}"))

    if receiver.slack is not None:
        slack = receiver.slack
        if slack.token is not None:
            token = slack.token.get_secret_value().strip()
            kind = next((k for p, k in _TOKEN_KINDS.items() if token.startswith(p)), None)
            if kind is not None:
                problem(("slack", "token"),
                        f"slack token is {kind}; runwatch needs a bot token (xoxb-)")
            elif not token.startswith("xoxb-"):
                problem(("slack", "token"), "slack token does not look like a bot token (xoxb-…)")
        if slack.api_url is not None and not slack.api_url.lower().startswith("https://") \
                and not _is_local(slack.api_url):
            problem(("slack", "api_url"),
                    "slack api_url is http://: the bot token would be sent in clear")
        if slack.channel is not None:
            channel = slack.channel
            if any(c.isspace() for c in channel) or len(channel.lstrip("#")) > 80:
                problem(("slack", "channel"),
                        f"slack channel {channel!r} is not a channel name or ID")
        if slack.webhook_url is not None:
            url = slack.webhook_url.get_secret_value()
            if not url.lower().startswith(("https://", "http://")):
                problem(("slack", "webhook_url"), "slack webhook_url is not an https:// URL")
            elif not url.lower().startswith("https://") and not _is_local(url):
                problem(("slack", "webhook_url"),
                        "slack webhook_url is http://: the URL is its secret, sent in clear")
    if receiver.email is not None:
        email = receiver.email
        if email.password is not None and not (email.tls or email.starttls) \
                and not email.insecure and not is_local_host(email.smtp_host):
            problem(("email", "password"),
                    "email would send the password unencrypted: set starttls or tls")
        if email.tls and email.smtp_port == 587:
            problem(("email", "tls"), "email tls (implicit TLS) on port 587, which speaks"
                                      " STARTTLS: use starttls, or port 465")
        if email.starttls and email.smtp_port == 465:
            problem(("email", "starttls"), "email starttls on port 465, which speaks implicit"
                                           " TLS: use tls, or port 587")
    if receiver.webhook is not None:
        hook = receiver.webhook
        clear = hook.url.lower().startswith("http://") and not _is_local(hook.url)
        if clear and hook.bearer_token is not None:
            problem(("webhook", "bearer_token"),
                    "webhook sends its bearer token in clear over http://")
        if hook.hmac_secret is not None \
                and len(hook.hmac_secret.get_secret_value()) < MIN_HMAC_SECRET:
            problem(("webhook", "hmac_secret"),
                    f"webhook hmac_secret is shorter than {MIN_HMAC_SECRET} characters")
    return problems


def _is_local(url: str) -> bool:
    return is_local_host(urlsplit(url).hostname or "")


