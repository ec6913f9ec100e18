"""Two gateway processes behind a real round-robin nginx with no stickiness (the docs/scaling.md setup).

fastmcp.Client in legacy (handshake) mode and the TypeScript SDK (pinned in tests/scaleout/ts/, installed
with `npm ci`): every session's requests alternate between the processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import psycopg
from fastmcp import Client
from mcp_types import Implementation

from gateway.tracking.writer import CRASH_AFTER_SECONDS
from tests.gateway_proc import free_port, make_jwt, ready, start_gateway, stop_all
from tests.pg import TestDatabase
from tests.resilience.conftest import ACCEPT, LEGACY, poll, rows, scalar
from tests.scaleout.nginx import ensure_ts_client, round_robin

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")
CLIENTS, CALLS = 4, 60  # 240 calls over 4 handshake-era sessions


def _served_by(access_log: Path) -> Counter[str]:
    """Upstream address of every POST nginx passed on (its access log)."""
    return Counter(line.split()[2] for line in access_log.read_text().splitlines()
                   if line.startswith("POST ") and len(line.split()) >= 3)


async def test_legacy_clients_through_round_robin_nginx_then_one_process_killed(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    first, second = ready(start_gateway(database, tmp_path / "a", args=TOOLS, wait=False),
                          start_gateway(database, tmp_path / "b", args=TOOLS, wait=False))
    lb_port = free_port()
    url = f"http://127.0.0.1:{lb_port}/mcp"
    try:
        with round_robin([first.port, second.port], lb_port, tmp_path / "nginx") as access_log:
            session_ids: dict[str, str] = {}

            async def client(n: int) -> int:
                async with Client(url, auth=make_jwt(f"u{n}", f"t{n % 2}"), mode="legacy") as mcp:
                    session_ids[f"u{n}"] = str(mcp.transport.get_session_id())
                    for i in range(CALLS):
                        result = await mcp.call_tool("echo", {"text": f"u{n}-{i}"})
                        assert result.data == f"u{n}-{i}"
                return CALLS

            done = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
            assert sum(done) == CLIENTS * CALLS
            await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == CLIENTS * CALLS,
                       30, "every call stored")
            # nginx really alternated: both processes got a fair share of the POSTs ...
            served = _served_by(access_log)
            assert set(served) == {f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"}, served
            assert min(served.values()) > CLIENTS * CALLS // 3, served
            # ... and served every user's session (their per-call log lines).
            for process in (first, second):
                users = Counter(line.split('"user": "', 1)[1].split('"', 1)[0]
                                for line in process.log().splitlines() if '"event": "tool_call"' in line)
                assert set(users) == {f"u{n}" for n in range(CLIENTS)}, users
            # One analytics session per protocol session, each ended once by the client's DELETE (whichever
            # process it reached), and rows == calls per session.
            await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions"
                                                  " WHERE disconnect_reason = 'client_disconnect'") == CLIENTS,
                       30, "every session ended client_disconnect")
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == CLIENTS
            assert sorted(rows(admin_conn, "SELECT user_id, count(*) FROM gateway.mcp_requests GROUP BY 1")) \
                == [(f"u{n}", CALLS) for n in range(CLIENTS)]
            assert scalar(admin_conn, "SELECT max(c) FROM (SELECT count(DISTINCT session_id) c"
                                      " FROM gateway.mcp_requests GROUP BY user_id) x") == 1
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_protocol_sessions"
                                      " WHERE end_reason = 'client_disconnect'") == CLIENTS

            # A hijacked session id is refused on both processes (through nginx, twice, and directly).
            alice, mallory = make_jwt("alice", "acme"), make_jwt("mallory", "acme")
            async with Client(url, auth=alice, mode="legacy") as victim:
                await victim.call_tool("echo", {"text": "mine"})
                stolen_id = str(victim.transport.get_session_id())
                async with httpx.AsyncClient(timeout=10) as http:
                    for target in (url, url, first.mcp_url, second.mcp_url):
                        stolen = await http.post(target, headers={
                            "Authorization": f"Bearer {mallory}", "Mcp-Session-Id": stolen_id,
                            "MCP-Protocol-Version": LEGACY, "Accept": ACCEPT, "Content-Type": "application/json"},
                            json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                  "params": {"name": "echo", "arguments": {"text": "stolen"}}})
                        assert stolen.status_code == 404, stolen.text
                await victim.call_tool("echo", {"text": "still mine"})
            await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests"
                                                  " WHERE user_id = 'alice'") == 2, 30, "alice's calls stored")
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests WHERE user_id = 'mallory'") == 0

            # SIGKILL the second process in the middle of a session: its in-flight call fails cleanly (or is
            # answered), and every later call on the same session succeeds through the first.
            async with Client(url, auth=make_jwt("kim", "acme"), mode="legacy", timeout=30) as survivor:
                for i in range(10):
                    await survivor.call_tool("echo", {"text": f"before-{i}"})
                await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions"
                                                      " WHERE user_id = 'kim' AND status <> 'disconnected'") == 1,
                           30, "kim's analytics session stored")
                dead_instance = f"test-{second.port}"
                # An analytics session the second process certainly opened: a sessionless call straight to it.
                async with Client(second.mcp_url, auth=make_jwt("kim", "acme"),
                                  client_info=Implementation(name="direct", version="1")) as direct:
                    await direct.call_tool("echo", {"text": "direct"})
                await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions WHERE instance_id = %s"
                                                      " AND client_type = 'direct' AND status <> 'disconnected'",
                                          dead_instance) == 1, 30, "the second process's own session stored")
                in_flight = asyncio.create_task(survivor.call_tool("slow", {"seconds": 1.0}))
                await asyncio.sleep(0)  # let it be sent
                os.kill(second.proc.pid, signal.SIGKILL)
                second.proc.wait(10)
                try:
                    await in_flight
                except Exception as exc:  # an error answer, never a hang or a crash of the client
                    assert type(exc).__name__ in ("ToolError", "McpError", "MCPError", "HTTPStatusError",
                                                  "RemoteProtocolError"), exc
                try:
                    later = [await survivor.call_tool("echo", {"text": f"after-{i}"}) for i in range(30)]
                except Exception as exc:  # say which call and what the survivor logged
                    raise AssertionError(f"a call after the kill failed: {exc!r}\n{first.log()[-3000:]}") from exc
                assert [r.data for r in later] == [f"after-{i}" for i in range(30)]
            # The dead process's open analytics sessions are ended server_crash by the survivor's sweep once its
            # heartbeat is CRASH_AFTER_SECONDS old. Its heartbeat is recent, so the session is still open; then the
            # heartbeat is aged in the database rather than waited out (the dead process cannot renew it).
            assert rows(admin_conn, "SELECT status FROM gateway.mcp_sessions WHERE instance_id = %s"
                                    " AND client_type = 'direct'", dead_instance) != [("disconnected",)]
            admin_conn.execute("UPDATE gateway.instances SET heartbeat_at = now() - make_interval(secs => %s)"
                               " WHERE instance_id = %s", (CRASH_AFTER_SECONDS + 1, dead_instance))
            await poll(lambda: rows(admin_conn, "SELECT disconnect_reason FROM gateway.mcp_sessions"
                                                " WHERE instance_id = %s AND client_type = 'direct'", dead_instance)
                       == [("server_crash",)], 30, "the dead process's session ended server_crash")
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions WHERE status <> 'disconnected'"
                                      " AND instance_id = %s", dead_instance) == 0
    finally:
        stop_all(first, second)


async def test_legacy_clients_through_nginx_to_serve_workers_2(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    gateway = start_gateway(database, tmp_path / "w", args=(*TOOLS, "--workers", "2"))
    lb_port = free_port()
    url = f"http://127.0.0.1:{lb_port}/mcp"
    try:
        # One upstream (the workers' shared port), a new connection per request: the kernel hands each to
        # whichever worker accepts it, so a session's requests land on both workers.
        with round_robin([gateway.port], lb_port, tmp_path / "nginx", keepalive=False):
            async def client(n: int) -> None:
                async with Client(url, auth=make_jwt(f"w{n}", "acme"), mode="legacy") as mcp:
                    for i in range(CALLS):
                        assert (await mcp.call_tool("echo", {"text": f"w{n}-{i}"})).data == f"w{n}-{i}"

            await asyncio.gather(*(client(n) for n in range(CLIENTS)))
            await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions"
                                                  " WHERE disconnect_reason = 'client_disconnect'") == CLIENTS,
                       30, "every session ended client_disconnect")
        assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == CLIENTS * CALLS
        assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == CLIENTS
        adopted = Counter(line.split('"instance": "', 1)[1].split('"', 1)[0]
                          for line in gateway.log().splitlines() if '"event": "session_adopted"' in line)
        assert adopted and set(adopted) <= {f"test-{gateway.port}-w0", f"test-{gateway.port}-w1"}, adopted
    finally:
        assert gateway.stop() == 0


async def test_typescript_sdk_clients_through_round_robin_nginx(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    client_dir = ensure_ts_client()  # npm ci of the pinned @modelcontextprotocol/sdk
    first, second = ready(start_gateway(database, tmp_path / "a", args=TOOLS, wait=False),
                          start_gateway(database, tmp_path / "b", args=TOOLS, wait=False))
    lb_port = free_port()
    url = f"http://127.0.0.1:{lb_port}/mcp"
    try:
        with round_robin([first.port, second.port], lb_port, tmp_path / "nginx") as access_log:
            procs = [await asyncio.create_subprocess_exec(
                "node", str(client_dir / "client.mjs"), url, make_jwt(f"ts{n}", "acme"), str(CALLS), f"ts{n}",
                cwd=client_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                for n in range(CLIENTS)]
            outputs = [await asyncio.wait_for(p.communicate(), 180) for p in procs]
            results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
            assert all(r["errors"] == [] for r in results), [(r["errors"][:3], err[-500:]) for r, (_, err)
                                                            in zip(results, outputs, strict=True)]
            assert sum(r["ok"] for r in results) == CLIENTS * CALLS
            assert all(r["sessionId"] for r in results)  # handshake era: each client held an Mcp-Session-Id
            served = _served_by(access_log)
            assert len(served) == 2 and min(served.values()) > CLIENTS * CALLS // 3, served
        await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions"
                                              " WHERE disconnect_reason = 'client_disconnect'") == CLIENTS,
                   30, "every TypeScript session ended client_disconnect")
        assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == CLIENTS * CALLS
        assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == CLIENTS
        assert sorted(rows(admin_conn, "SELECT client_type, count(*) FROM gateway.mcp_requests GROUP BY 1")) \
            == [(f"ts{n}", CALLS) for n in range(CLIENTS)]
    finally:
        stop_all(first, second)
