"""A tiny upstream MCP server for the upstream tests.

    python tests/upstreams/upstream_server.py http PORT     Streamable HTTP on 127.0.0.1:PORT/mcp
    python tests/upstreams/upstream_server.py sse PORT      legacy SSE on 127.0.0.1:PORT/sse
    python tests/upstreams/upstream_server.py stdio         stdio
    python tests/upstreams/upstream_server.py garbage PORT  answers every request with 200 and non-JSON bytes

UPSTREAM_LABEL (env) shows up in `whereami`, so tests can tell upstreams apart and see env passed through.
"""

from __future__ import annotations

import asyncio
import os
import sys

from fastmcp import FastMCP

mcp = FastMCP("test-upstream")


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
    elif kind == "sse":
        mcp.run(transport="sse", host="127.0.0.1", port=int(sys.argv[2]), show_banner=False)
    elif kind == "stdio":
        mcp.run(transport="stdio", show_banner=False)
    elif kind == "garbage":
        asyncio.run(_garbage(int(sys.argv[2])))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
