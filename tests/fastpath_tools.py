"""Tools for the fast-path differential test (`--tools tests.fastpath_tools:mcp`): every shape of answer a
tool can give, and a mounted child server with a middleware of its own."""

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.server.middleware import Middleware, MiddlewareContext
from pydantic import Field

from tests.sample_tools import mcp as sample

mcp = FastMCP("fastpath")
mcp.mount(sample)  # echo, add, shout, explode, slow


@mcp.tool
def crash(kind: str = "value") -> str:
    """Raises something that is not a ToolError (FastMCP masks or wraps it)."""
    if kind == "value":
        raise ValueError("bad value inside the tool")
    raise RuntimeError("the tool broke")


@mcp.tool
def record(name: str, tags: list[str] | None = None) -> dict[str, Any]:
    """Structured output: a dict, with an output schema."""
    return {"name": name, "tags": tags or [], "count": len(tags or [])}


@mcp.tool
async def context_info(ctx: Context) -> dict[str, Any]:
    """What a tool sees of its request through FastMCP's Context."""
    params = ctx.session.client_params
    return {"client": params.client_info.name if params else None, "has_request_id": ctx.request_id is not None,
            "protocol": ctx.session.protocol_version}


@mcp.tool
def nothing() -> None:
    """Returns None."""


# A 2026-07-28 client mirrors `region` into an `Mcp-Param-Region` header, which the server checks against it.
Region = Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]


@mcp.tool
def routed(region: Region, text: str = "") -> str:
    """Declares a routing header for its `region` argument."""
    return f"{region}: {text}"


@mcp.tool
def routed_secret(region: Region) -> str:
    """The same, denied to members (tests/gateway/test_fastpath.py's access rules)."""
    return region


class Stamp(Middleware):
    """A mounted server's own middleware: it must run on every path."""

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if (context.message.arguments or {}).get("text") == "refuse":
            from fastmcp.exceptions import ToolError

            raise ToolError("the child's middleware refused")
        return await call_next(context)


child = FastMCP("child", middleware=[Stamp()])


@child.tool
def reverse(text: str) -> str:
    """Reverse the text."""
    return text[::-1]


mcp.mount(child, namespace="child")
