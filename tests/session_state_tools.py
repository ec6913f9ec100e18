"""Tools that keep FastMCP session state and session visibility: `mcp` is served directly from the gateway's
call path (its tools' state lives in the gateway server's store), `mounted` has a middleware of its own and
is mounted whole (its state lives in its own store)."""

from typing import Any

from fastmcp import Context, FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext


class PassThrough(Middleware):
    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await call_next(context)


def _with_tools(server: FastMCP) -> FastMCP:
    @server.tool
    async def remember(value: str, ctx: Context) -> str:
        await ctx.set_state("remembered", value)
        return value

    @server.tool
    async def recall(ctx: Context) -> Any:
        return {"remembered": await ctx.get_state("remembered")}

    @server.tool
    async def forget(ctx: Context) -> str:
        await ctx.delete_state("remembered")
        return "forgotten"

    @server.tool
    async def hide(name: str, ctx: Context) -> str:
        """Hides a tool from this session only."""
        await ctx.disable_components(names={name})
        return f"{name} hidden"

    @server.tool
    async def show(name: str, ctx: Context) -> str:
        await ctx.enable_components(names={name})
        return f"{name} shown"

    @server.tool
    def ping() -> str:
        return "pong"

    return server


mcp = _with_tools(FastMCP("session-state"))
mounted = _with_tools(FastMCP("session-state-mounted", middleware=[PassThrough()]))
