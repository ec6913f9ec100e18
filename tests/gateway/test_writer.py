"""The writer against a real outage: bounded memory, a spill file, nothing lost, nothing silent."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from auth import Principal
from gateway.store.db import Database
from gateway.tracking.middleware import ClientInfo
from gateway.tracking.records import SessionOpened, ToolCalled
from gateway.tracking.sessions import AnalyticsSessions
from gateway.tracking.writer import TrackingWriter, utcnow
from tests.gateway.conftest import wait_for
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat", email="a@acme.example")
CLIENT = ClientInfo("pytest", "1", "2026-07-28", "streamable-http", None)


Proxied = tuple[CuttableProxy, Database]


@pytest.fixture
async def proxied(database: TestDatabase) -> AsyncIterator[Proxied]:
    """The app login's pool reaching PostgreSQL through a proxy the test can cut and restore."""
    proxy = CuttableProxy(database.urls.app)
    urls = type(database.urls)(**{**database.urls.__dict__, "app": proxy.url_through(database.urls.app)})
    db = Database(urls, min_size=1, max_size=2)
    await db.open(wait=True)
    yield proxy, db
    await db.close()
    proxy.close()


def _call(sessions: AnalyticsSessions, writer: TrackingWriter) -> None:
    session_id, key = sessions.session_for(ALICE, CLIENT)
    writer.submit(ToolCalled(id=uuid.uuid4(), session_id=session_id, session_key=key, tenant_id="acme",
                             user_id="alice", tool_name="echo", status="success", error_message=None,
                             duration_ms=1.0, at=utcnow(), client_type="pytest", arguments={"text": "x"},
                             result_text="x"))


async def test_outage_spills_past_the_memory_bound_and_loses_nothing(
        tmp_path: Path, admin_conn: psycopg.Connection, proxied: Proxied) -> None:
    proxy, db = proxied
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


def _opened(tenant: str, user: str, name: str | None = None, key: str | None = None) -> SessionOpened:
    return SessionOpened(session_id=uuid.uuid4(), session_key=key or uuid.uuid4().hex * 2, tenant_id=tenant,
                         user_id=user, user_email=None, user_name=name, user_role="member", client_type="pytest",
                         client_version="1", protocol_version="2026-07-28", transport="streamable-http",
                         mcp_session_id=None, at=utcnow())


def _called(session: SessionOpened, **overrides: object) -> ToolCalled:
    values: dict[str, object] = dict(id=uuid.uuid4(), session_id=session.session_id, session_key=session.session_key,
                                     tenant_id=session.tenant_id, user_id=session.user_id, tool_name="echo",
                                     status="success", error_message=None, duration_ms=1.0, at=utcnow(),
                                     client_type="pytest", prompt_tokens=1, completion_tokens=1)
    values.update(overrides)
    return ToolCalled(**values)  # type: ignore[arg-type]


async def test_a_lone_surrogate_is_not_an_outage_and_takes_nothing_down(
        database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    """Before: UnicodeEncodeError was taken for an outage; the batch was retried forever and nobody's
    calls were written. Now: the batch is bisected, the record cleaned, every row written."""
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w4", flush_interval=0.1)
    crafted, other = _opened("acme", "mallory", name="Mal\ud800lory"), _opened("globex", "bob", name="Bob")
    records = [crafted, other, _called(crafted), _called(other), _called(crafted, tool_name="t\udfff\x00"),
               _called(other), _called(crafted, error_message="bad \ud83d", status="error")]
    for record in records:
        writer.submit(record)  # type: ignore[arg-type]
    await writer.start()
    try:
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 15, "the queue to drain")
        assert writer.health()["healthy"]
    finally:
        await writer.stop()
        await db.close()
    assert writer.stats.database_up and writer.stats.quarantined == 0 and writer.stats.dropped == 0
    assert writer.stats.repaired == 3  # the session row and two calls, each cleaned once
    assert admin_conn.execute("SELECT user_id, count(*) FROM gateway.mcp_requests GROUP BY 1 ORDER BY 1"
                              ).fetchall() == [("bob", 2), ("mallory", 3)]
    assert admin_conn.execute("SELECT user_name FROM gateway.mcp_sessions WHERE user_id = 'mallory'"
                              ).fetchall() == [("Mallory",)]


