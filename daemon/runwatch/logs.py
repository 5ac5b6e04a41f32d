"""Logging for the daemon: structlog, JSON lines off a terminal, readable on one.

Library modules log through the standard ``logging`` module (``runwatch.notify.*`` …);
their records go through the same structlog processors, so every line has the same shape
and carries the context bound for the current tick (``source``, ``run``, ``receiver`` …).
A redaction step replaces every secret of the loaded config — tokens, passwords, API
keys, webhook URLs — wherever it would appear in a line, as a last line of defence.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from runwatch.config import Config

REDACTED = "***"


class Redactor:
    """A structlog processor that masks known secret values in every string of an event."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        found = {s for s in secrets if s and len(s) >= 4}
        with self._lock:
            self._secrets = tuple(sorted(found, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self.mask(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self._secrets:
            return event
        return {k: self._clean(v) for k, v in event.items()}


redactor = Redactor()


class OncePerStall(logging.Filter):
    """APScheduler warns "Execution of job … skipped: maximum number of running instances
    reached" every time a job comes due while the worker is busy — each second for a stuck
    worker. One line per stall is enough: a job's next skip within ``quiet`` seconds of its
    last is dropped."""

    def __init__(self, quiet: float = 600.0) -> None:
        super().__init__()
        self.quiet = quiet
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances" not in str(record.msg):
            return True
        job = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        last = self._last.get(job)
        self._last[job] = record.created
        return last is None or record.created - last >= self.quiet


def config_secrets(config: Config) -> list[str]:
    """Every secret value the config holds, for log redaction."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(config)
    password = urlsplit(config.store).password
    if password:
        found.append(password)
    if os.environ.get("WANDB_API_KEY"):
        found.append(os.environ["WANDB_API_KEY"])
    return found


def configure(fmt: str = "auto", *, stream: TextIO | None = None,
              level: int = logging.INFO) -> None:
    """Route structlog and stdlib logging to ``stream`` as JSON (``json``), readable
    console lines (``console``), or whichever suits the stream (``auto``)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    if fmt == "json":
        render: Any = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, redactor, render]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", bool)())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, OncePerStall) for f in scheduler.filters):
        scheduler.addFilter(OncePerStall())
    for noisy in ("apscheduler", "urllib3", "slack_sdk", "wandb", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get(name: str = "runwatch") -> Any:
    return structlog.get_logger(name)
