"""Where notifications go. Only their shape is checked here; sending is ``notify/``'s."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from runwatch.config.fields import (
    Email,
    Secret,
    StrictModel,
    Url,
    WithSecrets,
    host_port,
)
from runwatch.fieldtypes import one_or_many


class SlackReceiver(WithSecrets):
    """A bot token and a channel (threads, updates, charts), or an incoming webhook."""

    token: Secret | None = None
    channel: str | None = None
    charts: bool = False
    webhook_url: Secret | None = None

    @model_validator(mode="after")
    def _token_or_webhook(self) -> SlackReceiver:
        if self.token is None and self.webhook_url is None:
            raise ValueError("needs a token and a channel, or a webhook_url")
        if self.token is not None and self.webhook_url is not None:
            raise ValueError("give a token or a webhook_url, not both")
        if self.token is not None and not self.channel:
            raise ValueError("a token needs a channel")
        if self.charts and self.token is None:
            raise ValueError("charts need a token (a webhook cannot upload files)")
        return self


class EmailReceiver(WithSecrets):
    smtp: str  # host:port; the port defaults to 465 with tls, 587 with starttls, else 25
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: Secret | None = None
    sender: Email = Field(alias="from")
    to: Annotated[tuple[Email, ...], BeforeValidator(one_or_many), Field(min_length=1)]

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        host_port(value, default_port=25)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EmailReceiver:
        if self.tls and self.starttls:
            raise ValueError("use tls or starttls, not both")
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self

    @property
    def smtp_host(self) -> str:
        return host_port(self.smtp, default_port=25)[0]

    @property
    def smtp_port(self) -> int:
        default = 465 if self.tls else 587 if self.starttls else 25
        return host_port(self.smtp, default_port=default)[1]


class WebhookReceiver(WithSecrets):
    url: Url
    bearer_token: Secret | None = None
    hmac_secret: Secret | None = None  # signs the request body


RECEIVER_KINDS = ("slack", "email", "webhook")


class Receiver(StrictModel):
    """A named destination: exactly one of ``slack``, ``email``, ``webhook``."""

    name: str = Field(min_length=1)
    slack: SlackReceiver | None = None
    email: EmailReceiver | None = None
    webhook: WebhookReceiver | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Receiver:
        given = [k for k in RECEIVER_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"receiver {self.name!r} needs exactly one of {', '.join(RECEIVER_KINDS)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RECEIVER_KINDS if getattr(self, k) is not None)
