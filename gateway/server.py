"""The FastMCP server the gateway serves: built-in tools, demo tools, mounted user servers."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError

from auth import Principal
from gateway import __version__
from gateway.budget import live_report
from gateway.console_hardening import SideChannelStatus
from gateway.errors import UserError

if TYPE_CHECKING:
    from gateway.services import Services


def _caller(services: Services) -> Principal:
    principal = services.principal_of()
    if principal is None:
        raise ToolError("this tool needs an authenticated caller")
    return principal


def add_builtin_tools(mcp: FastMCP, services: Services) -> None:
    @mcp.tool(annotations={"readOnlyHint": True})
    async def whoami() -> dict[str, Any]:
        """Who the gateway thinks you are: user, tenant, role and token kind (never the token)."""
        principal = _caller(services)
        return principal.model_dump(mode="json", exclude={"token_id"}) | {"token_id": principal.token_id}

    @mcp.tool(annotations={"readOnlyHint": True})
    async def my_usage(days: int = 30) -> dict[str, Any]:
        """Your own sessions, calls, tokens and estimated cost over the last `days` days (1..366).

        Calls appear here within about a second: tracking is written in the background.
        """
        if not 1 <= days <= 366:
            raise ToolError("days must be between 1 and 366")
        principal = _caller(services)
        since = datetime.now(UTC) - timedelta(days=days)
        async with services.db.as_principal(principal) as conn:
            totals = await (await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'denied'),"
                " coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
                " coalesce(sum(estimated_cost), 0)"
                " FROM gateway.mcp_requests WHERE user_id = %s AND \"timestamp\" >= %s",
                (principal.user_id, since))).fetchone()
            by_tool = await (await conn.execute(
                "SELECT tool_name, count(*), coalesce(sum(estimated_cost), 0) FROM gateway.mcp_requests"
                " WHERE user_id = %s AND \"timestamp\" >= %s GROUP BY tool_name ORDER BY count(*) DESC LIMIT 20",
                (principal.user_id, since))).fetchall()
            sessions = await (await conn.execute(
                "SELECT session_id, client_type, client_version, status, connected_at, last_activity,"
                " disconnect_reason FROM gateway.mcp_sessions WHERE user_id = %s AND connected_at >= %s"
                " ORDER BY connected_at DESC LIMIT 10", (principal.user_id, since))).fetchall()
        assert totals is not None
        return {
            "user_id": principal.user_id,
            "tenant_id": principal.tenant_id,
            "days": days,
            "calls": totals[0], "errors": totals[1], "denied": totals[2],
            "prompt_tokens": totals[3], "completion_tokens": totals[4],
            "estimated_cost_usd": _money(totals[5]),
            "by_tool": [{"tool": t, "calls": c, "estimated_cost_usd": _money(cost)} for t, c, cost in by_tool],
            "recent_sessions": [
                {"session_id": str(s[0]), "client": s[1], "client_version": s[2], "status": s[3],
                 "connected_at": s[4].isoformat(), "last_activity": s[5].isoformat(), "disconnect_reason": s[6]}
                for s in sessions
            ],
        }

    console_side_channels = SideChannelStatus(services.db)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def health_check() -> dict[str, Any]:
        """Gateway status: version, database reachability and the tracking backlog."""
        database_ok = await services.db.ping()
        return {
            "status": "ok" if database_ok else "degraded",
            "version": __version__,
            "database": "up" if database_ok else "down",
            "tracking_backlog": services.writer.backlog,
            "open_sessions": len(services.sessions),
            "console_side_channels": await console_side_channels.status(),
            "connection_budget": await live_report(services.settings, services.db),
        }


def add_demo_tools(mcp: FastMCP) -> None:
    @mcp.tool
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool
    def add(a: int | float, b: int | float) -> int | float:
        """Add two numbers (integers stay integers: 2 + 3 is 5, not 5.0)."""
        return a + b


def load_tools(spec: str) -> FastMCP:
    """`module:attr` -> the FastMCP server object found there (for `--tools`)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--tools {spec!r}: expected module:attribute, e.g. myapp.tools:mcp")
    # As `python -m` and uvicorn do: a module in the current directory is found without PYTHONPATH=.
    # (the `mcp-gateway` console script, unlike `python -m`, does not put it on sys.path).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--tools {spec!r}: cannot import {module_name} ({exc})") from None
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise UserError(f"--tools {spec!r}: {module_name} has no attribute {attr}") from None
    if not isinstance(found, FastMCP):
        raise UserError(f"--tools {spec!r}: {attr} is a {type(found).__name__}, not a FastMCP server")
    return found


def mount_servers(mcp: FastMCP, servers: Sequence[FastMCP]) -> None:
    """Serve the tools of users' servers under their own names; tracking sees them like ours."""
    for server in servers:
        if has_nothing_to_mount(server):
            # A mount would run FastMCP's call path a second time (~1.3 ms a call) for nothing:
            # serve the server's own components from the gateway's call path instead.
            mcp.add_provider(server.local_provider)
        else:
            mcp.mount(server)  # its middleware and lifespan run, as the user wrote them


def has_nothing_to_mount(server: FastMCP) -> bool:
    """True when the server has no middleware, lifespan or providers of its own, only components."""
    from fastmcp.server.middleware.dereference import DereferenceRefsMiddleware
    from fastmcp.server.server import default_lifespan

    return (
        all(isinstance(m, DereferenceRefsMiddleware) for m in server.middleware)  # FastMCP's default
        and list(server.providers) == [server.local_provider]
        # No public accessor for the lifespan in fastmcp 4.1 (pinned <4.2; tests/gateway/test_mounting.py).
        and getattr(server, "_lifespan", None) is default_lifespan
    )


def _money(value: Decimal | float | int) -> str:
    return str(Decimal(value).quantize(Decimal("0.000001")))
