"""Every tool call recorded per user, over real HTTP, in both protocol eras and over SSE."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from fastmcp import Client
from fastmcp.client.transports import SSETransport

from tests.gateway.conftest import query, wait_rows
from tests.gateway_proc import GatewayProcess, make_jwt

SESSION_COLUMNS = ("tenant_id, user_id, user_email, user_name, client_type, client_version, protocol_version,"
                   " transport, status")


async def test_handshake_era_calls_are_recorded_with_principal_and_session(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    token = make_jwt("alice", "acme", email="alice@acme.example", name="Alice A")
    async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:
        await client.list_tools()
        # Lazy: a handshake and a listing open no analytics session.
        await asyncio.sleep(0.5)
        assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == [(0,)]
        for i in range(3):
            result = await client.call_tool("echo", {"text": f"hi {i}"})
            assert result.data == f"hi {i}"
    rows = wait_rows(admin_conn, "SELECT session_id, tenant_id, user_id, tool_name, status, prompt_tokens,"
                     " completion_tokens, estimated_cost, duration_ms FROM gateway.mcp_requests", 3)
    assert {r[1:5] for r in rows} == {("acme", "alice", "echo", "success")}
    assert len({r[0] for r in rows}) == 1, "one analytics session for one protocol session"
    assert all(r[5] > 0 and r[6] > 0 and r[7] > 0 and r[8] >= 0 for r in rows)
    sessions = query(admin_conn, f"SELECT {SESSION_COLUMNS}, mcp_session_id FROM gateway.mcp_sessions")
    assert len(sessions) == 1
    tenant, user, email, name, client_type, client_version, protocol, transport, _status, mcp_id = sessions[0]
    assert (tenant, user, email, name) == ("acme", "alice", "alice@acme.example", "Alice A")
    assert client_type and client_version and protocol and protocol != "2026-07-28"
    assert transport == "streamable-http" and mcp_id


async def test_sessionless_era_reuses_one_session_per_client(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    token = make_jwt("bob", "acme")
    for _ in range(2):  # two separate client objects, same client name/version: one continuing session
        async with Client(gateway.mcp_url, auth=token) as client:
            await client.call_tool("add", {"a": 1, "b": 2})
            await client.call_tool("echo", {"text": "x"})
    rows = wait_rows(admin_conn, "SELECT session_id FROM gateway.mcp_requests", 4)
    assert len({r[0] for r in rows}) == 1
    sessions = query(admin_conn, "SELECT protocol_version, user_id, mcp_session_id, client_type FROM"
                     " gateway.mcp_sessions")
    assert len(sessions) == 1
    assert sessions[0][0] == "2026-07-28" and sessions[0][1] == "bob" and sessions[0][2] is None
    assert sessions[0][3]


async def test_separate_sessions_for_separate_users_and_clients(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    alice, carol = make_jwt("alice", "acme"), make_jwt("carol", "globex")
    async with Client(gateway.mcp_url, auth=alice, mode="legacy") as c1, \
            Client(gateway.mcp_url, auth=alice, mode="legacy") as c2, \
            Client(gateway.mcp_url, auth=carol, mode="legacy") as c3:
        for client in (c1, c2, c3):
            await client.call_tool("echo", {"text": "a"})
            await client.call_tool("echo", {"text": "b"})
    rows = wait_rows(admin_conn, "SELECT r.session_id, r.user_id, s.user_id, r.tenant_id FROM gateway.mcp_requests r"
                     " JOIN gateway.mcp_sessions s USING (session_id)", 6)
    assert all(r[1] == r[2] for r in rows), "every request belongs to a session of its own user"
    by_session: dict[object, set[str]] = {}
    for session_id, user, _, tenant in rows:
        by_session.setdefault(session_id, set()).add(f"{tenant}/{user}")
    assert sorted(sorted(v) for v in by_session.values()) == [["acme/alice"], ["acme/alice"], ["globex/carol"]]


async def test_raw_http_handshake_is_recorded(gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    headers = {"Authorization": f"Bearer {make_jwt('dave', 'acme')}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as http:
        init = await http.post(gateway.mcp_url, headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw-httpx", "version": "9.9"}}})
        assert init.status_code == 200, init.text
        session_headers = headers | {"Mcp-Session-Id": init.headers["mcp-session-id"],
                                     "MCP-Protocol-Version": "2025-06-18"}
        await http.post(gateway.mcp_url, headers=session_headers,
                        json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = await http.post(gateway.mcp_url, headers=session_headers, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": 2, "b": 3}}})
        assert call.status_code == 200 and "5" in call.text
    wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests WHERE user_id = 'dave' AND tool_name = 'add'", 1)
    assert query(admin_conn, "SELECT client_type, client_version FROM gateway.mcp_sessions") == [("raw-httpx", "9.9")]


async def test_sse_transport_is_recorded_and_closes_on_disconnect(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    token = make_jwt("erin", "acme")
    transport = SSETransport(gateway.base_url + "/sse", headers={"Authorization": f"Bearer {token}"})
    async with Client(transport) as client:
        assert (await client.call_tool("echo", {"text": "over sse"})).data == "over sse"
    rows = wait_rows(admin_conn, "SELECT transport, status, disconnect_reason FROM gateway.mcp_sessions"
                     " WHERE status = 'disconnected'", 1)
    assert rows == [("sse", "disconnected", "client_disconnect")]
    assert query(admin_conn, "SELECT user_id, tool_name FROM gateway.mcp_requests") == [("erin", "echo")]


async def test_messages_without_trailing_slash_reaches_the_session(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {make_jwt('frank', 'acme')}"}
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", gateway.base_url + "/sse", headers=headers) as stream:
            endpoint = None
            async for line in stream.aiter_lines():
                if line.startswith("data:") and "session_id=" in line:
                    endpoint = line.split("data:", 1)[1].strip()
                    break
            assert endpoint and endpoint.startswith("/messages/?session_id=")
            no_slash = endpoint.replace("/messages/", "/messages", 1)
            response = await http.post(gateway.base_url + no_slash, headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "old", "version": "1"}}}, follow_redirects=False)
            assert response.status_code == 202, response.text


@pytest.mark.parametrize(("tool", "arguments", "expected"), [
    ("no_such_tool", {}, "Unknown tool"),
    ("add", {"a": "not a number", "b": 1}, "ValidationError"),
    ("explode", {"reason": "kaput"}, "exploded: kaput"),
])
async def test_failures_are_recorded_with_status_and_error(
        gateway: GatewayProcess, admin_conn: psycopg.Connection, tool: str, arguments: dict, expected: str) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("gina", "acme"), mode="legacy") as client:
        result = await client.call_tool(tool, arguments, raise_on_error=False)
        assert result.is_error
    rows = wait_rows(admin_conn, "SELECT tool_name, status, error_message FROM gateway.mcp_requests", 1)
    assert rows[0][0] == tool and rows[0][1] == "error"
    assert expected.lower() in rows[0][2].lower(), rows[0][2]


async def test_decorated_tool_is_recorded_exactly_once(gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("hank", "acme"), mode="legacy") as client:
        assert (await client.call_tool("shout", {"text": "hey"})).data == "HEY"
        await client.call_tool("echo", {"text": "marker"})
    rows = wait_rows(admin_conn, "SELECT tool_name FROM gateway.mcp_requests ORDER BY \"timestamp\"", 2)
    assert sorted(r[0] for r in rows) == ["echo", "shout"]


async def test_concurrent_clients_each_call_attributed(gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    clients, calls = 20, 50

    async def run(n: int) -> None:
        mode = "legacy" if n % 2 else "auto"
        async with Client(gateway.mcp_url, auth=make_jwt(f"user{n}", f"t{n % 3}"), mode=mode) as client:
            for i in range(calls):
                await client.call_tool("echo", {"text": f"{n}-{i}"})

    await asyncio.gather(*(run(n) for n in range(clients)))
    wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", clients * calls, timeout=30)
    rows = query(admin_conn, "SELECT tenant_id, user_id, count(*) FROM gateway.mcp_requests GROUP BY 1, 2")
    assert sorted(rows) == sorted((f"t{n % 3}", f"user{n}", calls) for n in range(clients))
    assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == [(clients * calls,)]


async def test_another_principal_cannot_use_a_session_id(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    alice, mallory = make_jwt("alice", "acme"), make_jwt("mallory", "acme")
    async with Client(gateway.mcp_url, auth=alice, mode="legacy") as client:
        await client.call_tool("echo", {"text": "mine"})
        session_id = client.transport.get_session_id()
        assert session_id
        async with httpx.AsyncClient(timeout=10) as http:
            hijack = await http.post(gateway.mcp_url, headers={
                "Authorization": f"Bearer {mallory}", "Mcp-Session-Id": session_id,
                "MCP-Protocol-Version": "2025-06-18", "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json"},
                json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "stolen"}}})
            assert hijack.status_code == 404
        await client.call_tool("echo", {"text": "still mine"})
    # The writer is FIFO: once the later legitimate call is stored, a hijacked one would be too.
    rows = wait_rows(admin_conn, "SELECT user_id FROM gateway.mcp_requests", 2)
    assert rows == [("alice",), ("alice",)]
    assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions WHERE user_id = 'mallory'") == [(0,)]


async def test_client_delete_closes_the_session(gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("ivy", "acme"), mode="legacy") as client:
        await client.call_tool("echo", {"text": "bye"})
    rows = wait_rows(admin_conn, "SELECT status, disconnect_reason, disconnected_at IS NOT NULL, total_duration"
                     " FROM gateway.mcp_sessions WHERE status = 'disconnected'", 1)
    assert rows[0][:3] == ("disconnected", "client_disconnect", True) and rows[0][3] >= 0
