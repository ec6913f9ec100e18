"""The HTTP app: one ASGI entry point with explicit routing.

    /mcp                Streamable HTTP (both protocol eras)      -> FastMCP http app
    /sse, /messages/    legacy SSE transport                      -> FastMCP sse app
    /.well-known/oauth-protected-resource[/mcp]  RFC 9728         -> FastMCP http app
    /.well-known/oauth-protected-resource/sse    RFC 9728         -> FastMCP sse app
    /health /ready /api/* /dashboard /metrics                      -> our Starlette app

Lifespans nest so the database pool opens before MCP starts and closes after it stops:
services (pool, writer, components) -> FastMCP http -> FastMCP sse.
The parts themselves are built in gateway/wiring.py.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastmcp import FastMCP
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from gateway import __version__
from gateway.credentials.routes import credential_routes
from gateway.http.api import create_api_app
from gateway.http.dashboard import dashboard_routes
from gateway.http.metrics_auth import protect_metrics
from gateway.http.origins import guard_http
from gateway.mcp.fastpath import FastPath
from gateway.mcp.front_door import FrontDoor
from gateway.mcp.param_headers import ParamHeaderSchemas
from gateway.otel import skip_unrecorded_spans
from gateway.tracking.session_end import SessionEndWatcher

if TYPE_CHECKING:
    from gateway.wiring import Services


class GatewayApp:
    """Routes by path. Built by gateway.wiring.create_app."""

    def __init__(self, services: Services, mcp: FastMCP, *, param_headers: ParamHeaderSchemas, fast_path: FastPath,
                 front_door: FrontDoor, on_session_end: Callable[[str, str], object]) -> None:
        self.services = services
        self.mcp = mcp
        self.param_headers = param_headers
        self.fast_path = fast_path
        self.front_door = front_door
        settings = services.settings
        cap = services.session_cap  # per-principal session cap, inside FastMCP's authentication
        self.mcp_http = mcp.http_app(path="/mcp", json_response=settings.json_response,
                                     session_idle_timeout=settings.session_idle_timeout,
                                     middleware=[cap.middleware("mcp")])
        self.mcp_sse = mcp.http_app(path="/sse", transport="sse", middleware=[cap.middleware("sse")])
        self.mcp_watched = SessionEndWatcher(self.mcp_http, on_session_end, "mcp",
                                             on_deleted=services.session_sharing.session_deleted)
        self.sse_watched = SessionEndWatcher(self.mcp_sse, on_session_end, "sse")
        api_app = create_api_app(services)
        api = services.gateway_auth.protect(api_app)
        self.metrics = services.metrics
        # A browser's foreign Origin (and, when configured, an unknown Host) is refused before anything runs.
        self._entry = guard_http(self._route, public_url=settings.resolved_public_url,
                                 allowed_origins=settings.allowed_origins, allowed_hosts=settings.allowed_hosts)

        async def openapi(request: Request) -> JSONResponse:
            return JSONResponse(api_app.state.openapi)

        self.web = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/ready", self.ready),
                Route("/metrics", protect_metrics(self.metrics.endpoint, settings.metrics_token)),
                *dashboard_routes(),
                *services.oauth_routes,
                *credential_routes(services),  # /connections/callback: the per-user OAuth link flow
                Route("/api/openapi.json", openapi),  # public: a description, no data
                Mount("/api", app=api),
            ],
            lifespan=self.lifespan,
        )
        self.web.state.mcp_gateway_auth = services.gateway_auth

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.services.start()
        try:
            async with self.mcp_http.lifespan(self.mcp_http), self.mcp_sse.lifespan(self.mcp_sse):
                skip_unrecorded_spans()  # once every part that could configure tracing has had its turn
                # Inside out: the SDK's Mcp-Param schema lookup, the fast path around it, then session
                # sharing around that (adoption before serving).
                self.param_headers.attach(self.mcp_http)
                self.fast_path.attach(self.mcp_http)
                self.services.session_sharing.attach(self.mcp_http)  # any process serves any session
                self.front_door.attach(self.mcp_http, full=self.mcp_watched)  # the short way in, when it can
                # Everything built so far lives as long as the process: keep it out of the cyclic
                # collector's full passes, whose pauses grew with it (the slowest calls under load).
                gc.freeze()
                # A call makes hundreds of containers that reference counting frees; at CPython's default
                # of 700 the young generation was collected every few calls, and the older ones with it.
                gc.set_threshold(10_000, 50, 100)
                yield
        finally:
            await self.services.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.web(scope, receive, send)  # lifespan
            return
        await self.metrics.instrument(scope, receive, send, self._entry)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/mcp":
            await self.front_door(scope, receive, send)  # what it does not serve goes to mcp_watched
        elif path.startswith("/mcp/"):
            await self.mcp_watched(scope, receive, send)
        elif path == "/sse":
            await self.sse_watched(scope, receive, send)
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

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(self, request: Request) -> JSONResponse:
        ok, body = await self.services.readiness()
        body[self.fast_path.name] = await self.fast_path.ready()
        body[self.front_door.name] = await self.front_door.ready()
        return JSONResponse(body, status_code=200 if ok else 503)
