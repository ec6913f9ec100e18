"""The composition root: every long-lived part of a gateway process is built here, and every edge
between parts is one line here.

Read this file to learn how the parts connect:

    settings + config + urls
      -> Database -> TrackingWriter -> AnalyticsSessions -> Tracker   (tracking: one row per tool call)
      -> GatewayAuth (token store on the Database)                    (who is calling)
      -> SqlConsole, Quotas?, Upstreams?, GatewayMetrics              (features)
      -> FastMCP server: middleware Tracking -> Quotas -> Access, tools, mounted servers, upstreams
      -> GatewayApp: HTTP routing, session-end watching, /ready, /metrics, /api, /dashboard

Feature modules never import this module nor the `Services` container: each takes exactly the
objects it uses, as FastMCP's middlewares do. Optional features with a lifetime of their own are
`Component`s: started in order after the writer, stopped in reverse, and asked for `/ready` detail.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fastmcp import FastMCP
from starlette.routing import BaseRoute

from auth import AuthSettings, Principal
from auth.provider import GatewayAuth, current_principal
from gateway import __version__
from gateway.config import GatewayConfig
from gateway.credentials.install import Credentials, build_credentials
from gateway.http.app import GatewayApp
from gateway.http.metric_labels import registry_names
from gateway.http.metrics import GatewayMetrics
from gateway.mcp.access import AccessMiddleware, AccessPolicy
from gateway.mcp.fastpath import FastPath
from gateway.mcp.front_door import FrontDoor
from gateway.mcp.param_headers import ParamHeaderSchemas
from gateway.mcp.quotas import QuotaMiddleware, Quotas, quotas_configured
from gateway.mcp.server import GatewayFastMCP, add_builtin_tools, add_demo_tools, mount_servers
from gateway.mcp.session_cap import SessionCap, session_cap_from
from gateway.mcp.session_sharing import BindingStore, SessionSharing
from gateway.mcp.session_state import WrittenKeysStore
from gateway.mcp.sqlconsole import SqlConsole, add_admin_tools, limits_from
from gateway.oauth.wiring import build_oauth
from gateway.otel import configure_otel_once
from gateway.settings import Settings
from gateway.store import budget
from gateway.store.db import Database, DatabaseUrls
from gateway.store.instance_lock import InstanceClaim, InstanceLock
from gateway.store.tokens import PostgresTokenStore
from gateway.tracking.middleware import Tracker, TrackingMiddleware
from gateway.tracking.sessions import AnalyticsSessions
from gateway.tracking.writer import TrackingWriter, utcnow

if TYPE_CHECKING:  # imported when configured: it loads FastMCP's whole client (some 8 MB)
    from gateway.mcp.upstreams import Upstreams

log = logging.getLogger("mcp_gateway")


@runtime_checkable
class Component(Protocol):
    """A part with a lifetime of its own (background tasks, connections)."""

    name: str  # its key in the /ready body

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> dict[str, Any]:
        """Detail for /ready. Never decides readiness: only the database and the writer do."""
        ...


@dataclass(frozen=True, kw_only=True)
class Services:
    """The long-lived parts of one gateway app, built by `build_services`."""

    settings: Settings
    config: GatewayConfig
    urls: DatabaseUrls
    instance_id: str
    instance: InstanceClaim  # holds the instance id while this process lives (advisory lock)
    db: Database
    writer: TrackingWriter
    sessions: AnalyticsSessions
    tracker: Tracker
    gateway_auth: GatewayAuth
    console: SqlConsole
    metrics: GatewayMetrics
    quotas: Quotas | None
    upstreams: Upstreams | None
    credentials: Credentials | None  # per-user upstream credentials (the vault), when an upstream uses them
    session_cap: SessionCap
    session_sharing: SessionSharing  # any process serves any handshake-era session (bindings in PostgreSQL)
    oauth_routes: tuple[BaseRoute, ...]  # the OAuth authorization server's pages and endpoints (gateway/oauth)
    components: tuple[Component, ...]
    principal_of: Callable[[], Principal | None] = current_principal

    async def start(self) -> None:
        await self.db.open(wait=False)
        await self.instance.start()  # holds the instance id, then recovers; InstanceInUse: nothing was touched
        await self.writer.start()
        for component in self.components:
            await component.start()

    async def stop(self) -> None:
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        await self.writer.stop()
        await self.instance.stop()
        await self.gateway_auth.aclose()
        await self.db.close()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body) for /ready: the database and the writer decide; components add detail."""
        database_ok = await self.db.ping()
        writer = self.writer.health()  # a backlog nothing has been written from for a while: not ready
        ready = database_ok and bool(writer["healthy"])
        body: dict[str, Any] = {
            "status": "ready" if ready else "unavailable",
            "database": "up" if database_ok else "down",
            "writer": writer,
        }
        for component in self.components:
            body[component.name] = await component.ready()
        return ready, body


