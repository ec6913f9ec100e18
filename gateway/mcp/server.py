"""The FastMCP server the gateway serves: built-in tools, demo tools, mounted user servers."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from psycopg.rows import class_row

from auth import Principal
from fastmcp_private import InlineLocalLookups, lifespan_of, mount
from gateway import __version__
from gateway.errors import UserError
from gateway.formatting import money
from gateway.mcp.session_state import WrittenKeysStore
from gateway.store.budget import live_report
from gateway.store.console_hardening import SideChannelStatus

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.store.db import Database
    from gateway.tracking.sessions import AnalyticsSessions
    from gateway.tracking.writer import TrackingWriter


class GatewayFastMCP(FastMCP, InlineLocalLookups):
    """FastMCP as the gateway serves it: the same server, whose tool lookups ask the in-process providers
    (the gateway's own tools, directly served `--tools` servers) in place rather than in a task each."""


@dataclass(frozen=True, slots=True)
class _Totals:
    calls: int
    errors: int
    denied: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class _ToolUsage:
    tool_name: str | None
    calls: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class _RecentSession:
    session_id: UUID
    client_type: str | None
    client_version: str | None
    status: str
    connected_at: datetime
    last_activity: datetime
    disconnect_reason: str | None


def add_builtin_tools(mcp: FastMCP, *, settings: Settings, db: Database, writer: TrackingWriter,
                      sessions: AnalyticsSessions, principal_of: Callable[[], Principal | None]) -> None:
    def caller() -> Principal:
        principal = principal_of()
        if principal is None:
            raise ToolError("this tool needs an authenticated caller")
        return principal

    @mcp.tool(annotations={"readOnlyHint": True})
    async def whoami() -> dict[str, Any]:
        """Who the gateway thinks you are: user, tenant, role and token kind (never the token)."""
        principal = caller()
        return principal.model_dump(mode="json", exclude={"token_id"}) | {"token_id": principal.token_id}

    @mcp.tool(annotations={"readOnlyHint": True})
    async def my_usage(days: int = 30) -> dict[str, Any]:
        """Your own sessions, calls, tokens and estimated cost over the last `days` days (1..366).

        Calls appear here within about a second: tracking is written in the background.
        """
        if not 1 <= days <= 366:
            raise ToolError("days must be between 1 and 366")
        principal = caller()
        since = datetime.now(UTC) - timedelta(days=days)
        async with db.as_principal(principal) as conn:
            totals = await (await conn.cursor(row_factory=class_row(_Totals)).execute(
                "SELECT count(*) AS calls, count(*) FILTER (WHERE status = 'error') AS errors,"
                " count(*) FILTER (WHERE status = 'denied') AS denied,"
                " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
                " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
                " coalesce(sum(estimated_cost), 0) AS cost"
                " FROM gateway.mcp_requests WHERE user_id = %s AND \"timestamp\" >= %s",
                (principal.user_id, since))).fetchone()
            by_tool = await (await conn.cursor(row_factory=class_row(_ToolUsage)).execute(
                "SELECT tool_name, count(*) AS calls, coalesce(sum(estimated_cost), 0) AS cost"
                " FROM gateway.mcp_requests WHERE user_id = %s AND \"timestamp\" >= %s"
                " GROUP BY tool_name ORDER BY count(*) DESC LIMIT 20",
                (principal.user_id, since))).fetchall()
            recent = await (await conn.cursor(row_factory=class_row(_RecentSession)).execute(
                "SELECT session_id, client_type, client_version, status, connected_at, last_activity,"
                " disconnect_reason FROM gateway.mcp_sessions WHERE user_id = %s AND connected_at >= %s"
                " ORDER BY connected_at DESC LIMIT 10", (principal.user_id, since))).fetchall()
        assert totals is not None  # an aggregate without GROUP BY always has its one row
        return {
            "user_id": principal.user_id,
            "tenant_id": principal.tenant_id,
            "days": days,
            "calls": totals.calls, "errors": totals.errors, "denied": totals.denied,
            "prompt_tokens": totals.prompt_tokens, "completion_tokens": totals.completion_tokens,
            "estimated_cost_usd": money(totals.cost),
            "by_tool": [{"tool": t.tool_name, "calls": t.calls, "estimated_cost_usd": money(t.cost)}
                        for t in by_tool],
            "recent_sessions": [
                {"session_id": str(s.session_id), "client": s.client_type, "client_version": s.client_version,
                 "status": s.status, "connected_at": s.connected_at.isoformat(),
                 "last_activity": s.last_activity.isoformat(), "disconnect_reason": s.disconnect_reason}
                for s in recent
            ],
        }

    console_side_channels = SideChannelStatus(db)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def health_check() -> dict[str, Any]:
        """Gateway status: version, database reachability and the tracking backlog."""
        database_ok = await db.ping()
        return {
            "status": "ok" if database_ok else "degraded",
            "version": __version__,
            "database": "up" if database_ok else "down",
            "tracking_backlog": writer.backlog,
            "open_sessions": len(sessions),
            "console_side_channels": await console_side_channels.status(),
            "connection_budget": await live_report(settings, db),
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
            # Its middleware and lifespan run, as the user wrote them; its session state is kept as the
            # gateway's is (unless it brought a store of its own).
            mount(mcp, server, state_store=WrittenKeysStore())


def has_nothing_to_mount(server: FastMCP) -> bool:
    """True when the server has no middleware, lifespan or providers of its own, only components."""
    from fastmcp.server.middleware.dereference import DereferenceRefsMiddleware
    from fastmcp.server.server import default_lifespan

    return (
        all(isinstance(m, DereferenceRefsMiddleware) for m in server.middleware)  # FastMCP's default
        and list(server.providers) == [server.local_provider]
        and lifespan_of(server) is default_lifespan
    )


