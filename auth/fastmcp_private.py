"""Every private FastMCP / MCP SDK name the project touches, fenced in one module.

FastMCP 4.1 has no public way to do these few things; each use below says what it is for.
tests/test_fastmcp_private.py checks every name against the installed packages, so an upgrade
that moves one fails there, loudly, instead of somewhere deep in a request.

It lives in auth/ because auth must not import gateway/, while gateway/ may import auth/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastmcp.server.providers.proxy import _CacheEntry as ProxyCacheEntry
from starlette.routing import BaseRoute
from starlette.types import Send

__all__ = [
    "PROXY_PROVIDER_HOOKS", "ProxyCacheEntry", "add_http_routes", "client_session_task", "force_disconnect",
    "lifespan_of", "proxy_tool_client_factory", "send_auth_error", "send_missing_auth",
]

# Protected hooks of fastmcp.server.providers.proxy.ProxyProvider that gateway.mcp.upstreams overrides or reads
# (guarded listings, a last-known tool cache); `_tools_cache` / `_cache_ttl` are instance attributes.
PROXY_PROVIDER_HOOKS = ("_list_tools", "_get_tool", "_list_resources", "_list_resource_templates",
                        "_list_prompts", "_get_client")
PROXY_PROVIDER_STATE = ("_tools_cache", "_cache_ttl")


def add_http_routes(mcp: Any, routes: Sequence[BaseRoute]) -> None:
    """Extra routes served by `mcp.http_app()` (RFC 9728 metadata): FastMCP keeps them in a private list."""
    mcp._additional_http_routes.extend(routes)


async def send_auth_error(middleware: Any, send: Send, status: int, error: str, description: str) -> None:
    """RequireAuthMiddleware's 401 with `error=...`: the exact challenge the MCP endpoint sends."""
    await middleware._send_auth_error(send, status, error, description)


async def send_missing_auth(middleware: Any, send: Send) -> None:
    """RequireAuthMiddleware's 401 for a request without a token."""
    await middleware._send_missing_auth(send)


def lifespan_of(server: Any) -> Any:
    """A FastMCP server's lifespan function (no public accessor in 4.1)."""
    return getattr(server, "_lifespan", None)


async def force_disconnect(client: Any) -> None:
    """Close a fastmcp.Client's session now, whoever still holds it (shutdown of a shared upstream client)."""
    await client._disconnect(force=True)


def client_session_task(client: Any) -> Any:
    """The task that runs a connected fastmcp.Client's session (done: the session died)."""
    return getattr(getattr(client, "_session_state", None), "session_task", None)


def proxy_tool_client_factory(tool: Any) -> Any:
    """The client factory a ProxyTool was made with (gateway.mcp.upstreams binds it to its Upstream)."""
    return tool._client_factory
