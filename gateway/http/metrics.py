"""Prometheus metrics for one gateway app, on a registry of its own (several apps in one process don't clash).

What is measured, and where it comes from:

- HTTP requests by route, method and status, and their latency: `GatewayMetrics.instrument` wraps the
  app's ASGI entry point. Routes are a fixed set (`/mcp`, `/sse`, `/messages`, `/api`, ...), never raw paths.
- Tool calls by tool and status (success|error|denied) and their latency: `Tracker.on_recorded`. No user or
  tenant labels (cardinality). Tool labels are bounded (gateway.http.metric_labels): names that are not real
  tools count as `_unknown`, real tools beyond `MAX_TOOL_LABELS` as `_other` (a client can send any name).
- Authentication failures by reason: `GatewayTokenVerifier.on_refused` (the verifier's short, fixed
  reasons), plus `no token` for a 401 to a request without an Authorization header.
- Tracking writer: queue depth (records not yet in the database), flush batch sizes, records written,
  dropped, spilled, repaired and quarantined, whether the database is reachable. Read from `writer.stats`
  at scrape time.
- Active analytics sessions in this process (`open_sessions()`).
- Upstream health, read at scrape time from `upstream_health`: a mapping `{upstream_name: state}` or a
  zero-argument callable returning one (gateway.mcp.upstreams.Upstreams.health_states), where `state` is
  "up"/"down" (other strings, e.g. "unknown", give no sample), a bool or number (1 healthy, 0 not), or an
  object with a boolean `healthy` attribute. Exposed as `mcp_gateway_upstream_up{upstream="name"}`.

gateway/wiring.py connects `tool_called` to the Tracker and `auth_refused` to the token verifier.

OpenTelemetry traces are gateway/otel.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway import __version__
from gateway.http.metric_labels import MAX_TOOL_LABELS, OTHER, UNKNOWN, ToolLabels
from gateway.tracking.records import ToolCalled

if TYPE_CHECKING:
    from gateway.tracking.records import WriterStats

log = logging.getLogger("mcp_gateway")

__all__ = ["MAX_TOOL_LABELS", "OTHER", "UNKNOWN", "GatewayMetrics", "route_of", "upstream_health"]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_ROUTES = ("/mcp", "/sse", "/messages", "/.well-known", "/api", "/dashboard", "/health", "/ready", "/metrics")
# Any token is a method to the HTTP server: the label keeps the standard ones, anything else is `other`.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(path: str) -> str:
    """A fixed label for a request path (raw paths would be unbounded)."""
    for route in _ROUTES:
        if path == route or path.startswith(route + "/") or (route == "/.well-known" and path.startswith(route)):
            return route
    return "other"


def method_of(scope: Scope) -> str:
    """A fixed label for a request method (a client can send any token as one)."""
    method = scope.get("method", "-")
    return method if method in _METHODS else "other"


class WriterView(Protocol):
    """What metrics read from the tracking writer at scrape time."""

    @property
    def stats(self) -> WriterStats: ...

    @property
    def backlog(self) -> int: ...


class GatewayMetrics:
    """All metrics of one app. `registry` is this app's own CollectorRegistry."""

    def __init__(self, *, writer: WriterView, open_sessions: Callable[[], int], instance_id: str,
                 upstream_health: Any = None) -> None:
        self.writer = writer
        self.open_sessions = open_sessions
        self.instance_id = instance_id
        self.upstream_health = upstream_health
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("mcp_gateway_http_requests", "HTTP requests served, by route, method and status.",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("mcp_gateway_http_request_duration_seconds",
                                      "HTTP request duration (for /sse: the stream's lifetime), by route.",
                                      ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.http_in_flight = Gauge("mcp_gateway_http_requests_in_flight", "HTTP requests being served now.",
                                    registry=r)
        self.tool_calls = Counter("mcp_gateway_tool_calls", "Tool calls, by tool and status (success|error|denied).",
                                  ["tool", "status"], registry=r)
        self.tool_latency = Histogram("mcp_gateway_tool_call_duration_seconds", "Tool call duration, by tool.",
                                      ["tool"], buckets=_LATENCY_BUCKETS, registry=r)
        self.auth_failures = Counter("mcp_gateway_auth_failures", "Refused bearer tokens, by reason.", ["reason"],
                                     registry=r)
        self.flush_batch = Histogram("mcp_gateway_writer_flush_batch_size", "Records written per writer flush.",
                                     buckets=_BATCH_BUCKETS, registry=r)
        r.register(_StateCollector(self))
        self.tool_labels = ToolLabels()  # a component of its own; its registry source is set in gateway/wiring.py
        self._flushes_seen = 0
        # Each labelled child looked up once: `labels()` validates and locks on every call. Both keys are bounded
        # (fixed routes and methods, the app's own statuses; tool labels by ToolLabels, three statuses).
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._tool_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    # -- hooks ----------------------------------------------------------------------------------

    def tool_called(self, record: ToolCalled) -> None:
        # Only tools/call names a tool; other methods' names (resource URIs, prompt names) get no label of their own.
        name = record.tool_name if getattr(record, "method", "tools/call") == "tools/call" else None
        key = (self.tool_labels.label(name or None, record.status), record.status)
        children = self._tool_children.get(key)
        if children is None:
            children = self._tool_children[key] = (self.tool_calls.labels(*key), self.tool_latency.labels(key[0]))
        children[0].inc()
        children[1].observe(record.duration_ms / 1000.0)

    def auth_refused(self, reason: str) -> None:
        self.auth_failures.labels(reason[:80]).inc()

    # -- HTTP -----------------------------------------------------------------------------------

    async def instrument(self, scope: Scope, receive: Receive, send: Send,
                         app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        """Call `app`, counting the request by route/method/status and timing it."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        route = route_of(scope["path"])
        status = 500
        started = time.perf_counter()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.http_in_flight.inc()
        try:
            await app(scope, receive, watch)
        finally:
            self.http_in_flight.dec()
            key = (route, method_of(scope), status)
            children = self._http_children.get(key)
            if children is None:
                children = self._http_children[key] = (self.http_requests.labels(route, key[1], str(status)),
                                                       self.http_latency.labels(route))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
            if status == 401 and not any(k == b"authorization" for k, _ in scope.get("headers", ())):
                self.auth_failures.labels("no token").inc()

    # -- exposition -----------------------------------------------------------------------------

    def sync_writer(self) -> None:
        """Feed flushes that happened since the last scrape into the batch-size histogram."""
        stats = self.writer.stats
        new = stats.flushes - self._flushes_seen
        if new > 0:
            for size in stats.flush_sizes[-min(new, len(stats.flush_sizes)):] if stats.flush_sizes else ():
                self.flush_batch.observe(size)
            self._flushes_seen = stats.flushes

    def render(self) -> bytes:
        self.sync_writer()
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        self.tool_labels.refresh_soon()
        return Response(self.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


class _StateCollector(Collector):
    """Gauges and counters read from the writer, the session registry and upstreams at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        writer = metrics.writer
        stats = writer.stats
        info = GaugeMetricFamily("mcp_gateway_build_info", "Gateway version and instance.",
                                 labels=["version", "instance"])
        info.add_metric([__version__, metrics.instance_id], 1)
        yield info
        yield GaugeMetricFamily("mcp_gateway_active_sessions",
                                "Analytics sessions open in this process.", value=metrics.open_sessions())
        yield GaugeMetricFamily("mcp_gateway_writer_queue_depth",
                                "Tracking records not yet written (in memory and spilled).", value=writer.backlog)
        yield GaugeMetricFamily("mcp_gateway_writer_database_up",
                                "1 when the tracking writer's last database attempt worked.",
                                value=1 if stats.database_up else 0)
        yield CounterMetricFamily("mcp_gateway_writer_records_written", "Tool-call records written.",
                                  value=stats.written)
        yield CounterMetricFamily("mcp_gateway_writer_records_dropped",
                                  "Tracking records dropped (spill failed or corrupt).", value=stats.dropped)
        yield CounterMetricFamily("mcp_gateway_writer_records_spilled",
                                  "Tracking records spilled to disk while the queue was full.", value=stats.spilled)
        yield CounterMetricFamily("mcp_gateway_writer_flushes", "Writer flushes committed.", value=stats.flushes)
        yield CounterMetricFamily("mcp_gateway_writer_records_repaired",
                                  "Tracking records the database refused as they were, stored with text cleaned.",
                                  value=stats.repaired)
        yield CounterMetricFamily("mcp_gateway_writer_records_quarantined",
                                  "Tracking records the database refused even cleaned: set aside, not stored.",
                                  value=stats.quarantined)
        upstreams = GaugeMetricFamily("mcp_gateway_upstream_up", "1 when an upstream MCP server is healthy.",
                                      labels=["upstream"])
        for name, up in upstream_health(metrics.upstream_health).items():
            upstreams.add_metric([name], up)
        yield upstreams


_UP = {"up": 1.0, "healthy": 1.0, "ok": 1.0, "down": 0.0, "unhealthy": 0.0}


def upstream_health(source: Any) -> dict[str, float]:
    """Normalise an upstream health source (see the module docstring) to {name: 1 up | 0 down}."""
    if source is None:
        return {}
    try:
        value = source() if callable(source) else source
        if not isinstance(value, Mapping):
            return {}
        out: dict[str, float] = {}
        for name, state in value.items():
            healthy = getattr(state, "healthy", state)
            if isinstance(healthy, Mapping):
                healthy = healthy.get("healthy", healthy.get("status"))
            if isinstance(healthy, str):
                if healthy.lower() in _UP:
                    out[str(name)] = _UP[healthy.lower()]
            elif healthy is not None:
                out[str(name)] = 1.0 if bool(healthy) else 0.0
        return out
    except Exception as exc:  # a scrape never fails because of an upstream probe
        log.warning("metrics: upstream_health unavailable: %s", type(exc).__name__)
        return {}

