"""Handshake-era sessions across processes, request by request (raw HTTP, two real gateway processes)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg

from gateway.mcp.session_sharing import BINDING_CACHE
from tests.gateway_proc import GatewayProcess, make_jwt, ready, start_gateway, stop_all
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase
from tests.resilience.conftest import ACCEPT, LEGACY, poll, rows, scalar

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")


def _headers(token: str, session_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
    if session_id:
        headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}
    return headers


async def _initialize(http: httpx.AsyncClient, gateway: GatewayProcess, token: str) -> str:
    init = await http.post(gateway.mcp_url, headers=_headers(token), json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {"roots": {}},
                   "clientInfo": {"name": "sharing-test", "version": "7.1"}}})
    assert init.status_code == 200, init.text
    session_id = init.headers["mcp-session-id"]
    note = await http.post(gateway.mcp_url, headers=_headers(token, session_id),
                           json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert note.status_code == 202
    return session_id


async def _ping(http: httpx.AsyncClient, gateway: GatewayProcess, token: str, session_id: str) -> httpx.Response:
    return await http.post(gateway.mcp_url, headers=_headers(token, session_id),
                           json={"jsonrpc": "2.0", "id": 0, "method": "ping"})


async def _echo(http: httpx.AsyncClient, gateway: GatewayProcess, token: str, session_id: str,
                n: int) -> httpx.Response:
    return await http.post(gateway.mcp_url, headers=_headers(token, session_id), json={
        "jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": f"m{n}"}}})


async def test_a_session_opened_on_one_process_is_served_by_the_other_and_refused_to_everyone_else(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    first, second = ready(start_gateway(database, tmp_path / "a", args=TOOLS, wait=False),
                          start_gateway(database, tmp_path / "b", args=TOOLS, wait=False))
    alice, mallory = make_jwt("alice", "acme"), make_jwt("mallory", "acme")
    other_tenant_alice = make_jwt("alice", "globex")
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            session_id = await _initialize(http, first, alice)
            # The binding holds only a hash of the id.
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_protocol_sessions"
                                      " WHERE session_hash = sha256(%s::bytea)", session_id.encode()) == 1
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_protocol_sessions"
                                      " WHERE encode(session_hash, 'escape') LIKE %s", f"%{session_id}%") == 0
            # Hijacks first (before any process adopted it for alice), then again after: refused on both.
            for _ in range(2):
                for gateway in (first, second):
                    for thief in (mallory, other_tenant_alice):
                        stolen = await _echo(http, gateway, thief, session_id, 99)
                        assert stolen.status_code == 404, stolen.text
                    gone = await http.delete(gateway.mcp_url, headers=_headers(mallory, session_id))
                    assert gone.status_code == 404
                for n, gateway in enumerate((second, first, second, first), start=2):
                    answer = await _echo(http, gateway, alice, session_id, n)
                    assert answer.status_code == 200 and '"isError":false' in answer.text, answer.text
            # A forged id is unknown everywhere.
            forged = await _echo(http, second, alice, "0" * 32, 50)
            assert forged.status_code == 404
            # The adopted copy speaks what initialize negotiated, for the client initialize named.
            who = await http.post(second.mcp_url, headers=_headers(alice, session_id), json={
                "jsonrpc": "2.0", "id": 60, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
            assert who.status_code == 200 and "alice" in who.text
            # DELETE on the process that did not create it ends it on both.
            deleted = await http.delete(second.mcp_url, headers=_headers(alice, session_id))
            assert deleted.status_code in (200, 204), deleted.text
            # The deleting process refuses it at once; the other within the binding cache's staleness bound,
            # watched with `ping` (untracked) so no call lands on an ended session while waiting.
            assert (await _echo(http, second, alice, session_id, 70)).status_code == 404
            started = time.monotonic()
            while (await _ping(http, first, alice, session_id)).status_code != 404:
                assert time.monotonic() - started < BINDING_CACHE + 3, "DELETE never reached the other process"
                await asyncio.sleep(0.05)
            assert (await _echo(http, first, alice, session_id, 71)).status_code == 404
        await poll(lambda: rows(admin_conn, "SELECT status, disconnect_reason FROM gateway.mcp_sessions")
                   == [("disconnected", "client_disconnect")], 30, "the analytics session ended client_disconnect")
        assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests WHERE user_id = 'alice'") == 9
        # One analytics session for the protocol session, named by the client's initialize on every process.
        assert rows(admin_conn, "SELECT client_type, client_version, protocol_version FROM gateway.mcp_sessions") \
            == [("sharing-test", "7.1", LEGACY)]
        assert scalar(admin_conn, "SELECT count(DISTINCT session_id) FROM gateway.mcp_requests") == 1
    finally:
        stop_all(first, second)


async def test_with_the_database_away_sessions_a_process_holds_keep_working(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    proxy = CuttableProxy(database.urls.app)
    gateway = start_gateway(database, tmp_path, args=TOOLS,
                            MCP_GATEWAY_APP_DATABASE_URL=proxy.url_through(database.urls.app))
    alice = make_jwt("alice", "acme")
    try:
        # The pool would make a binding read wait 10 s for a connection; the client gives each call 6 s.
        async with httpx.AsyncClient(timeout=6) as http:
            held = await _initialize(http, gateway, alice)
            assert (await _echo(http, gateway, alice, held, 1)).status_code == 200
            proxy.cut()
            for n in range(2, 12):
                answer = await _echo(http, gateway, alice, held, n)
                assert answer.status_code == 200 and '"isError":false' in answer.text, answer.text
            # A new session opens too (served by this process only while its binding cannot be stored).
            during = await _initialize(http, gateway, alice)
            assert (await _echo(http, gateway, alice, during, 20)).status_code == 200
            proxy.restore()
            # Back: once the pool has reconnected (and the back-off passed), new sessions are shared again.
            started = time.monotonic()
            while True:
                after = await _initialize(http, gateway, alice)
                if scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_protocol_sessions"
                                      " WHERE session_hash = sha256(%s::bytea)", after.encode()):
                    break
                assert time.monotonic() - started < 60, "bindings never stored again after the outage"
                await asyncio.sleep(0.5)
            assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_protocol_sessions"
                                      " WHERE session_hash = sha256(%s::bytea)", during.encode()) == 0
    finally:
        gateway.stop()
        proxy.close()


async def test_requests_arriving_together_at_a_process_that_adopts_the_session_are_all_answered(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    """Before: the adopted transport was listed before it was connected, and a request arriving meanwhile
    got a 500 ("No read stream writer available"); a client's concurrent requests after a load balancer
    moved it did exactly that (found by soaking the TypeScript SDK clients through round-robin nginx)."""
    first, second = ready(start_gateway(database, tmp_path / "a", args=TOOLS, wait=False),
                          start_gateway(database, tmp_path / "b", args=TOOLS, wait=False))
    alice = make_jwt("alice", "acme")
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            for round_ in range(3):  # a fresh session each round: each is adopted once more, under load
                session_id = await _initialize(http, first, alice)
                answers = await asyncio.gather(*(_echo(http, second, alice, session_id, 100 * round_ + n)
                                                 for n in range(16)))
                failed = [(a.status_code, a.text[:200]) for a in answers
                          if a.status_code != 200 or '"isError":false' not in a.text]
                assert not failed, failed
        adopted = [line for line in second.log().splitlines() if '"event": "session_adopted"' in line]
        assert len(adopted) == 3, adopted  # once per session, however many requests raced for it
        assert "Traceback" not in second.log()
    finally:
        stop_all(first, second)
    await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == 48, 30, "every call stored")
