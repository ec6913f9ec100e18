"""How analytics sessions end: idle timeout, graceful shutdown, crash; and a database outage."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import psycopg
from fastmcp import Client

from tests.gateway.conftest import query, wait_for, wait_rows
from tests.gateway_proc import create_pat, make_jwt, running_gateway, start_gateway
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")


async def test_idle_session_ends_as_timeout(database: TestDatabase, tmp_path: Path,
                                           admin_conn: psycopg.Connection) -> None:
    with running_gateway(database, tmp_path, args=TOOLS, MCP_GATEWAY_SESSION_IDLE_TIMEOUT="1.5") as gateway:
        async with Client(gateway.mcp_url, auth=make_jwt("idle", "acme")) as client:
            await client.call_tool("echo", {"text": "then silence"})
        rows = wait_rows(admin_conn, "SELECT disconnect_reason, total_duration FROM gateway.mcp_sessions"
                         " WHERE status = 'disconnected'", 1, timeout=20)
    assert rows[0][0] == "timeout" and rows[0][1] >= 1.5


async def test_sigterm_records_every_completed_call_and_closes_sessions(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    # A long flush interval keeps a backlog in memory: shutdown must drain it.
    gateway = start_gateway(database, tmp_path, args=TOOLS, MCP_GATEWAY_FLUSH_INTERVAL="30")
    completed = 0
    server_gone = asyncio.Event()
    try:
        async def caller(n: int) -> None:
            nonlocal completed
            client = Client(gateway.mcp_url, auth=make_jwt(f"u{n}", "acme"), mode="legacy")
            try:
                async with client:
                    for i in range(5):
                        await client.call_tool("echo", {"text": str(i)})
                        completed += 1
                    await client.call_tool("slow", {"seconds": 1.0})  # in flight when SIGTERM arrives
                    completed += 1
                    await server_gone.wait()  # keep the session open until the server is gone
            except Exception:
                pass  # closing a session against a stopped server fails; the calls above succeeded

        tasks = [asyncio.create_task(caller(n)) for n in range(4)]
        await asyncio.to_thread(wait_for, lambda: completed >= 20, 20, "20 completed calls")
        gateway.proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(gateway.proc.wait, 30)
        server_gone.set()
        await asyncio.gather(*tasks)
    finally:
        gateway.stop()
    assert exit_code == 0, gateway.log()[-2000:]
    assert completed == 24, "every in-flight call completed during graceful shutdown"
    assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == [(completed,)]
    sessions = query(admin_conn, "SELECT status, disconnect_reason FROM gateway.mcp_sessions")
    assert sessions == [("disconnected", "server_shutdown")] * 4


async def test_sigkill_leaves_sessions_that_the_next_start_closes_as_crashed(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    gateway = start_gateway(database, tmp_path, args=TOOLS)
    try:
        async with Client(gateway.mcp_url, auth=make_jwt("kim", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "before the crash"})
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", 1)
            gateway.proc.send_signal(signal.SIGKILL)
            gateway.proc.wait(10)
    except Exception:
        pass  # the client's DELETE fails against a dead server: that is the point
    finally:
        gateway.stop()
    assert query(admin_conn, "SELECT status FROM gateway.mcp_sessions") == [("active",)]
    restarted = start_gateway(database, tmp_path, args=TOOLS, port=gateway.port)
    try:
        rows = wait_rows(admin_conn, "SELECT disconnect_reason FROM gateway.mcp_sessions"
                         " WHERE status = 'disconnected'", 1)
    finally:
        restarted.stop()
    assert rows == [("server_crash",)]


async def test_database_outage_loses_no_calls(database: TestDatabase, tmp_path: Path,
                                             admin_conn: psycopg.Connection) -> None:
    proxy = CuttableProxy(database.urls.app)
    pat = create_pat(database, "acme", "pia")
    gateway = start_gateway(database, tmp_path, args=TOOLS,
                            MCP_GATEWAY_APP_DATABASE_URL=proxy.url_through(database.urls.app))
    calls = 0
    try:
        async with Client(gateway.mcp_url, auth=make_jwt("otto", "acme")) as client, \
                Client(gateway.mcp_url, auth=pat) as pat_client, \
                httpx.AsyncClient(timeout=5) as http:
            for _ in range(5):
                await client.call_tool("echo", {"text": "before"})
                await pat_client.call_tool("echo", {"text": "before"})  # verified once: known good
                calls += 2
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", calls)
            proxy.cut()
            for _ in range(15):
                await client.call_tool("echo", {"text": "during"})  # tool calls keep working
                calls += 1
            # Personal access tokens too, past their 2 s verification cache: no 401 during an outage.
            deadline = asyncio.get_running_loop().time() + 3
            while asyncio.get_running_loop().time() < deadline:
                await pat_client.call_tool("echo", {"text": "during"})
                calls += 1

            async def not_ready() -> bool:
                response = await http.get(gateway.base_url + "/ready")
                return response.status_code == 503 and response.json()["database"] == "down"

            deadline = asyncio.get_running_loop().time() + 15
            while not await not_ready():
                assert asyncio.get_running_loop().time() < deadline, "/ready never reported the outage"
                await asyncio.sleep(0.1)
            assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == [(10,)]
            proxy.restore()
            for _ in range(10):
                await client.call_tool("echo", {"text": "after"})
                calls += 1
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", calls, timeout=30)
            ready = await http.get(gateway.base_url + "/ready")
            assert ready.status_code == 200
    finally:
        gateway.stop()
        proxy.close()
    assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == [(calls,)]
    assert "database unavailable" in gateway.log()
