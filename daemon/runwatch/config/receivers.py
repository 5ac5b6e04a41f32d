"""Where notifications go. Only their shape is checked here; sending is ``notify/``'s."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from runwatch.config.fields import (
    BaseUrl,
    Email,
    Secret,
    StrictModel,
    Url,
    WithSecrets,
    host_port,
    resolve,
)
from runwatch.fieldtypes import names_schema, one_or_many


class SlackReceiver(WithSecrets):
    """A bot token and a channel (threads, updates, charts), or an incoming webhook.

    ``api_url`` is the Web API's base for a token (GovSlack, a proxy; unset:
    ``https://slack.com/api/``); a webhook_url is already a whole address.
    """

    token: Secret | None = None
    channel: str | None = None
    charts: bool = False
    webhook_url: Secret | None = None
    api_url: BaseUrl | None = None

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
        if self.api_url is not None and self.token is None:
            raise ValueError("api_url is for a token; a webhook_url is the whole address")
        return self

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        # slack_sdk appends the method name ("chat.postMessage") to the base as it is.
        return value if value is None or value.endswith("/") else value + "/"


class EmailReceiver(WithSecrets):
    """An SMTP relay. ``ca_file`` is a PEM bundle trusted for its TLS certificate instead
    of the system's (a relay with a private or self-signed certificate); ``charts``
    inlines a PNG of the metric that fired. ``insecure: true`` lets ``runwatch validate``
    pass a password sent to a relay with neither tls nor starttls (a trusted network).

    The checks across fields are field validators reading the fields before them (hence
    this order), so that they are reported together with the other fields' errors."""

    smtp: str  # host:port; the port defaults to 465 with tls, 587 with starttls, else 25
    starttls: bool = False
    tls: bool = False
    insecure: bool = False
    username: str | None = None
    password: Secret | None = None
    sender: Email = Field(alias="from")
    to: Annotated[tuple[Email, ...], BeforeValidator(one_or_many), Field(min_length=1),
                  WithJsonSchema(names_schema(at_least=1))]
    charts: bool = False
    ca_file: Path | None = None

    @field_validator("ca_file", mode="before")
    @classmethod
    def _ca_file(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str | Path) or not str(value):
            return value
        path = resolve(value, info)
        try:
            ssl.create_default_context(cafile=str(path))
        except ssl.SSLError:  # an OSError too: first
            raise ValueError(f"CA file '{path}' holds no PEM certificate") from None
        except OSError as exc:
            raise ValueError(f"cannot read CA file '{path}': {exc.strerror or exc}") from None
        return path

    @field_validator("ca_file")
    @classmethod
    def _ca_file_needs_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and _known(info, "tls", "starttls") \
                and not (info.data["tls"] or info.data["starttls"]):
            raise ValueError("needs tls or starttls")
        return value

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        if "@" in value:  # not quoted: it may hold a password
            raise ValueError("expected host:port; a login goes in username and password")
        host_port(value, default_port=25)
        return value

    @field_validator("tls")
    @classmethod
    def _one_tls(cls, value: bool, info: ValidationInfo) -> bool:
        if value and _known(info, "starttls") and info.data["starttls"]:
            raise ValueError("use tls or starttls, not both")
        return value

    @field_validator("password")
    @classmethod
    def _needs_username(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and _known(info, "username") and not info.data["username"]:
            raise ValueError("a password needs a username")
        return value

    @property
    def smtp_host(self) -> str:
        return host_port(self.smtp, default_port=25)[0]

    @property
    def smtp_port(self) -> int:
        default = 465 if self.tls else 587 if self.starttls else 25
        return host_port(self.smtp, default_port=default)[1]


def _known(info: ValidationInfo, *names: str) -> bool:
    """Whether every field ``names`` validated (a field that failed says so itself)."""
    return all(name in info.data for name in names)


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

    @property
    def charts(self) -> bool | None:
        """Whether this receiver draws charts; None for a kind that has no such option."""
        return getattr(getattr(self, self.kind), "charts", None)
