"""One long-lived, bounded GraphQL client per W&B source, on top of ``wandb.Api``.

Why this path (wandb 0.31): every public-API request goes through the ``wandb-core``
sidecar, which owns the HTTP transport, the auth headers and the retries. ``wandb.Api``'s
high-level objects would load config and summary lazily, one query per run, and
``scan_history`` downloads each run's whole history (parquet) — the cost of a tick must
grow with new data, so runwatch sends its own queries through the same client
(``Api._service_api.execute_graphql``, the call every ``wandb.Api`` object uses) and keeps
one client for the life of the source: constructing ``wandb.Api`` costs a ``Viewer`` query.

Bounds: wandb-core retries a failed GraphQL request itself (by default up to 20 attempts,
2–60 s apart, honouring ``Retry-After``). A tick must not hide minutes of retries, so the
client is built with ``x_graphql_retry_max`` and friends set small, and every call waits
at most ``timeout`` for the sidecar (the caller passes what is left of its tick budget).
"""

from __future__ import annotations

import json
import netrc
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

# Retry settings handed to wandb-core for this client's requests.
RETRY_MAX = 2
RETRY_WAIT_MIN = 1.0
RETRY_WAIT_MAX = 5.0


class WandbError(Exception):
    """A failed W&B request, in one line, with whether a later retry can help.

    ``kind``: ``auth`` (key rejected or missing), ``not-found`` (entity or project),
    ``unavailable`` (5xx, network, sidecar down), ``rate-limited`` (429), ``timeout``,
    ``query`` (the server refused the query itself).
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def temporary(self) -> bool:
        return self.kind in ("unavailable", "rate-limited", "timeout")


def classify(exc: BaseException) -> WandbError:
    """Any exception of a W&B call as a :class:`WandbError` with a one-line message."""
    if isinstance(exc, WandbError):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(response, "http_status", None) or None
    text = " ".join(str(exc).split()) or type(exc).__name__
    if status is None:  # wandb-core's retry errors carry the status only in their text
        found = _STATUS.search(text)
        status = int(found.group(1)) if found else None
    # A status says what happened; the text is read only where there is none to go by (a
    # 429 or 503 whose body mentions the API key is still temporary).
    if status in (401, 403):
        return WandbError(f"W&B rejected the API key (HTTP {status}): {_short(text)}",
                          kind="auth", status=status)
    if status == 429:
        # wandb-core keeps the answer's headers (Retry-After) to itself: the source says
        # when it tries again.
        return WandbError("rate limited by W&B (HTTP 429)", kind="rate-limited", status=status)
    if status is not None and (status >= 500 or status == 408):
        return WandbError(f"W&B unavailable (HTTP {status}): {_short(text)}", kind="unavailable",
                          status=status)
    lowered = text.lower()
    if "api key" in lowered or "authenticat" in lowered or "unauthorized" in lowered \
            or "not logged in" in lowered:
        code = f" (HTTP {status})" if status else ""
        return WandbError(f"W&B rejected the API key{code}: {_short(text)}", kind="auth",
                          status=status)
    if "did not respond in time" in lowered or "timeout" in lowered or "timed out" in lowered \
            or "deadline exceeded" in lowered:
        return WandbError(f"W&B request timed out: {_short(text)}", kind="timeout", status=status)
    if status is None:
        return WandbError(f"W&B unreachable: {_short(text)}", kind="unavailable")
    if status == 404:
        return WandbError(f"not found (404): {_short(text)}", kind="not-found", status=status)
    return WandbError(f"W&B refused the request (HTTP {status}): {_short(text)}", kind="query",
                      status=status)


def _stored_key(base_url: str) -> str | None:
    """The key wandb itself would find without asking: WANDB_API_KEY, else ~/.netrc (or
    $NETRC) for the API host — what `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        found = netrc.netrc(os.environ.get("NETRC")).authenticators(
            urlsplit(base_url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return found[2] if found and found[2] else None


_STATUS = re.compile(r"\bHTTP (\d{3})\b")
# What wandb-core's client says when ``timeout`` passed without its answer.
_SIDECAR_WAIT = "did not respond in time"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WandbClient:
    """``execute(query, variables, timeout)`` against one W&B deployment; thread-safe."""

    def __init__(self, *, base_url: str, api_key: str | None, timeout: float = 30.0,
                 retry_max: int = RETRY_MAX) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._retry_max = retry_max
        self._api: Any = None
        self._lock = threading.Lock()
        # Cumulative, for /metrics: GraphQL requests sent and their bytes each way.
        self.requests = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:  # never the key
        return f"WandbClient({self.base_url!r})"

    def _connect(self) -> Any:
        with self._lock:
            if self._api is not None:
                return self._api
            import wandb

            # Global settings are copied into each Api when it is built: set this
            # client's retry bounds just before building it.
            wandb.setup(wandb.Settings(
                x_graphql_retry_max=self._retry_max,
                x_graphql_retry_wait_min_seconds=RETRY_WAIT_MIN,
                x_graphql_retry_wait_max_seconds=RETRY_WAIT_MAX,
                x_graphql_timeout_seconds=self._timeout,
                silent=True,
            ))
            key = self._api_key or _stored_key(self.base_url)
            if not key:  # wandb.Api would prompt for one on a terminal: a daemon must not
                raise WandbError(f"no W&B API key for {self.base_url}: set api_key (or"
                                 " api_key_file) in the source, WANDB_API_KEY, or run"
                                 " `wandb login`", kind="auth")
            try:
                api = wandb.Api(api_key=key, overrides={"base_url": self.base_url},
                                timeout=int(max(1, self._timeout)))
            except Exception as exc:
                raise classify(exc) from None
            if not hasattr(api, "_service_api"):
                raise WandbError(f"this wandb version ({wandb.__version__}) has no GraphQL"
                                 " client runwatch knows; install wandb 0.31", kind="query")
            self._api = api
            return api

    def execute(self, query: str, variables: Mapping[str, Any] | None = None, *,
                timeout: float | None = None) -> dict[str, Any]:
        """The ``data`` of one GraphQL request; :class:`WandbError` on any failure."""
        api = self._connect()
        wait = self._timeout if timeout is None else max(0.1, min(timeout, self._timeout))
        variables = dict(variables or {})
        self.requests += 1
        self.bytes_sent += len(query) + len(json.dumps(variables))

        def parse(text: str) -> Any:
            self.bytes_received += len(text)
            return json.loads(text)

        try:
            data = api._service_api.execute_graphql(query, variables, timeout=wait, parse=parse)
        except Exception as exc:
            error = classify(exc)
            if error.kind == "timeout" and _SIDECAR_WAIT in str(exc):
                # wandb-core's words blame itself ("busy"), but it waits on W&B: for an
                # answer, or out a 429's Retry-After longer than ``wait``.
                error = WandbError(f"W&B request timed out: no answer within {wait:.3g} s",
                                   kind="timeout")
            raise error from None
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        """Drop the client; wandb releases its sidecar session when the ``Api`` object is
        collected (its finalizer), and the sidecar itself at exit."""
        with self._lock:
            self._api = None
