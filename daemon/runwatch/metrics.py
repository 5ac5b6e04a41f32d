"""What the daemon exposes on ``/metrics`` (Prometheus), and the health endpoints.

One registry per daemon (not prometheus_client's global one), so tests and a reload
never see another instance's series. The HTTP server is the standard library's WSGI
server in a thread; prometheus_client renders the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# What the store holds, for /metrics: alerts by (state, severity), and the outbox's depth.
StoreGauges = tuple[Mapping[tuple[str, str], int], int]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ticks = Counter("runwatch_ticks", "Ticks run, by source and outcome",
                             ["source", "outcome"], registry=r)
        self.tick_seconds = Histogram(
            "runwatch_tick_duration_seconds", "Wall time of one tick, by source", ["source"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.runs = Gauge("runwatch_runs_watched", "Runs evaluated in the last tick",
                          ["source"], registry=r)
        self.source_errors = Counter("runwatch_source_errors", "Errors reported by sources",
                                     ["source"], registry=r)
        self.last_tick = Gauge("runwatch_last_tick_timestamp_seconds",
                               "When the last successful tick of a source ended", ["source"],
                               registry=r)
        self.notifications = Counter("runwatch_notifications",
                                     "Notifications by receiver and outcome (sent, failed,"
                                     " retrying)", ["receiver", "outcome"], registry=r)
        self.api_requests = Counter("runwatch_api_requests", "Requests to a source's API",
                                    ["source"], registry=r)
        self.api_bytes = Counter("runwatch_api_bytes", "Bytes sent and received from a"
                                 " source's API", ["source", "direction"], registry=r)
        self.reloads = Counter("runwatch_config_reloads", "Config reloads by outcome",
                               ["outcome"], registry=r)
        self.reload_ok = Gauge("runwatch_config_last_reload_successful",
                               "1 when the last reload succeeded", registry=r)
        self.leader = Gauge("runwatch_leader", "1 while this replica holds the writer lease"
                            " and acts, 0 while it stands by", registry=r)
        self.lease_epoch = Gauge("runwatch_lease_epoch", "The writer lease's epoch as this"
                                 " replica last saw it", registry=r)
        self.lease_ttl = Gauge("runwatch_lease_ttl_seconds", "How long the writer lease lasts"
                               " unless renewed (ha.lease_ttl)", registry=r)

    def read_at_scrape(self, read: Callable[[], StoreGauges | None]) -> None:
        """``runwatch_alerts`` and ``runwatch_outbox_depth`` from ``read()`` at each scrape:
        they live in the store, and reading it after every tick would put that I/O on the
        tick's path. ``read()`` returns None when the store does not answer."""
        self.registry.register(_StoreCollector(read))


class _StoreCollector(Collector):
    def __init__(self, read: Callable[[], StoreGauges | None]) -> None:
        self._read = read
        self._last: StoreGauges = ({}, 0)

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families(({}, 0))  # without it, registering would read the store

    def collect(self) -> list[GaugeMetricFamily]:
        read = self._read()
        if read is not None:  # a store that does not answer: its last figures stay
            self._last = read
        return self._families(self._last)

    @staticmethod
    def _families(gauges: StoreGauges) -> list[GaugeMetricFamily]:
        counts, depth = gauges
        alerts = GaugeMetricFamily("runwatch_alerts", "Alerts in the store by state and"
                                   " severity", labels=["state", "severity"])
        for (state, severity), n in counts.items():
            alerts.add_metric([state, severity], n)
        outbox = GaugeMetricFamily("runwatch_outbox_depth", "Notifications waiting in the"
                                   " outbox", value=depth)
        return [alerts, outbox]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds are not news


def health_app(metrics: Metrics, ready: Callable[[], tuple[bool, str]],
               alive: Callable[[], tuple[bool, str]] | None = None,
               pages: Any = None) -> Callable[..., Any]:
    """``/healthz`` (``alive()``: the process answers and its worker moves), ``/readyz``
    (``ready()``), ``/metrics``; and the status pages (``web.app.Pages``), when given."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        page = pages.route(path) if pages is not None else None
        if page is not None:
            return page(environ, start_response)
        if path == "/healthz":
            ok, detail = alive() if alive is not None else (True, "ok")
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable",
                         detail + "\n")
        if path == "/readyz":
            ok, detail = ready()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable",
                         detail + "\n")
        if path == "/metrics":
            return prometheus(environ, start_response)
        return _text(start_response, "404 Not Found", "not found: /healthz /readyz /metrics\n")

    return app


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]


class HttpServer:
    """The health/metrics endpoint on ``host:port`` in a background thread."""

    def __init__(self, host: str, port: int, app: Callable[..., Any]) -> None:
        self._server = make_server(host, port, app, server_class=_Server,
                                   handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="runwatch-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
