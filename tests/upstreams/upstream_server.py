"""A tiny upstream MCP server for the upstream tests.

    python tests/upstreams/upstream_server.py http PORT     Streamable HTTP on 127.0.0.1:PORT/mcp (SSE answers)
    python tests/upstreams/upstream_server.py json PORT     the same with JSON answers (json_response=True)
    python tests/upstreams/upstream_server.py sse PORT      legacy SSE on 127.0.0.1:PORT/sse
    python tests/upstreams/upstream_server.py stdio         stdio
    python tests/upstreams/upstream_server.py garbage PORT  answers every request with 200 and non-JSON bytes

UPSTREAM_LABEL (env) shows up in `whereami`, so tests can tell upstreams apart and see env passed through.
UPSTREAM_LISTINGS (env): a file that gets a line (the method) for each tools, prompts or resources list the
server is asked, before it answers; UPSTREAM_LIST_DELAY (env): seconds each then waits before answering (a slow
or hung upstream).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from fastmcp import Context, FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext

from gateway.asgi import read_body, replaying


class Misbehave(Middleware):
    """`ghost` is listed but unknown when called (as a tool removed since the listing)."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if context.message.name == "ghost":
            from fastmcp.exceptions import NotFoundError

            raise NotFoundError("Unknown tool: 'ghost'")
        return await call_next(context)

    async def on_list_tools(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await _listed("tools/list", context, call_next)

    async def on_list_prompts(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await _listed("prompts/list", context, call_next)

    async def on_list_resources(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await _listed("resources/list", context, call_next)


async def _listed(method: str, context: MiddlewareContext[Any], call_next: Any) -> Any:
    if listings := os.environ.get("UPSTREAM_LISTINGS"):
        with open(listings, "a") as log:
            log.write(f"{method}\n")
    await asyncio.sleep(float(os.environ.get("UPSTREAM_LIST_DELAY", "0")))
    return await call_next(context)


def refusing(app: Any) -> Any:
    """`rpcerror` is answered with a JSON-RPC error (HTTP 200, JSON), as a server that refuses a call does."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body = await read_body(receive)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and (request.get("params") or {}).get("name") == "rpcerror":
            answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                                 "error": {"code": -32042, "message": "the upstream refuses this one"}}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            return None
        return await app(scope, replaying(body, receive), send)

    return wrapped


mcp = FastMCP("test-upstream", middleware=[Misbehave()])


@mcp.tool
def forecast(city: str, days: int = 1) -> str:
    """Weather forecast for a city (always sunny)."""
    return f"{city}: sunny for {days} day(s)"


@mcp.tool
def whereami() -> dict[str, str]:
    """Which upstream process answered, and its UPSTREAM_LABEL."""
    return {"label": os.environ.get("UPSTREAM_LABEL", ""), "pid": str(os.getpid())}


@mcp.tool
async def sleepy(seconds: float = 5.0) -> str:
    """Sleeps, to exercise the gateway's upstream timeout."""
    await asyncio.sleep(seconds)
    return "woke up"


@mcp.tool
def grumpy() -> str:
    """Always fails with a tool error of its own."""
    from fastmcp.exceptions import ToolError

    raise ToolError("grumpy says no")


@mcp.tool
def big(repeat: int = 20000) -> str:
    """A large result with text outside ASCII."""
    return "Grüße, 世界 ✓ " * repeat


@mcp.tool
def measure(city: str) -> dict[str, Any]:
    """Structured output (an output schema and structured content)."""
    return {"city": city, "temperature": 21.5, "tags": ["sunny", "warm"], "note": None}


@mcp.tool
async def progress(ctx: Context, steps: int = 3) -> str:
    """Reports progress while it works (a streamed answer, where the server streams)."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps, f"step {step + 1}")
    return f"done in {steps} steps"


@mcp.tool
def ghost() -> str:
    """Listed, but the upstream answers as if it did not exist (see Misbehave)."""
    return "never"


@mcp.tool
def rpcerror() -> str:
    """Answered with a JSON-RPC error (see `refusing`; the json kind only)."""
    return "never"


@mcp.tool
def trace_context(ctx: Context) -> str:
    """The W3C `traceparent` this call's `_meta` carried ("" without one)."""
    meta = ctx.request_context.meta if ctx.request_context is not None else None
    return str((meta or {}).get("traceparent", ""))


@mcp.resource("data://cities")
def cities() -> str:
    """Known cities."""
    return "Oslo,Lima"


@mcp.prompt
def ask_weather(city: str) -> str:
    """A prompt asking for the weather."""
    return f"What is the weather in {city}?"


async def _garbage(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except Exception:
            pass
        body = b"this is not json {{{"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "http":
        mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[2]), show_banner=False)
    elif kind == "json":
        import uvicorn

        uvicorn.run(refusing(mcp.http_app(path="/mcp", json_response=True)), host="127.0.0.1", port=int(sys.argv[2]),
                    log_level="warning")
    elif kind == "sse":
        mcp.run(transport="sse", host="127.0.0.1", port=int(sys.argv[2]), show_banner=False)
    elif kind == "stdio":
        mcp.run(transport="stdio", show_banner=False)
    elif kind == "garbage":
        asyncio.run(_garbage(int(sys.argv[2])))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
