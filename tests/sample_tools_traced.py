"""A user's tools module that sets an OpenTelemetry tracer provider when it is imported, as code using the
OpenTelemetry SDK does: the gateway then keeps FastMCP's spans (gateway/otel.py). The provider is the
OpenTelemetry API's no-op one, recording the name of each span opened; the `spans` tool reports them."""

from typing import Any

from fastmcp import FastMCP
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, NoOpTracerProvider, Span

opened: list[str] = []


class _NamingTracer(NoOpTracer):
    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Span:
        opened.append(name)
        return super().start_span(name, *args, **kwargs)


class NamingTracerProvider(NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> NoOpTracer:
        return _NamingTracer()


trace.set_tracer_provider(NamingTracerProvider())

mcp = FastMCP("traced")


@mcp.tool
def spans() -> list[str]:
    """The names of the spans opened so far."""
    return list(opened)
