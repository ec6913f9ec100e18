"""`serve --workers N`: real worker processes on one port, their ids, pools, crash and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psycopg

from tests.gateway_proc import make_jwt, start_gateway
from tests.pg import TestDatabase
from tests.resilience.conftest import Load, poll, rows, scalar
from tests.scaleout.procs import alive, worker_pids

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp", "--workers", "2")


async def test_two_workers_own_ids_pools_crash_recovery_and_clean_shutdown(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    gateway = start_gateway(database, tmp_path, args=TOOLS, MCP_GATEWAY_DB_POOL_SIZE="3",
                            MCP_GATEWAY_SQL_SLOTS="1")
    base = f"test-{gateway.port}"
    try:
        pids = await poll(lambda: (found := worker_pids(gateway.proc.pid)) and len(found) == 2 and found, 30,
                          "two workers")
        # Each worker holds its own instance id (the advisory lock) and heartbeats it.
        await poll(lambda: {r[0] for r in rows(admin_conn, "SELECT instance_id FROM gateway.instances")}
                   == {f"{base}-w0", f"{base}-w1"}, 30, "both workers heartbeating")
        tokens = [make_jwt(f"u{n}") for n in range(4)]
        async with Load([gateway.base_url], tokens, clients=8, calls=25, eras=("modern",), deadline=120) as load:
            await load.wait()
        assert not load.errors, load.summary()
        await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == load.ok, 30,
                   "every call stored")
        owners = {r[0] for r in rows(admin_conn, "SELECT DISTINCT instance_id FROM gateway.mcp_sessions")}
        assert owners and owners <= {f"{base}-w0", f"{base}-w1"}, owners
        # No process opened more than its share: pool 3 + lock 1 (+ console slots, unused here).
        per_process = rows(admin_conn, "SELECT application_name, count(*) FROM pg_stat_activity"
                                       " WHERE usename = 'mcp_gateway_app' GROUP BY 1")
        pooled = {name: n for name, n in per_process if not name.startswith("mcp-gateway instance lock")}
        assert pooled and all(n <= 3 for n in pooled.values()), per_process

        # SIGKILL a worker that holds open sessions: the supervisor starts it again under the same id, and the
        # new process ends what the dead one left open as server_crash.
        victim = int(sorted(owners)[0].rsplit("-w", 1)[1])
        victim_sessions = [r[0] for r in rows(
            admin_conn, "SELECT session_id FROM gateway.mcp_sessions WHERE instance_id = %s"
                        " AND status <> 'disconnected'", f"{base}-w{victim}")]
        assert victim_sessions
        os.kill(pids[victim], signal.SIGKILL)
        await poll(lambda: rows(admin_conn, "SELECT DISTINCT disconnect_reason FROM gateway.mcp_sessions"
                                            " WHERE session_id = ANY(%s)", victim_sessions) == [("server_crash",)],
                   40, "the killed worker's sessions ended server_crash")
        new_pids = await poll(lambda: (found := worker_pids(gateway.proc.pid)).get(victim) not in (None, pids[victim])
                              and len(found) == 2 and found, 30, "the killed worker restarted")
        assert new_pids[1 - victim] == pids[1 - victim] and alive(pids[1 - victim])  # its sibling was untouched
        gateway.wait_ready()
        async with Load([gateway.base_url], tokens, clients=4, calls=10, eras=("modern",), deadline=60) as again:
            await again.wait()
        assert not again.errors, again.summary()
        total = load.ok + again.ok
    finally:
        code = gateway.stop(signal.SIGTERM)
    # SIGTERM: every worker drained and flushed, the supervisor exits 0, no worker is left behind.
    assert code == 0, gateway.log()[-3000:]
    assert not alive(new_pids[0]) and not alive(new_pids[1])
    stored = scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests")
    assert stored == total, "\n".join(line for line in gateway.log().splitlines() if '"tool call"' not in line)[-4000:]
    reasons = dict(rows(admin_conn, "SELECT disconnect_reason, count(*) FROM gateway.mcp_sessions GROUP BY 1"))
    assert set(reasons) == {"server_crash", "server_shutdown"}, reasons


async def test_a_worker_refused_at_start_stops_the_supervisor_with_exit_2(
        database: TestDatabase, tmp_path: Path) -> None:
    # A connection budget too small for two workers: every worker refuses, the supervisor exits 2 with one line.
    gateway = start_gateway(database, tmp_path, args=TOOLS, wait=False, MCP_GATEWAY_DB_CONNECTION_BUDGET="8")
    code = await asyncio.to_thread(gateway.proc.wait, 60)
    assert code == 2, gateway.log()[-2000:]
    assert "MCP_GATEWAY_DB_CONNECTION_BUDGET=8" in gateway.log()
    assert "Traceback" not in gateway.log()
