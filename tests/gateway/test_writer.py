"""The writer against a real outage: bounded memory, a spill file, nothing lost, nothing silent."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg

from auth import Principal
from gateway.db import Database
from gateway.records import ToolCalled
from gateway.tracking import AnalyticsSessions, ClientInfo
from gateway.writer import TrackingWriter, utcnow
from tests.gateway.conftest import wait_for
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat", email="a@acme.example")
CLIENT = ClientInfo("pytest", "1", "2026-07-28", "streamable-http", None)


def _call(sessions: AnalyticsSessions, writer: TrackingWriter) -> None:
    session_id, key = sessions.session_for(ALICE, CLIENT)
    writer.submit(ToolCalled(id=uuid.uuid4(), session_id=session_id, session_key=key, tenant_id="acme",
                             user_id="alice", tool_name="echo", status="success", error_message=None,
                             duration_ms=1.0, at=utcnow(), client_type="pytest", arguments={"text": "x"},
                             result_text="x"))


async def test_outage_spills_past_the_memory_bound_and_loses_nothing(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    proxy = CuttableProxy(database.urls.app)
    urls = type(database.urls)(**{**database.urls.__dict__, "app": proxy.url_through(database.urls.app)})
    db = Database(urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w1", flush_interval=0.1, flush_rows=50, queue_max=100,
                            spill_dir=tmp_path / "spill")
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    await writer.start()
    try:
        for _ in range(20):
            _call(sessions, writer)
        await asyncio.to_thread(wait_for, lambda: writer.stats.written == 20, 10, "first flush")
        proxy.cut()
        for _ in range(500):  # 5x the in-memory bound
            _call(sessions, writer)
        assert writer.stats.spilled >= 400 and len(writer._queue) <= 100
        await asyncio.to_thread(wait_for, lambda: not writer.stats.database_up, 10, "outage noticed")
        proxy.restore()
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 30, "backlog drained")
    finally:
        await writer.stop()
        await db.close()
        proxy.close()
    assert writer.stats.dropped == 0
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone() == (520,)
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_sessions").fetchone() == (1,)


async def test_without_a_spill_directory_overflow_is_counted_and_logged(
        database: TestDatabase, caplog: object) -> None:
    db = Database(database.urls, min_size=1, max_size=1)
    writer = TrackingWriter(db, instance_id="w2", queue_max=100, spill_dir=None)
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    for _ in range(150):  # writer not started: nothing drains
        _call(sessions, writer)
    assert writer.stats.dropped == 51  # 1 session record + 150 calls - 100 kept
    assert "dropped 1 tracking records" in caplog.text  # type: ignore[attr-defined]


async def test_a_record_the_database_refuses_is_cleaned_and_stored(database: TestDatabase,
                                                                   admin_conn: psycopg.Connection) -> None:
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w3", flush_interval=0.1)
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    _call(sessions, writer)
    session_id, key = sessions.session_for(ALICE, CLIENT)
    writer.submit(ToolCalled(id=uuid.uuid4(), session_id=session_id, session_key=key, tenant_id="acme",
                             user_id="alice", tool_name="nul\x00byte", status="success", error_message=None,
                             duration_ms=1.0, at=utcnow(), client_type="pytest"))
    _call(sessions, writer)
    await writer.start()
    try:
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 15, "the queue to drain")
    finally:
        await writer.stop()
        await db.close()
    assert (writer.stats.dropped, writer.stats.repaired, writer.stats.quarantined) == (0, 1, 0)
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone() == (3,)
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests WHERE tool_name = 'nul\ufffdbyte'"
                              ).fetchone() == (1,)
