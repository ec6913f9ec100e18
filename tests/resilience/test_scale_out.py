"""Two gateway processes on one database: what a load balancer in front of N replicas relies on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import psycopg

from tests.gateway_proc import make_jwt, ready, start_gateway, stop_all
from tests.pg import TestDatabase
from tests.resilience.conftest import ACCEPT, LEGACY, Load, poll, rows, scalar

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")
USERS, CLIENTS, CALLS = 4, 8, 40


async def test_two_replicas_one_database_exact_totals_and_one_open_session_per_key(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    first, second = ready(start_gateway(database, tmp_path / "a", args=TOOLS, wait=False),
                          start_gateway(database, tmp_path / "b", args=TOOLS, wait=False))
    try:
        # Sessionless (2026-07-28) clients alternate between the replicas call by call; two clients share each
        # user's token and client name, so every analytics session key is hit from both processes at once.
        tokens = [make_jwt(f"u{n}", f"t{n % 2}") for n in range(USERS)]
        async with Load([first.base_url, second.base_url], tokens, clients=CLIENTS, calls=CALLS,
                        eras=("modern",), deadline=120) as load:
            await load.wait()
        assert not load.errors, load.summary()
        expected: Counter[str] = Counter()
        for n, stats in enumerate(load.stats):
            expected[f"u{n % USERS}"] += stats.ok
        assert sum(expected.values()) == CLIENTS * CALLS
        await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") >= CLIENTS * CALLS, 60,
                   "every call stored")

        # A handshake-era session opened on one replica is served by the other (gateway/mcp/session_sharing.py).
        async with httpx.AsyncClient(timeout=10) as http:
            headers = {"Authorization": f"Bearer {tokens[0]}", "Accept": ACCEPT, "Content-Type": "application/json"}
            init = await http.post(first.mcp_url, headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})
            sid = init.headers["mcp-session-id"]
            elsewhere = await http.post(second.mcp_url, headers=headers | {"Mcp-Session-Id": sid,
                                                                           "MCP-Protocol-Version": LEGACY},
                                        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            assert elsewhere.status_code == 200 and '"echo"' in elsewhere.text, elsewhere.text
    finally:
        stop_all(first, second)
    assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == CLIENTS * CALLS
    assert dict(rows(admin_conn, "SELECT user_id, count(*) FROM gateway.mcp_requests GROUP BY 1")) == dict(expected)
    # Both replicas served every user (their per-call log lines) ...
    for replica in (first, second):
        served = Counter(line.split('"user": "', 1)[1].split('"', 1)[0]
                         for line in replica.log().splitlines() if '"event": "tool_call"' in line)
        assert set(served) == set(expected) and sum(served.values()) == CLIENTS * CALLS // 2, served
    # ... yet each user's calls landed on one analytics session (the replicas adopted one another's),
    per_user_sessions = rows(admin_conn, "SELECT user_id, count(DISTINCT session_id) FROM gateway.mcp_requests"
                                         " GROUP BY 1 ORDER BY 1")
    assert per_user_sessions == [(f"u{n}", 1) for n in range(USERS)]
    # and no key ever had two sessions open (the partial unique index), checked over the whole history too.
    assert rows(admin_conn, "SELECT session_key FROM gateway.mcp_sessions WHERE status <> 'disconnected'"
                            " GROUP BY 1 HAVING count(*) > 1") == []
    assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == USERS
    assert rows(admin_conn, "SELECT DISTINCT disconnect_reason FROM gateway.mcp_sessions") == [("server_shutdown",)]
