"""OpenTelemetry traces: FastMCP's spans, exported when asked for, not built when nothing records them.

When OTEL_EXPORTER_OTLP_ENDPOINT is set and the OpenTelemetry SDK and OTLP exporter are installed,
FastMCP's spans are exported (`configure_otel`); otherwise one log line says why not. A tracer provider
configured any other way (`opentelemetry-instrument`, a user's own code) is used as it is.
"""

from __future__ import annotations

import logging
import os

import fastmcp
from opentelemetry import trace

from gateway import __version__

log = logging.getLogger("mcp_gateway.otel")

_configured = False  # the tracer provider is process-wide: set it once


def tracing_configured() -> bool:
    """A tracer provider is configured: spans opened now are recorded somewhere."""
    return type(trace.get_tracer_provider()).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def configure_otel_once() -> None:
    """The tracer provider is process-wide: configure it for the first app of the process only."""
    global _configured
    if not _configured:
        _configured = True
        configure_otel()


def configure_otel(service_name: str = "mcp-gateway") -> bool:
    """Export FastMCP's OpenTelemetry spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    Standard OTEL_* variables (headers, protocol, service name) are read by the SDK itself.
    Returns True when an exporter was installed.
    """
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry export is not installed; "
                    "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http to enable it")
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
                                "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry spans exported to %s", endpoint)
    return True


def skip_unrecorded_spans() -> None:
    """FastMCP opens its spans for every request even when no tracer provider is configured and nothing
    records them: it still reads the request's token, session and protocol version for their attributes
    and attaches a context per span (three spans for a call to a mounted server). Called once the gateway
    is about to serve, after everything that could configure a provider has run: with none, FastMCP is set
    to `propagation_only`, which opens no spans while a client's trace context in `_meta` still parents
    whatever the call goes on to do (a call to an upstream carries it on). A mode set on purpose
    (FASTMCP_TELEMETRY_MODE) is kept."""
    if tracing_configured() or fastmcp.settings.telemetry_mode != "native" or "FASTMCP_TELEMETRY_MODE" in os.environ:
        return
    fastmcp.settings.telemetry_mode = "propagation_only"
    log.info("no OpenTelemetry tracer provider: FastMCP passes trace context on and builds no spans")