def build_services(settings: Settings, config: GatewayConfig, urls: DatabaseUrls,
                   auth_settings: AuthSettings | None = None) -> Services:
    instance_id = settings.instance_id or f"{socket.gethostname()}:{settings.port}"
    db = Database(urls, min_size=2, max_size=budget.pool_size(settings),  # its share of the connection budget
                  application_name=f"mcp-gateway {instance_id}")
    writer = TrackingWriter(
        db, instance_id=instance_id, pricing=config.pricing, flush_interval=settings.flush_interval,
        flush_rows=settings.flush_rows, queue_max=settings.queue_max,
        spill_dir=settings.spill_dir or (settings.data_dir / "spill"), idle_timeout=settings.session_idle_timeout,
        stall_seconds=settings.writer_stall_seconds)
    sessions = AnalyticsSessions(writer, settings.session_idle_timeout)
    tracker = Tracker(writer, sessions)
    if auth_settings is None:
        auth_settings = AuthSettings.load(public_url=settings.resolved_public_url)
    oauth = build_oauth(auth_settings, db, config.oauth_clients)  # None with MCP_GATEWAY_OAUTH_SERVER=false
    token_store = PostgresTokenStore(db, timeout=auth_settings.store_timeout)  # a slow database answers 503
    gateway_auth = GatewayAuth(auth_settings, token_store=token_store, **(oauth.auth_kwargs if oauth else {}))
    instance = InstanceClaim(InstanceLock(urls.app, instance_id), _crash_recovery(writer), utcnow())
    console = SqlConsole(urls, db, limits=limits_from(settings))
    quotas = Quotas(config.quotas, config.pricing, db) if quotas_configured(config.quotas) else None
    upstreams = None
    if config.upstreams:
        from gateway.mcp.upstreams import Upstreams

        upstreams = Upstreams(config.upstreams, direct_calls=settings.upstream_direct_calls)
    credentials = build_credentials(settings, db, upstreams.items, current_principal) if upstreams else None
    metrics = GatewayMetrics(writer=writer, open_sessions=sessions.__len__, instance_id=instance_id,
                             upstream_health=upstreams.health_states if upstreams else None)
    configure_otel_once()

    # -- the edges ---------------------------------------------------------------------------------
    # The writer found an analytics session closed (timeout sweep, another replica) or adopted another
    # replica's: the registry forgets / re-keys it, so the next call opens or joins the right one.
    writer.on_session_gone = sessions.forget
    writer.on_session_canonical = sessions.adopt
    # A tool call was recorded: metrics count it; quotas add its cost to today's local spend.
    tracker.on_recorded.append(metrics.tool_called)
    if quotas is not None and quotas.budgets_enabled:
        tracker.on_recorded.append(quotas.on_recorded)
    # A call to an upstream tool is recorded with the credentials mode that served it.
    if upstreams is not None:
        tracker.credential_modes.update({u.name: u.config.credentials for u in upstreams.items})
    # A bearer token was refused: metrics count the reason.
    gateway_auth.verifier.on_refused.append(metrics.auth_refused)
    # Any process serves any handshake-era session: bindings in PostgreSQL (gateway/mcp/session_sharing.py).
    session_sharing = SessionSharing(
        BindingStore(db, instance_id, settings.session_idle_timeout), sessions,
        idle_timeout=settings.session_idle_timeout, end_grace=2 * settings.flush_interval + 0.5)
    # A protocol session reaped by the per-principal cap: its analytics session ends as `timeout`, and no
    # other process adopts it again.
    session_cap = session_cap_from(settings, sessions.end, session_sharing.session_reaped)

    components: tuple[Component, ...] = tuple(
        c for c in (quotas, upstreams, oauth, metrics.tool_labels, session_sharing) if c is not None)
    return Services(settings=settings, config=config, urls=urls, instance_id=instance_id, instance=instance, db=db,
                    writer=writer, sessions=sessions, tracker=tracker, gateway_auth=gateway_auth, console=console,
                    metrics=metrics, quotas=quotas, upstreams=upstreams, session_cap=session_cap,
                    session_sharing=session_sharing, credentials=credentials,
                    oauth_routes=tuple(oauth.routes(gateway_auth)) if oauth else (), components=components)


