"""One live process per port and per instance id; a refused start touches nothing.

Real processes: a live gateway with an open analytics session, then a second one started the
way a person would (same port, or another port with the live instance's id).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from fastmcp import Client

from gateway.store.instance_lock import InstanceInUse, InstanceLock
from tests.gateway.conftest import query, wait_for, wait_rows
from tests.gateway_proc import REPO, free_port, gateway_env, make_jwt, start_gateway
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")


def run_second(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=str(REPO))


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-gateway: error:"), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


async def test_second_serve_on_a_busy_port_exits_2_and_leaves_the_live_sessions_alone(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    live = start_gateway(database, tmp_path / "live", args=TOOLS)
    try:
        async with Client(live.mcp_url, auth=make_jwt("ann", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "I am live"})
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_sessions", 1)
            # Same environment, so the same port and the same instance id (test-<port>).
            second = run_second(gateway_env(database, tmp_path / "second", live.port), *TOOLS)
            assert_one_line_refusal(second, f"port {live.port}", "--port", "MCP_GATEWAY_PORT")
            assert query(admin_conn, "SELECT status, disconnect_reason FROM gateway.mcp_sessions") == \
                [("active", None)], "the live instance's session must stay open"
            assert (await client.call_tool("echo", {"text": "still here"})).data == "still here"
    finally:
        live.stop()


async def test_a_live_instance_id_is_refused_and_a_dead_ones_sessions_are_recovered(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    live = start_gateway(database, tmp_path / "live", args=TOOLS, MCP_GATEWAY_INSTANCE_ID="shared-id")
    try:
        async with Client(live.mcp_url, auth=make_jwt("bo", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "mine"})
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_sessions", 1)
            env = gateway_env(database, tmp_path / "second", free_port(), MCP_GATEWAY_INSTANCE_ID="shared-id")
            second = run_second(env, *TOOLS)
            assert_one_line_refusal(second, "instance id 'shared-id'", "MCP_GATEWAY_INSTANCE_ID")
            assert query(admin_conn, "SELECT status FROM gateway.mcp_sessions") == [("active",)]
            assert (await client.call_tool("echo", {"text": "unharmed"})).data == "unharmed"
            live.proc.send_signal(signal.SIGKILL)
            live.proc.wait(10)
    except Exception:
        if live.proc.poll() is None:
            raise
        # the client's closing DELETE fails against a killed server: expected
    finally:
        live.stop()
    # The dead process's lock went with its connection: the id is free, and its session is a crash.
    restarted = start_gateway(database, tmp_path / "restarted", args=TOOLS, MCP_GATEWAY_INSTANCE_ID="shared-id")
    try:
        rows = wait_rows(admin_conn, "SELECT disconnect_reason FROM gateway.mcp_sessions"
                         " WHERE status = 'disconnected'", 1)
    finally:
        restarted.stop()
    assert rows == [("server_crash",)]


def test_dev_on_a_busy_port_prints_nothing_and_starts_nothing(database: TestDatabase, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        data_dir = tmp_path / "dev"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
        env.update(PYTHONPATH=str(REPO), MCP_GATEWAY_DATA_DIR=str(data_dir))
        by_flag = run_second(env, "dev", "--port", str(port))
        by_env = run_second(env | {"MCP_GATEWAY_PORT": str(port)}, "dev")
    for result in (by_flag, by_env):
        assert_one_line_refusal(result, f"port {port}", "--port", "MCP_GATEWAY_PORT")
        assert "Token" not in result.stdout
    # No embedded cluster was created or started, no token written: the port came first.
    assert not (data_dir / "pgdata").exists() and not (data_dir / "dev-token").exists()


def test_a_console_user_cannot_squat_an_instance_id(database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    """PostgreSQL calls a one-argument function through attribute notation, past a parser that looks at
    function calls only. Where migrate ran as a superuser the console login may not take advisory locks
    at all; where it could, its one-argument lock still does not touch the gateway's instance lock
    (two-key form), and the lock still excludes a second holder."""
    key = admin_conn.execute("SELECT hashtextextended('mcp-gateway instance ' || %s, 0)", ("victim",)).fetchone()
    assert key is not None
    with psycopg.connect(database.urls.console, autocommit=True) as squatter:
        try:
            taken = squatter.execute("SELECT k.pg_try_advisory_lock FROM unnest(ARRAY[%s::bigint]) k", key).fetchone()
            assert taken == (True,), "the squatter's lock itself works: this is the attack"
        except psycopg.errors.InsufficientPrivilege:
            pass  # the second wall (migrations/012): the console login may not take advisory locks
        first, second = InstanceLock(database.urls.app, "victim"), InstanceLock(database.urls.app, "victim")
        try:
            first.acquire()
            assert first.held and first.still_held()
            with pytest.raises(InstanceInUse):
                second.acquire()
            first.release()
            second.acquire()  # released with its connection: the next process may take it
            assert second.held
        finally:
            first.release()
            second.release()


async def test_database_away_at_start_lock_and_recovery_follow_and_spare_this_process_sessions(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    crashed = start_gateway(database, tmp_path / "crashed", args=TOOLS, MCP_GATEWAY_INSTANCE_ID="late")
    try:
        async with Client(crashed.mcp_url, auth=make_jwt("old", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "left open"})
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_sessions", 1)
            crashed.proc.send_signal(signal.SIGKILL)
            crashed.proc.wait(10)
    except Exception:
        if crashed.proc.poll() is None:
            raise
    finally:
        crashed.stop()
    proxy = CuttableProxy(database.urls.app)
    proxy.cut()  # the runtime login cannot reach the database: no lock, no recovery yet
    restarted = start_gateway(database, tmp_path / "restarted", args=TOOLS, MCP_GATEWAY_INSTANCE_ID="late",
                              MCP_GATEWAY_APP_DATABASE_URL=proxy.url_through(database.urls.app))
    try:
        async with Client(restarted.mcp_url, auth=make_jwt("new", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "served while the database is away"})
            assert query(admin_conn, "SELECT user_id, status FROM gateway.mcp_sessions") == [("old", "active")]
            proxy.restore()
            rows = wait_rows(admin_conn, "SELECT user_id, status, disconnect_reason FROM gateway.mcp_sessions"
                             " ORDER BY user_id", 2, timeout=30)
            wait_for(lambda: query(admin_conn, "SELECT disconnect_reason FROM gateway.mcp_sessions"
                                   " WHERE user_id = 'old'") == [("server_crash",)], 30, "late crash recovery")
            rows = query(admin_conn, "SELECT user_id, status, disconnect_reason FROM gateway.mcp_sessions"
                         " ORDER BY user_id")
            assert rows == [("new", "active", None), ("old", "disconnected", "server_crash")]
    finally:
        restarted.stop()
        proxy.close()
    assert "instance lock and crash recovery wait for it" in restarted.log()
