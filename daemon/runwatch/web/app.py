"""The status pages and their JSON, served on ``http.listen`` beside ``/healthz``,
``/readyz`` and ``/metrics``: read-only and server-rendered (Jinja2, autoescaped), with a
stylesheet of their own and no script at all — the Content-Security-Policy forbids any, so
a run named ``<script>…`` is text, and a page works air-gapped.

* ``/`` (``/api/v1/runs``): every watched run, worst first — verdict, state, step,
  heartbeat and progress ages, sparklines of loss and grad norm, the alerts on it — with
  filters in the query string (``?source=…&project=…&state=…&verdict=…``, each repeatable);
* ``/runs/<path>`` (``/api/v1/runs/<path>``): one run — its row, larger charts of its
  curves, every alert it has had (firing, pending, resolved and why) as the store holds them;
* ``/alerts`` (``/api/v1/alerts``): firing, pending and recently resolved alerts;
* ``/silences`` (``/api/v1/silences``): active, pending and expired silences;
* ``/status`` (``/api/v1/status``): each source's last tick, the outbox, the writer lease.

A page reads the store, the daemon's run board (``board.RunBoard``, kept from its ticks) and
what it knows of its lease — never a run's log or W&B.
With ``http.token_file`` set, pages and JSON ask for ``Authorization: Bearer <token>``;
the probes and ``/metrics`` stay open.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import jinja2
import structlog

from runwatch.analysis.characterize import Health, RunReport, characterize
from runwatch.config.rules import RuleSet
from runwatch.duration import format_duration
from runwatch.engine import ENDED
from runwatch.model import AlertStatus, RunSnapshot, Series, Severity, status_word, told_once
from runwatch.notify.report_json import number, run_json
from runwatch.state_json import alert_json, silence_json, silence_state, status_json
from runwatch.store.base import Store, StoreError
from runwatch.web.auth import Gate
from runwatch.web.board import RunBoard, RunRow, spark

log = structlog.get_logger("runwatch.web")
RECENTLY = 86400.0  # resolved alerts shown: those resolved within this
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none';"
       " form-action 'none'; frame-ancestors 'none'")
_HEADERS = [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"),
            ("X-Frame-Options", "DENY")]
PAGES = ("/", "/alerts", "/silences", "/status")


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a page may read: the store, the clock, the configured source names, and who
    acts on a shared store (``leader()``: a line such as ``leading (epoch 3)``)."""

    store: Store
    clock: Callable[[], float]
    sources: Callable[[], Iterable[str]]
    board: RunBoard = field(default_factory=RunBoard)
    leader: Callable[[], str] = lambda: ""
    token: Callable[[], str | None] = lambda: None
    users: Callable[[], Mapping[str, str] | None] = lambda: None
    rules: Callable[[], RuleSet] = lambda: RuleSet(rules=(), origins={}, aliases={})


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["status"] = status_word
    return env


def _template(name: str) -> str:
    return resources.files("runwatch.web").joinpath("templates", name).read_text("utf-8")


def _stylesheet() -> bytes:
    return resources.files("runwatch.web").joinpath("static", "style.css").read_bytes()