async def test_a_record_that_cannot_be_stored_at_all_is_quarantined_alone(
        database: TestDatabase, admin_conn: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w5", flush_interval=0.1)
    good = _opened("acme", "alice")
    impossible = _opened("t" * 300, "x")  # no tenant id may be that long (the database CHECKs it)
    for record in [good, _called(good), impossible, _called(impossible), _called(good)]:
        writer.submit(record)  # type: ignore[arg-type]
    await writer.start()
    try:
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 15, "the queue to drain")
    finally:
        await writer.stop()
        await db.close()
    assert (writer.stats.quarantined, writer.stats.dropped) == (2, 0)  # the session and its call
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests WHERE user_id = 'alice'").fetchone() == (2,)
    quarantined = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(quarantined) == 2 and "t" * 300 not in caplog.text


async def test_a_call_whose_session_row_was_lost_gets_a_minimal_one(
        database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w6", flush_interval=0.1)
    admin_conn.execute("INSERT INTO gateway.tenants (tenant_id) VALUES ('acme')")
    admin_conn.execute("INSERT INTO gateway.users (tenant_id, user_id, role) VALUES ('acme', 'ada', 'admin')")
    orphan = _opened("acme", "ada")  # never submitted: as if it had been lost
    writer.submit(_called(orphan))
    await writer.start()
    try:
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 15, "the queue to drain")
    finally:
        await writer.stop()
        await db.close()
    assert writer.stats.repaired == 1 and writer.stats.quarantined == 0
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone() == (1,)
    assert admin_conn.execute("SELECT role FROM gateway.users WHERE user_id = 'ada'").fetchone() == ("admin",)


async def test_health_reports_a_backlog_that_is_not_moving(proxied: Proxied) -> None:
    proxy, db = proxied
    writer = TrackingWriter(db, instance_id="w7", flush_interval=0.1, stall_seconds=0.5)
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    await writer.start()
    try:
        _call(sessions, writer)
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 10, "first flush")
        assert writer.health()["healthy"]
        proxy.cut()
        _call(sessions, writer)
        await asyncio.to_thread(wait_for, lambda: not writer.health()["healthy"], 10, "the stall to show")
        health = writer.health()
        assert health["backlog"] == 1 and "nothing written" in health["problem"]
        proxy.restore()
        await asyncio.to_thread(wait_for, lambda: writer.health()["healthy"], 20, "recovery")
    finally:
        await writer.stop()


async def test_a_batch_chosen_as_a_deadlock_victim_is_written_again(
        database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    """Before: a deadlock (two replicas' batches, or one's shutdown beside another's last batch, updating the
    same session rows in other orders) was taken for an outage, and at shutdown its records were lost."""
    db = Database(database.urls, min_size=1, max_size=2)
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id="w8", flush_interval=0.05)
    # Ids and keys in the same order, so the rows lie (and are scanned, and locked) in id order.
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    first = dataclasses.replace(_opened("acme", "ann", key="a" * 64), session_id=low)
    second = dataclasses.replace(_opened("acme", "bo", key="b" * 64), session_id=high)
    for record in (first, second):
        writer.submit(record)
    await writer.start()
    holder = psycopg.connect(database.admin_url)  # the other side: one transaction, two row locks
    try:
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 10, "the sessions written")
        # The other side holds the second session's row; the writer's batch updates both sessions in their
        # id order, so it takes the first and waits for the second...
        holder.execute("SET deadlock_timeout = '30s'")  # the writer's backend detects the cycle, not this one
        holder.execute("UPDATE gateway.mcp_sessions SET user_name = 'held' WHERE session_id = %s",
                       (second.session_id,))
        writer.submit(_called(first))
        writer.submit(_called(second))
        await asyncio.to_thread(wait_for, lambda: _writer_waits_on_a_lock(admin_conn), 10, "the writer to wait")
        # ... and then asks for the first: a cycle, and PostgreSQL aborts the writer's side.
        await asyncio.to_thread(holder.execute, "UPDATE gateway.mcp_sessions SET user_name = 'held'"
                                " WHERE session_id = %s", (first.session_id,))
        holder.commit()
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 10, "the batch written again")
        assert writer.stats.rolled_back >= 1  # the cycle really happened, and the writer ran its side again
        assert writer.stats.database_up and writer.stats.last_error is None  # not taken for an outage
    finally:
        holder.close()
        await writer.stop()
        await db.close()
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone() == (2,)


