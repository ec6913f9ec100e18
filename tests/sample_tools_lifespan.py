"""A user's server with a lifespan and a middleware of its own: it must be mounted, not flattened."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastmcp import Context, FastMCP
from fastmcp.server.middleware import Middleware

seen_by_middleware: list[str] = []


@asynccontextmanager
async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from the lifespan"}


mcp = FastMCP("with-lifespan", lifespan=lifespan)


@mcp.tool
def greet(ctx: Context) -> str:
    """Answers from the server's own lifespan context."""
    return ctx.lifespan_context["greeting"]


class Stamp(Middleware):
    async def on_call_tool(self, context: Any, call_next: Any) -> Any:
        result = await call_next(context)
        result.content[0].text += " (stamped)"
        return result


stamped = FastMCP("with-middleware", middleware=[Stamp()])


@stamped.tool
def plain(text: str) -> str:
    """Returns the text; the server's middleware stamps it."""
    return text
