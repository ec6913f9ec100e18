"""The HTTP app: one ASGI entry point with explicit routing.

    /mcp                Streamable HTTP (both protocol eras)      -> FastMCP http app
    /sse, /messages/    legacy SSE transport                      -> FastMCP sse app
    /.well-known/oauth-protected-resource[/mcp]  RFC 9728         -> FastMCP http app
    /.well-known/oauth-protected-resource/sse    RFC 9728         -> FastMCP sse app
    /health /ready /api/* /dashboard /metrics                      -> our Starlette app

Lifespans nest so the database pool opens before MCP starts and closes after it stops:
services (pool, writer) -> FastMCP http -> FastMCP sse.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastmcp import FastMCP
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from auth import AuthSettings
from auth.provider import authenticated_principal
from gateway import __version__
from gateway.access import install_access
from gateway.api import create_api_app
from gateway.config import GatewayConfig
from gateway.credentials.routes import credential_routes
from gateway.dashboard import dashboard_routes
from gateway.db import DatabaseUrls
from gateway.metrics import GatewayMetrics
from gateway.quotas import install_quotas
from gateway.server import add_builtin_tools, add_demo_tools, mount_servers
from gateway.services import Services
from gateway.settings import Settings
from gateway.sqlconsole import add_admin_tools
from gateway.tracking import ClientInfo, TrackingMiddleware
from gateway.upstreams import install_upstreams

log = logging.getLogger("mcp_gateway")

_SSE_SESSION = re.compile(rb"session_id=([0-9a-fA-F]{32})")


def build_mcp(services: Services, *, servers: Sequence[FastMCP] = (), demo: bool = False) -> FastMCP:
    # The first middleware is the outermost: tracking sees (and records) what quotas and access refuse.
    # Quotas before access, so a hidden tool and a missing one answer alike even when rate-limited.
    quotas = install_quotas(services)
    middleware = [TrackingMiddleware(services.tracker, services.principal_of), *([quotas] if quotas else []),
                  install_access(services)]
    mcp: FastMCP = FastMCP("mcp-gateway", version=__version__, auth=services.gateway_auth.provider,
                           middleware=middleware)
    services.gateway_auth.install_routes(mcp)
    add_builtin_tools(mcp, services)
    add_admin_tools(mcp, services)  # run_sql, for tenant admins and auditors
    if demo:
        add_demo_tools(mcp)
    mount_servers(mcp, servers)
    install_upstreams(mcp, services)
    return mcp


class GatewayApp:
    """Routes by path; watches protocol sessions end (DELETE, SSE stream closed, transport error)."""

    def __init__(self, services: Services, mcp: FastMCP) -> None:
        self.services = services
        self.mcp = mcp
        settings = services.settings
        self.mcp_http = mcp.http_app(path="/mcp", json_response=settings.json_response,
                                     session_idle_timeout=settings.session_idle_timeout)
        self.mcp_sse = mcp.http_app(path="/sse", transport="sse")
        api_app = create_api_app(services)
        api = services.gateway_auth.protect(api_app)
        self.metrics = GatewayMetrics(services)

        async def openapi(request: Request) -> JSONResponse:
            return JSONResponse(api_app.state.openapi)

        self.web = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/ready", self.ready),
                Route("/metrics", self.metrics.endpoint),
                *dashboard_routes(),
                *credential_routes(services),
                Route("/api/openapi.json", openapi),  # public: a description, no data
                Mount("/api", app=api),
            ],
            lifespan=self.lifespan,
        )
        self.web.state.mcp_gateway_auth = services.gateway_auth
        self.web.state.services = services

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.services.start()
        try:
            async with self.mcp_http.lifespan(self.mcp_http), self.mcp_sse.lifespan(self.mcp_sse):
                yield
        finally:
            await self.services.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.web(scope, receive, send)  # lifespan
            return
        await self.metrics.instrument(scope, receive, send, self._route)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/mcp" or path.startswith("/mcp/"):
            await self._mcp(scope, receive, send)
        elif path == "/sse":
            await self._sse(scope, receive, send)
        elif path == "/messages" or path.startswith("/messages/"):
            if path == "/messages":  # old clients drop the slash: same session, no redirect
                scope = dict(scope, path="/messages/", raw_path=b"/messages/")
            await self.mcp_sse(scope, receive, send)
        elif path == "/.well-known/oauth-protected-resource/sse":
            await self.mcp_sse(scope, receive, send)  # what /sse's 401 challenge names
        elif path.startswith("/.well-known/oauth-protected-resource"):
            await self.mcp_http(scope, receive, send)
        else:
            await self.web(scope, receive, send)

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_header = _header(scope, b"mcp-session-id")
        if session_header is None:
            await self.mcp_http(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.mcp_http(scope, receive, watch)
        except Exception as exc:
            self._session_ended(scope, "mcp", session_header, f"error:{type(exc).__name__}")
            raise
        if scope["method"] == "DELETE" and 200 <= status < 300:
            self._session_ended(scope, "mcp", session_header, "client_disconnect")

    async def _sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id: str | None = None

        async def watch(message: Message) -> None:
            nonlocal session_id
            if session_id is None and message["type"] == "http.response.body":
                found = _SSE_SESSION.search(message.get("body", b""))
                if found:
                    session_id = found.group(1).decode()
            await send(message)

        try:
            await self.mcp_sse(scope, receive, watch)
        except Exception as exc:
            if session_id:
                self._session_ended(scope, "sse", session_id, f"error:{type(exc).__name__}")
            raise
        if session_id:
            self._session_ended(scope, "sse", session_id, "client_disconnect")

    def _session_ended(self, scope: Scope, kind: str, protocol_session_id: str, reason: str) -> None:
        principal = authenticated_principal(scope)
        if principal is None:
            return
        client = ClientInfo(None, None, None, "sse" if kind == "sse" else "streamable-http",
                            protocol_session_id[:200])
        self.services.sessions.end(client.key_for(principal), reason)

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(self, request: Request) -> JSONResponse:
        services = self.services
        database_ok = await services.db.ping()
        stats = services.writer.stats
        body: dict[str, Any] = {
            "status": "ready" if database_ok else "unavailable",
            "database": "up" if database_ok else "down",
            "writer": {
                "backlog": services.writer.backlog,
                "database_up": stats.database_up,
                "written": stats.written,
                "dropped": stats.dropped,
                "spilled": stats.spilled,
                "last_error": stats.last_error,
            },
        }
        for name, probe in services.extras.get("ready_probes", {}).items():
            body[name] = await probe()
        return JSONResponse(body, status_code=200 if database_ok else 503)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def create_app(settings: Settings, urls: DatabaseUrls, *, config: GatewayConfig | None = None,
               servers: Sequence[FastMCP] = (), demo: bool = False,
               auth_settings: AuthSettings | None = None) -> GatewayApp:
    services = Services.build(settings, config or GatewayConfig(), urls, auth_settings)
    return GatewayApp(services, build_mcp(services, servers=servers, demo=demo))
