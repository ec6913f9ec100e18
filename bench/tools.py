"""The tools the benchmarks serve, bare and through mcp-gateway (`--tools bench.tools:mcp`).

- `mcp`: one `echo` tool, nothing else (the gateway serves its components directly).
- `mcp_with_middleware`: the same tool behind a middleware of the user's own (the gateway mounts it, so
  the user's middleware runs as the user wrote it).
- `bare_app`, `bare_sse_app`, `bare_middleware_app`: FastMCP's own HTTP apps for those, no auth, no tracking.
"""

from typing import Any

from fastmcp import FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext

mcp = FastMCP("bench")


@mcp.tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


class CountCalls(Middleware):
    """What a user's own middleware typically is: a little bookkeeping around each call."""

    def __init__(self) -> None:
        self.calls = 0

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        self.calls += 1
        return await call_next(context)


mcp_with_middleware = FastMCP("bench-mw", middleware=[CountCalls()])


@mcp_with_middleware.tool(name="echo")
def echo_mw(text: str) -> str:
    """Return the text unchanged."""
    return text


def bare_app() -> Any:
    """The baseline: no auth, no tracking, JSON responses like the gateway's /mcp default."""
    return mcp.http_app(path="/mcp", json_response=True)


def bare_sse_app() -> Any:
    """FastMCP's default: every answer an SSE stream."""
    return mcp.http_app(path="/mcp", json_response=False)


def bare_middleware_app() -> Any:
    return mcp_with_middleware.http_app(path="/mcp", json_response=True)