def _crash_recovery(writer: TrackingWriter) -> Callable[[datetime], Awaitable[None]]:
    """Run once this process holds its instance id: sessions a dead run of it left open end as server_crash."""
    async def recover(before: datetime) -> None:
        closed = await writer.recover_crashed(before)
        if closed:
            log.warning("closed %d sessions left open by a previous run of %s as server_crash",
                        closed, writer.instance_id)
    return recover


def build_mcp(services: Services, *, servers: Sequence[FastMCP] = (), demo: bool = False) -> FastMCP:
    principal_of = services.principal_of
    # The first middleware is the outermost: tracking sees (and records) what quotas and access refuse.
    # Quotas before access, so a hidden tool and a missing one answer alike even when rate-limited.
    middleware = [
        TrackingMiddleware(services.tracker, principal_of),
        *([QuotaMiddleware(services.quotas, principal_of)] if services.quotas is not None else []),
        AccessMiddleware(AccessPolicy(services.config.access), principal_of),
    ]
    mcp: FastMCP = GatewayFastMCP("mcp-gateway", version=__version__, auth=services.gateway_auth.provider,
                                  middleware=middleware, session_state_store=WrittenKeysStore())
    services.gateway_auth.install_routes(mcp)
    add_builtin_tools(mcp, settings=services.settings, db=services.db, writer=services.writer,
                      sessions=services.sessions, principal_of=principal_of)
    add_admin_tools(mcp, services.console, principal_of)  # run_sql, for tenant admins and auditors
    if demo:
        add_demo_tools(mcp)
    mount_servers(mcp, servers)
    if services.upstreams is not None:
        services.upstreams.mount(mcp)
    return mcp


def create_app(settings: Settings, urls: DatabaseUrls, *, config: GatewayConfig | None = None,
               servers: Sequence[FastMCP] = (), demo: bool = False,
               auth_settings: AuthSettings | None = None) -> GatewayApp:
    services = build_services(settings, config or GatewayConfig(), urls, auth_settings)
    mcp = build_mcp(services, servers=servers, demo=demo)
    # Metrics label only names the server really offers (a caller cannot mint label values).
    services.metrics.tool_labels.source = registry_names(mcp)
    # tools/call and tools/list answered without the SDK's per-request transport (gateway/mcp/fastpath.py).
    # The schema a 2026-07-28 call's Mcp-Param headers are checked against, found without a tools/list per call.
    param_headers = ParamHeaderSchemas(mcp)
    fast_path = FastPath(mcp, param_headers, enabled=settings.fast_path)
    # ... and, for a caller already verified, without FastMCP's HTTP stack in front (gateway/mcp/front_door.py).
    front_door = FrontDoor(fast_path, services.gateway_auth.verifier, services.session_cap, services.session_sharing,
                           required_scopes=services.gateway_auth.provider.required_scopes)
    # A protocol session ended (DELETE, SSE stream closed, transport error): its analytics session ends.
    return GatewayApp(services, mcp, param_headers=param_headers, fast_path=fast_path, front_door=front_door,
                      on_session_end=services.sessions.end)
