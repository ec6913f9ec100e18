"""The tool both sides of bench/overhead.py serve: a bare FastMCP app and mcp-gateway `--tools bench.tools:mcp`."""

from fastmcp import FastMCP

mcp = FastMCP("bench")


@mcp.tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


def bare_app():
    """The baseline: no auth, no tracking, JSON responses like the gateway's /mcp default."""
    return mcp.http_app(path="/mcp", json_response=True)
