"""A transport failure under a protocol session ends its analytics session as `error:<Type>`.

The real app, services, writer and database; only the MCP transport underneath the gateway's
session watch is replaced by one that fails, since a real transport failure cannot be provoked
on demand over loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.types import Message, Receive, Scope, Send

from auth import Principal
from auth.provider import access_token_for
from gateway.settings import Settings
from gateway.tracking.middleware import ClientInfo
from gateway.wiring import create_app
from tests.gateway.conftest import wait_for
from tests.pg import TestDatabase

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat")


class TransportLost(Exception):
    pass


async def failing_transport(scope: Scope, receive: Receive, send: Send) -> None:
    scope["user"] = AuthenticatedUser(access_token_for("t", ALICE))  # what the auth middleware sets
    raise TransportLost("connection reset under the session")


async def test_transport_failure_ends_the_session_as_error_type(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    settings = Settings(data_dir=tmp_path, flush_interval=0.1, instance_id="tf")  # type: ignore[call-arg]
    app = create_app(settings, database.urls)
    await app.services.start()
    try:
        client = ClientInfo("cli", "1", "2025-06-18", "streamable-http", "abc123")
        app.services.sessions.session_for(ALICE, client)  # the session made a tracked call
        app.mcp_watched.app = failing_transport  # the session-end watcher around the MCP transport
        scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": [(b"mcp-session-id", b"abc123")]}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            pass

        try:
            await app.mcp_watched(scope, receive, send)
        except TransportLost:
            pass
        await asyncio.to_thread(wait_for, lambda: admin_conn.execute(
            "SELECT disconnect_reason FROM gateway.mcp_sessions WHERE status = 'disconnected'").fetchall(),
            15, "the session to end")
    finally:
        await app.services.stop()
    rows = admin_conn.execute("SELECT disconnect_reason, mcp_session_id FROM gateway.mcp_sessions").fetchall()
    assert rows == [("error:TransportLost", "abc123")]
