"""Whatever a claim or a client name holds, a served call is one row, and nobody else's rows stop.

Real gateway processes, real HTTP, real PostgreSQL. Each case here broke tracking before:
a NUL in a claim lost the call; a lone surrogate made the writer take its batch for a database
outage and retry it forever (nobody's calls written, /ready still ready); tenant `a/b` + user `c`
and tenant `a` + user `b/c` shared an analytics session and one side's calls were dropped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from fastmcp import Client

from tests.gateway.conftest import query, wait_for, wait_rows
from tests.gateway.raw_mcp import call_tool, succeeded
from tests.gateway_proc import JWT_SECRET, GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")
ERAS = ["modern", "legacy"]


def token(sub: str, tenant: str, **claims: object) -> str:
    return jwt.encode({"sub": sub, "tenant": tenant, "exp": 2_000_000_000, **claims}, JWT_SECRET, algorithm="HS256")


def ready(gateway: GatewayProcess) -> httpx.Response:
    return httpx.get(gateway.base_url + "/ready", timeout=10)


@pytest.mark.parametrize("era", ERAS)
async def test_nul_in_name_and_email_still_records_the_call(era: str, gateway: GatewayProcess,
                                                            admin_conn: psycopg.Connection) -> None:
    alice = token("alice", "acme", name="Ali\x00ce", email="alice\x00@acme.example")
    async with Client(gateway.mcp_url, auth=alice, mode="legacy" if era == "legacy" else "auto") as client:
        assert (await client.call_tool("echo", {"text": "nul"})).data == "nul"
    rows = wait_rows(admin_conn, "SELECT r.tenant_id, r.user_id, s.user_name, s.user_email FROM gateway.mcp_requests r"
                     " JOIN gateway.mcp_sessions s USING (session_id)", 1)
    assert rows == [("acme", "alice", "Alice", "alice@acme.example")]


@pytest.mark.parametrize("era", ERAS)
async def test_lone_surrogate_in_name_does_not_stop_anyone_s_calls(era: str, gateway: GatewayProcess,
                                                                   admin_conn: psycopg.Connection) -> None:
    mallory = token("mallory", "acme", name="Mal\ud800lory", email="\udfffm@acme.example")
    with httpx.Client(timeout=20) as http:
        assert succeeded(call_tool(http, gateway.mcp_url, mallory, "echo", {"text": "x"}, era=era))
    for n in range(3):  # other users, after the crafted one: all written
        async with Client(gateway.mcp_url, auth=make_jwt(f"bob{n}", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": "after"})
    rows = wait_rows(admin_conn, "SELECT user_id FROM gateway.mcp_requests ORDER BY \"timestamp\"", 4)
    assert [r[0] for r in rows] == ["mallory", "bob0", "bob1", "bob2"]
    assert query(admin_conn, "SELECT user_name, user_email FROM gateway.mcp_sessions WHERE user_id = 'mallory'") \
        == [("Mallory", "m@acme.example")]
    answer = ready(gateway)
    assert answer.status_code == 200 and answer.json()["writer"]["healthy"] is True
    # Nothing stays queued: the last client's session end may still be on its way to the database when the
    # call rows are, so the backlog is polled until it drains, not read once.
    wait_for(lambda: ready(gateway).json()["writer"]["backlog"] == 0, 10, "the writer's backlog to drain")


async def test_lone_surrogates_in_client_name_and_arguments_are_recorded(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    """2026-07-28 requests are parsed leniently: a lone surrogate reaches the tool, its result and the client
    name the gateway records. Token counting and the writer must cope."""
    with httpx.Client(timeout=20) as http:
        answer = call_tool(http, gateway.mcp_url, make_jwt("carol", "acme"), "echo", {"text": "a\ud800b\x00c"},
                           era="modern", client_name="cli\ud83d\u202eent\x00", client_version="1\udc00")
        assert succeeded(answer), answer.text[:300]
        assert succeeded(call_tool(http, gateway.mcp_url, make_jwt("dave", "acme"), "echo", {"text": "plain"},
                                   era="modern"))
    rows = wait_rows(admin_conn, "SELECT r.user_id, s.client_type, s.client_version, r.completion_tokens"
                     " FROM gateway.mcp_requests r JOIN gateway.mcp_sessions s USING (session_id)"
                     " ORDER BY r.\"timestamp\"", 2)
    assert rows[0][:3] == ("carol", "client", "1") and rows[0][3] > 0
    assert rows[1][:3] == ("dave", "raw", "1")


@pytest.mark.parametrize("era", ERAS)
async def test_slash_and_pipe_principals_get_separate_sessions(era: str, gateway: GatewayProcess,
                                                               admin_conn: psycopg.Connection) -> None:
    pairs = [("a/b", "c"), ("a", "b/c"), ("x|y", "z"), ("x", "y|z")]
    for tenant, user in pairs:
        async with Client(gateway.mcp_url, auth=make_jwt(user, tenant), mode="legacy" if era == "legacy" else "auto",
                          ) as client:
            await client.call_tool("echo", {"text": "1"})
            await client.call_tool("echo", {"text": "2"})
    rows = wait_rows(admin_conn, "SELECT r.tenant_id, r.user_id, s.tenant_id, s.user_id, r.session_id"
                     " FROM gateway.mcp_requests r JOIN gateway.mcp_sessions s USING (session_id)", 8)
    assert all(r[0:2] == r[2:4] for r in rows), rows
    per_principal: dict[tuple[str, str], set[object]] = {}
    for tenant, user, _, _, session in rows:
        per_principal.setdefault((tenant, user), set()).add(session)
    assert {k: len(v) for k, v in per_principal.items()} == {pair: 1 for pair in pairs}
    assert len(set().union(*per_principal.values())) == 4, "four principals, four analytics sessions"
    keys = query(admin_conn, "SELECT session_key FROM gateway.mcp_sessions")
    assert all(len(k) == 64 and set(k) <= set("0123456789abcdef") for (k,) in keys), "keys are hashes"


async def test_ready_reports_a_writer_that_cannot_write(database: TestDatabase, tmp_path: Path,
                                                        admin_conn: psycopg.Connection) -> None:
    """The database answers (ping fine) but refuses every write for a reason no record can fix: /ready must
    stop saying ready once records have waited MCP_GATEWAY_WRITER_STALL_SECONDS, and recover by itself."""
    with running_gateway(database, tmp_path, args=TOOLS, MCP_GATEWAY_WRITER_STALL_SECONDS="1") as gateway:
        async with Client(gateway.mcp_url, auth=make_jwt("erin", "acme")) as client:
            await client.call_tool("echo", {"text": "before"})
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", 1)
            assert ready(gateway).status_code == 200
            admin_conn.execute("REVOKE INSERT ON gateway.mcp_requests FROM mcp_gateway_ingest")
            try:
                await client.call_tool("echo", {"text": "during"})
                answer = await asyncio.to_thread(wait_for, lambda: (r := ready(gateway)).status_code == 503 and r,
                                                 15, "/ready to report the stalled writer")
                body = answer.json()
                assert body["database"] == "up" and body["writer"]["healthy"] is False
                assert "nothing written" in body["writer"]["problem"] and body["writer"]["backlog"] >= 1
            finally:
                admin_conn.execute("GRANT INSERT ON gateway.mcp_requests TO mcp_gateway_ingest")
            wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests", 2, timeout=20)
            await asyncio.to_thread(wait_for, lambda: ready(gateway).status_code == 200, 15, "/ready to recover")
    assert query(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == [(2,)]
