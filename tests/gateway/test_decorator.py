"""`track_tool_execution` outside the gateway records through the same Tracker, once per call."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from auth import Principal
from gateway import track_tool_execution
from gateway.store.db import Database
from gateway.tracking.middleware import Tracker, configure_standalone_tracking
from gateway.tracking.sessions import AnalyticsSessions
from gateway.tracking.writer import TrackingWriter
from tests.gateway.conftest import wait_for
from tests.pg import TestDatabase

BEA = Principal(user_id="bea", tenant_id="solo", token_kind="jwt_hs", email="bea@solo.example")


@track_tool_execution
async def shout(text: str) -> str:
    return text.upper()


@track_tool_execution(name="divide")
def div(a: float, b: float) -> float:
    return a / b


async def test_standalone_decorated_tools_record_success_and_error(
        database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="standalone", flush_interval=0.1)
    tracker = Tracker(writer, AnalyticsSessions(writer, idle_timeout=600))
    configure_standalone_tracking(tracker, lambda: BEA)
    await writer.start()
    try:
        assert await shout(text="hi") == "HI"
        assert await div(a=6, b=3) == 2
        with pytest.raises(ZeroDivisionError):
            await div(a=1, b=0)
        await asyncio.to_thread(wait_for, lambda: writer.stats.written == 3 and writer.backlog == 0, 15, "3 rows")
    finally:
        configure_standalone_tracking(None, lambda: None)
        await writer.stop()
        await db.close()
    rows = admin_conn.execute("SELECT tool_name, status, user_id FROM gateway.mcp_requests ORDER BY \"timestamp\"")
    assert rows.fetchall() == [("shout", "success", "bea"), ("divide", "success", "bea"),
                               ("divide", "error", "bea")]
