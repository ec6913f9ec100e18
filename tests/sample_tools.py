"""A user's own FastMCP server, mounted with `--tools tests.sample_tools:mcp`."""

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError

from gateway import track_tool_execution
from gateway.mcp.server import add_demo_tools

mcp = FastMCP("sample")


add_demo_tools(mcp)  # echo and add, as `mcp-gateway dev` serves them


@mcp.tool
@track_tool_execution
async def shout(text: str) -> str:
    """Upper-case the text (decorated: must still be recorded exactly once)."""
    return text.upper()


@mcp.tool
def explode(reason: str = "boom") -> str:
    """Always fails."""
    raise ToolError(f"exploded: {reason}")


@mcp.tool
async def slow(seconds: float = 0.5) -> str:
    """Sleeps, to keep calls in flight."""
    import asyncio

    await asyncio.sleep(seconds)
    return "done"