async def test_a_database_back_within_the_drain_bound_loses_nothing_at_shutdown(
        admin_conn: psycopg.Connection, proxied: Proxied) -> None:
    """Before: the first failed flush after stop() gave up on the whole queue."""
    proxy, db = proxied
    writer = TrackingWriter(db, instance_id="w9", flush_interval=0.05)
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    await writer.start()
    try:
        _call(sessions, writer)
        await asyncio.to_thread(wait_for, lambda: writer.backlog == 0, 10, "first flush")
        proxy.cut()
        for _ in range(5):
            _call(sessions, writer)
        stopping = asyncio.create_task(writer.stop(drain_timeout=20))
        await asyncio.to_thread(wait_for, lambda: not writer.stats.database_up, 10, "the failed drain")
        assert not stopping.done()  # still draining, not given up
        proxy.restore()
        await asyncio.wait_for(stopping, 25)
    finally:
        await writer.stop()
    assert writer.backlog == 0 and writer.stats.dropped == 0
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone() == (6,)
    assert admin_conn.execute("SELECT disconnect_reason FROM gateway.mcp_sessions").fetchall() == [("server_shutdown",)]


def _writer_waits_on_a_lock(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                             " AND query LIKE 'UPDATE gateway.mcp_sessions s SET last_activity%%'").fetchone()[0])


async def test_a_database_away_for_the_whole_drain_bounds_the_shutdown_and_says_what_was_lost(
        caplog: pytest.LogCaptureFixture, proxied: Proxied) -> None:
    proxy, db = proxied
    writer = TrackingWriter(db, instance_id="w10", flush_interval=0.05)
    sessions = AnalyticsSessions(writer, idle_timeout=600)
    await writer.start()
    proxy.cut()
    for _ in range(3):
        _call(sessions, writer)
    # The drain's bound, then at most the session close's own bound (not a pool timeout more).
    await asyncio.wait_for(writer.stop(drain_timeout=1.0), 1.0 + 3.0 + 2.0)
    assert writer.backlog == 4  # the session and three calls, said in the log, never silently
    assert "4 records were not written before exit" in caplog.text
    assert "could not close sessions at shutdown" in caplog.text


async def test_a_large_batch_is_counted_a_slice_at_a_time_so_calls_are_served_between(
        database: TestDatabase) -> None:
    writer = TrackingWriter(Database(database.urls), instance_id="w11")
    session = _opened("acme", "ann")
    batch = [_called(session, prompt_tokens=None, completion_tokens=None, arguments={"text": "x" * 50},
                     result_text="y" * 50) for _ in range(1000)]
    turns = 0
    counting = True

    async def a_call_waiting_for_the_loop() -> None:
        nonlocal turns
        while counting:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(a_call_waiting_for_the_loop())
    await asyncio.sleep(0)
    before = turns
    await writer._count_in_slices(batch)  # type: ignore[arg-type]
    counting = False
    await other
    assert all(c.prompt_tokens and c.completion_tokens for c in batch)
    assert turns - before >= 1000 // 64  # the loop turned between every two slices