class Pages:
    """A WSGI app for the paths in ``PAGES``, ``/api/v1/…`` and ``/static/style.css``;
    None from :meth:`route` for any other path (the caller's)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.env = _environment()
        self.css = _stylesheet()
        self.gate = Gate()

    def route(self, path: str) -> Callable[..., Any] | None:
        if path == "/" or path in PAGES or path.startswith(("/api/v1/", "/runs/")) or path == (
                "/static/style.css"):
            return self
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> list[bytes]:
        # PEP 3333 hands the path over as Latin-1: a run directory named in UTF-8 comes back.
        path = (environ.get("PATH_INFO", "") or "/").encode("latin-1", "replace").decode(
            "utf-8", "replace")
        if environ.get("REQUEST_METHOD", "GET") == "HEAD":
            body = self._respond(environ, start_response, path)
            return [b""] if body else body
        return self._respond(environ, start_response, path)

    def _respond(self, environ: dict[str, Any], start_response: Callable[..., Any],
                 path: str) -> list[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _send(start_response, "405 Method Not Allowed", "text/plain",
                         b"read-only: GET only\n", [("Allow", "GET, HEAD")])
        if path == "/static/style.css":
            return _send(start_response, "200 OK", "text/css", self.css)
        if not self._allowed(environ):
            return _send(start_response, "401 Unauthorized", "text/plain",
                         b"a bearer token or a user's password is needed\n",
                         [("WWW-Authenticate", 'Basic realm="runwatch", charset="UTF-8"'),
                          ("WWW-Authenticate", 'Bearer realm="runwatch"')])
        api = path.startswith("/api/v1/")
        name = path[len("/api/v1/"):] if api else (path.lstrip("/") or "runs")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        build = {"runs": lambda: self._runs(query), "alerts": self._alerts,
                 "silences": self._silences, "status": self._status}.get(name)
        if name.startswith("runs/") and len(name) > len("runs/"):
            run_path = name[len("runs/"):]
            build = lambda: self._run(run_path)  # noqa: E731
            name = "run"
        if build is None:
            return _send(start_response, "404 Not Found", "text/plain",
                         f"not found: {', '.join(PAGES)}\n".encode())
        try:
            found = build()
            if found is None:
                return _send(start_response, "404 Not Found", "text/plain",
                             b"no such run on this replica's board\n")
            data, view = found
            if api:
                return _json(start_response, "200 OK", data)
            return self._page(start_response, f"{name}.html", view)
        except StoreError as exc:
            status, detail = "503 Service Unavailable", f"the store is unavailable: {exc}"
        except Exception as exc:  # a page must never take the server down, nor show a trace
            status, detail = "500 Internal Server Error", f"cannot show {path}: " + (
                f"{type(exc).__name__}: {exc}")[:300]
            log.error("status page failed", path=path, error=detail)
        if api:
            return _json(start_response, status, {"error": detail})
        return self._page(start_response, "error.html", {"detail": detail}, status)

    def _allowed(self, environ: Mapping[str, Any]) -> bool:
        try:
            token, users = self.context.token(), self.context.users()
            return self.gate.allows(str(environ.get("HTTP_AUTHORIZATION", "")), token=token,
                                    users=users)
        except (OSError, UnicodeDecodeError, ValueError):
            return False  # a file gone or broken since start-up: closed, not open

    def _page(self, start_response: Callable[..., Any], template: str, view: Mapping[str, Any],
              status: str = "200 OK") -> list[bytes]:
        now = self.context.clock()
        body = self.env.get_template(template).render(
            now=now, leader=self.context.leader(), pages=PAGES, **view)
        return _send(start_response, status, "text/html", body.encode())

    # --- the pages' data: (JSON, what the template reads) ---------------------------------

    def _runs(self, query: Mapping[str, list[str]]) -> tuple[Any, Mapping[str, Any]]:
        now = self.context.clock()
        holding: dict[str, list[Any]] = {}
        store = self.context.store
        found = {a.fingerprint: a for a in [  # (one that resolved between the two: as now)
            *store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING)),
            *store.alerts(status=AlertStatus.RESOLVED, resolution=ENDED)]}
        for alert in found.values():
            holding.setdefault(alert.run.path, []).append(alert)
        rows = []
        for row in self.context.board.rows():
            alerts = sorted((a for a in holding.get(row.ref.path, ())
                             if a.status != AlertStatus.RESOLVED or row.state.ended),
                            key=_worst_first)
            rows.append((row, verdict(row, alerts), alerts))
        every = {"source": sorted({r.ref.source for r, _, _ in rows}),
                 "project": sorted({r.ref.project for r, _, _ in rows if r.ref.project}),
                 "state": sorted({str(r.state) for r, _, _ in rows}),
                 "verdict": [str(h) for h in reversed(Health)]}
        wanted = {k: set(v) for k, v in query.items() if k in every}
        shown = [(r, v, a) for r, v, a in rows
                 if all(_field(r, v, k) in values for k, values in wanted.items())]
        shown.sort(key=lambda t: (-t[1].rank, t[0].state.ended, t[0].ref.display_name,
                                  t[0].ref.path))
        data = [run_row_json(r, v, a, now) for r, v, a in shown]
        view = {"runs": shown,
                "every": every, "wanted": wanted, "total": len(rows)}
        return data, view

    def _run(self, path: str) -> tuple[Any, Mapping[str, Any]] | None:
        row = self.context.board.row(path)
        if row is None:
            return None
        now = self.context.clock()
        history = sorted((a for a in self.context.store.alerts(run_path=path)
                          if a.status != AlertStatus.INACTIVE),  # (rules that never fired)
                         key=lambda a: -(a.fired_at or a.active_since or a.last_seen or 0.0))
        holding = [a for a in history if a.status in (AlertStatus.FIRING, AlertStatus.PENDING)
                   or (row.state.ended and ended_with(a))]
        health = verdict(row, holding)
        sent = self.context.store.deliveries(a.fingerprint for a in history)
        told: dict[str, list[tuple[Any, str]]] = {}  # fingerprint -> (delivery, as what)
        for d in sent:
            for fp in d.firing:
                told.setdefault(fp, []).append((d, "firing"))
            for fp in d.resolved:
                told.setdefault(fp, []).append((d, "resolved"))
        for a in history:  # what the training code raised was told, not resolved
            if told_once(a):
                told[a.fingerprint] = [(d, "told") for d, _ in told.get(a.fingerprint, ())]
        data = run_row_json(row, health, sorted(holding, key=_worst_first), now) | {
            "history": [alert_json(a) | {"deliveries": [
                {"receiver": d.receiver, "as": what, "sent_at": d.sent_at,
                 "decided_at": d.decided_at, "id": d.id}
                for d, what in told.get(a.fingerprint, ())]} for a in history]}
        report = self._report(row, holding, now)
        data["report"] = run_json(report)
        charts = {name: chart(curve) for name, curve in row.curves.items()}
        return data, {"row": row, "verdict": health, "history": history, "charts": charts,
                      "trend": row.loss_trend, "told": told, "report": report}

    def _report(self, row: RunRow, holding: Sequence[Any], now: float) -> RunReport:
        """``characterize``'s report from what the board holds of the run — its curves, as
        thinned — and the store's alerts (those firing when an ended run ended counted as
        firing), no rule replayed (the rules say only what kind each alert is and the grad
        norm's bounds): the daemon's own judgement, as the digest counts it."""
        snapshot = RunSnapshot(
            ref=row.ref, state=row.state, ended_why=row.ended_why, heartbeat=row.heartbeat,
            progress=row.progress, started=row.started, last_step=row.step, tags=row.tags,
            config=row.config, keys=frozenset(row.curves),
            history=dict(row.curves))
        stored = [dataclasses.replace(a, status=AlertStatus.FIRING) if ended_with(a) else a
                  for a in holding]
        rule_set = self.context.rules()
        return characterize(snapshot, rules=rule_set.rules, aliases=rule_set.aliases, now=now,
                            stored=stored, replayed=False)

    def _alerts(self) -> tuple[Any, Mapping[str, Any]]:
        now = self.context.clock()
        store = self.context.store
        found = store.alerts(status=(AlertStatus.FIRING, AlertStatus.PENDING,
                                     AlertStatus.RESOLVED))
        by_status: dict[str, list[Any]] = {"firing": [], "pending": [], "told": [],
                                           "resolved": []}
        for alert in sorted(found, key=_worst_first):
            if alert.status == AlertStatus.RESOLVED and (
                    alert.resolved_at is None or alert.resolved_at < now - RECENTLY):
                continue
            by_status[status_word(alert)].append(alert)  # told: raised by the training code
        data = {k: [alert_json(a) for a in v] for k, v in by_status.items()}
        return data, {"groups": by_status, "recently": format_duration(RECENTLY)}

    def _silences(self) -> tuple[Any, Mapping[str, Any]]:
        now = self.context.clock()
        silences = self.context.store.silences(now, include_expired=True)
        rows = [(s, silence_state(s, now)) for s in silences]
        order = {"active": 0, "pending": 1, "expired": 2}
        rows.sort(key=lambda r: (order[r[1]], -r[0].ends_at if r[1] == "expired" else
                                 r[0].ends_at))
        return [silence_json(s, now) for s, _ in rows], {"silences": rows}

    def _status(self) -> tuple[Any, Mapping[str, Any]]:
        store = self.context.store
        saved = store.load_status()
        data = status_json(sources=list(self.context.sources()), saved=saved,
                           outbox=store.outbox_depth(),
                           firing=len(store.alerts(status=AlertStatus.FIRING)),
                           leases=store.leases())
        data["this_replica"] = self.context.leader() or None
        return data, {"status": data}


def ended_with(alert: Any) -> bool:
    """An alert that held until its run ended (resolved because of it, not by recovering)."""
    return alert.status == AlertStatus.RESOLVED and alert.resolution.startswith(ENDED)


def verdict(row: RunRow, alerts: Iterable[Any]) -> Health:
    """As the digest's (``characterize``): the worst alert firing on the run — on an ended
    run, firing when it ended — and a worsening loss curve (while it runs) is a warning."""
    health = Health.HEALTHY
    for alert in alerts:
        if alert.status == AlertStatus.FIRING or ended_with(alert):
            if alert.severity == Severity.CRITICAL:
                return Health.CRITICAL
            if alert.severity == Severity.WARNING:
                health = Health.WARNING
    if health is Health.HEALTHY and row.loss_worsening:  # (as characterize, ended or not)
        return Health.WARNING
    return health


def chart(curve: Series) -> Mapping[str, Any]:
    """A curve drawn larger than its sparkline: the points in a 600 × 160 box and the
    first and last steps and the extreme values for the axes."""
    return {"points": spark(curve, 600.0, 160.0), "first": curve.steps[0] if curve.steps
            else None, "last": curve.steps[-1] if curve.steps else None,
            "low": min(curve.values, default=None), "high": max(curve.values, default=None)}


def _field(row: RunRow, health: Health, name: str) -> str:
    return {"source": row.ref.source, "project": row.ref.project, "state": str(row.state),
            "verdict": str(health)}[name]


def run_row_json(row: RunRow, health: Health, alerts: Sequence[Any], now: float
                 ) -> dict[str, Any]:
    ref = row.ref
    return {"run": {"path": ref.path, "id": ref.id, "name": ref.name, "project": ref.project,
                    "entity": ref.entity, "source": ref.source, "location": ref.location},
            "verdict": str(health), "state": str(row.state), "ended_why": row.ended_why or None,
            "step": row.step, "started": row.started, "heartbeat": row.heartbeat,
            "heartbeat_age": None if row.heartbeat is None else now - row.heartbeat,
            "progress": row.progress,
            "progress_age": None if row.progress is None else now - row.progress,
            "tags": list(row.tags),
            "total": row.total, "steps_per_s": row.rate, "done_at": row.done_at,
            "loss_trend": str(row.loss_trend.direction) if row.loss_trend else None,
            "alerts": [{"rule": a.rule, "status": str(a.status), "severity": str(a.severity),
                        "summary": a.summary} for a in alerts],
            "curves": {name: {"steps": list(c.steps), "values": [number(v) for v in c.values]}
                       for name, c in row.curves.items()}}


def _worst_first(alert: Any) -> tuple[int, float, str, str]:
    return (-Severity(alert.severity).rank, -(alert.fired_at or alert.active_since or 0.0),
            alert.run.path, alert.rule)


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return ""
    left = now - when
    return (f"{format_duration(left)} ago" if left >= 0
            else f"in {format_duration(-left)}")


def _when(when: float | None) -> str:
    if when is None:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _send(start_response: Callable[..., Any], status: str, kind: str, body: bytes,
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", f"{kind}; charset=utf-8"), ("Content-Length", str(len(body))),
               *_HEADERS, *(extra or [])]
    start_response(status, headers)
    return [body]


def _json(start_response: Callable[..., Any], status: str, data: Any) -> list[bytes]:
    return _send(start_response, status, "application/json",
                 json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
