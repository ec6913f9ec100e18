"""The gateway's long-lived parts, built once per process and shared by the app's pieces."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from auth import AuthSettings, Principal
from auth.provider import GatewayAuth, current_principal
from gateway import budget
from gateway.config import GatewayConfig
from gateway.db import Database, DatabaseUrls
from gateway.instance_lock import InstanceClaim, InstanceLock
from gateway.settings import Settings
from gateway.tokens import PostgresTokenStore
from gateway.tracking import AnalyticsSessions, Tracker
from gateway.writer import TrackingWriter, utcnow

log = logging.getLogger("mcp_gateway")


@dataclass
class Services:
    settings: Settings
    config: GatewayConfig
    urls: DatabaseUrls
    db: Database
    writer: TrackingWriter
    sessions: AnalyticsSessions
    tracker: Tracker
    gateway_auth: GatewayAuth
    instance_id: str
    instance: InstanceClaim
    principal_of: Callable[[], Principal | None] = current_principal
    extras: dict[str, Any] = field(default_factory=dict)  # room for upstreams, quotas, metrics

    @classmethod
    def build(cls, settings: Settings, config: GatewayConfig, urls: DatabaseUrls,
              auth_settings: AuthSettings | None = None) -> Services:
        instance_id = settings.instance_id or f"{socket.gethostname()}:{settings.port}"
        db = Database(urls, min_size=2, max_size=budget.pool_size(settings),
                      application_name=f"mcp-gateway {instance_id}")
        spill_dir = settings.spill_dir or (settings.data_dir / "spill")
        writer = TrackingWriter(
            db, instance_id=instance_id, pricing=config.pricing, flush_interval=settings.flush_interval,
            flush_rows=settings.flush_rows, queue_max=settings.queue_max, spill_dir=spill_dir,
            idle_timeout=settings.session_idle_timeout)
        sessions = AnalyticsSessions(writer, settings.session_idle_timeout)
        tracker = Tracker(writer, sessions)
        if auth_settings is None:
            auth_settings = AuthSettings.load(public_url=settings.resolved_public_url)
        store = PostgresTokenStore(db)
        gateway_auth = GatewayAuth(auth_settings, token_store=store)
        instance = InstanceClaim(InstanceLock(urls.app, instance_id), _crash_recovery(writer), utcnow())
        return cls(settings=settings, config=config, urls=urls, db=db, writer=writer, sessions=sessions,
                   tracker=tracker, gateway_auth=gateway_auth, instance_id=instance_id, instance=instance)

    async def start(self) -> None:
        await self.db.open(wait=False)
        await self.instance.start()  # holds the instance id, then recovers; InstanceInUse: nothing was touched
        await self.writer.start()
        for hook in self.extras.get("start_hooks", []):  # upstreams, quotas: async callables
            await hook()

    async def stop(self) -> None:
        for hook in reversed(self.extras.get("stop_hooks", [])):
            try:
                await hook()
            except Exception:
                log.exception("stop hook %r failed", hook)
        await self.writer.stop()
        await self.instance.stop()
        await self.gateway_auth.aclose()
        await self.db.close()



def _crash_recovery(writer: TrackingWriter) -> Callable[[datetime], Awaitable[None]]:
    async def recover(before: datetime) -> None:
        closed = await writer.recover_crashed(before)
        if closed:
            log.warning("closed %d sessions left open by a previous run of %s as server_crash",
                        closed, writer.instance_id)
    return recover
