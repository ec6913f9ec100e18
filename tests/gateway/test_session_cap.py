"""The per-principal session cap over real HTTP: one member cannot hold every protocol session.

Abuse first: a member opens sessions up to the cap; the next `initialize` is 429 with a JSON-RPC error,
while other members, other tenants and sessionless (2026-07-28) traffic are unaffected; a session that
ends (DELETE, the SDK's idle timeout, a reaped idle one, a closed SSE stream) makes room again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastmcp import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from auth import Principal
from gateway.mcp.session_cap import SessionCap
from tests.gateway.conftest import wait_rows
from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import poll

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "cap-test", "version": "1"}}}


def _gateway(database: TestDatabase, tmp_path: Path, **env: str) -> Any:
    return running_gateway(database, tmp_path / "gw", args=("serve", "--tools", "tests.sample_tools:mcp"), **env)


@pytest.fixture
def capped(database: TestDatabase, tmp_path: Path) -> Iterator[GatewayProcess]:
    with _gateway(database, tmp_path, MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL="3",
                  MCP_GATEWAY_SESSION_REAP_AFTER="3600") as gw:
        yield gw


def _auth(token: str) -> dict[str, str]:
    return {**ACCEPT, "Authorization": f"Bearer {token}"}


async def _initialize(http: httpx.AsyncClient, token: str) -> httpx.Response:
    response = await http.post("/mcp", json=INIT, headers=_auth(token))
    if response.status_code == 200:
        await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers={**_auth(token), "Mcp-Session-Id": response.headers["mcp-session-id"]})
    return response


async def _open(http: httpx.AsyncClient, token: str) -> str:
    response = await _initialize(http, token)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


async def _ping(http: httpx.AsyncClient, token: str, session_id: str) -> int:
    response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 7, "method": "ping"},
                               headers={**_auth(token), "Mcp-Session-Id": session_id})
    return response.status_code


def _assert_too_many(response: httpx.Response, open_now: int, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32000
    assert body["error"]["data"] == {"error": "too_many_sessions", "limit": limit, "open": open_now,
                                     "retry_after_seconds": int(response.headers["retry-after"])}
    assert "Reuse an open session" in body["error"]["message"] and "DELETE" in body["error"]["message"]


async def test_a_member_at_the_cap_is_refused_and_nobody_else_is(capped: GatewayProcess) -> None:
    mia = make_jwt("mia", "acme")
    async with httpx.AsyncClient(base_url=capped.base_url, timeout=15) as http:
        sessions = [await _open(http, mia) for _ in range(3)]
        _assert_too_many(await _initialize(http, mia), 3, 3)
        # A second token of the same principal is the same principal.
        _assert_too_many(await _initialize(http, make_jwt("mia", "acme", ttl=600)), 3, 3)
        # The refusal reaches an MCP client as a JSON-RPC error naming the remedy.
        with pytest.raises(Exception, match="Too many open sessions"):
            async with Client(capped.mcp_url, auth=mia, mode="legacy"):
                pass
        # Others are not affected: another member, the same user id in another tenant, an admin.
        for other in (make_jwt("otto", "acme"), make_jwt("mia", "globex"), make_jwt("ada", "acme", "admin")):
            await _open(http, other)
        # Sessionless 2026-07-28 requests open no session and are not capped.
        async with Client(capped.mcp_url, auth=mia) as modern:
            assert (await modern.call_tool("echo", {"text": "still here"})).data == "still here"
        # The open sessions keep working; a DELETE makes room for exactly one more.
        assert all([await _ping(http, mia, s) == 200 for s in sessions])
        deleted = await http.delete("/mcp", headers={**_auth(mia), "Mcp-Session-Id": sessions[0]})
        assert deleted.status_code == 200
        assert await _ping(http, mia, sessions[0]) == 404
        await _open(http, mia)
        _assert_too_many(await _initialize(http, mia), 3, 3)
        # Someone else's DELETE of mia's session id is a 404 and frees nothing.
        forged = await http.delete("/mcp", headers={**_auth(make_jwt("otto", "acme")), "Mcp-Session-Id": sessions[1]})
        assert forged.status_code == 404
        _assert_too_many(await _initialize(http, mia), 3, 3)


async def test_legacy_sse_connections_count_and_a_closed_stream_makes_room(capped: GatewayProcess) -> None:
    mia = make_jwt("mia", "acme")
    async with httpx.AsyncClient(base_url=capped.base_url, timeout=15) as http:
        await _open(http, mia)
        async with _sse(http, mia), _sse(http, mia):
            _assert_too_many(await _initialize(http, mia), 3, 3)
            refused = await http.get("/sse", headers=_auth(mia))
            _assert_too_many(refused, 3, 3)

        async def admitted() -> bool:
            response = await _initialize(http, mia)
            return response.status_code == 200

        await poll(admitted, timeout=10, interval=0.1, what="a closed SSE stream to free its slot")


async def _post_sse(http: httpx.AsyncClient, token: str, session_id: str) -> int:
    response = await http.post(f"/messages/?session_id={session_id}", headers=_auth(token),
                               json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return response.status_code


@asynccontextmanager
async def _sse(http: httpx.AsyncClient, token: str) -> AsyncIterator[str]:
    async with http.stream("GET", "/sse", headers={"Authorization": f"Bearer {token}"}) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("data:") and "session_id=" in line:
                yield line.split("session_id=")[1].strip()
                return
        raise AssertionError("no endpoint event")


async def test_idle_sessions_of_a_capped_member_are_reaped_longest_idle_first(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    with _gateway(database, tmp_path, MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL="2",
                  MCP_GATEWAY_SESSION_REAP_AFTER="1") as gw:
        mia = make_jwt("mia", "acme")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=15) as http:
            oldest, newer = await _open(http, mia), await _open(http, mia)
            call = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                 "params": {"name": "echo", "arguments": {"text": "x"}}},
                                   headers={**_auth(mia), "Mcp-Session-Id": oldest})
            assert call.status_code == 200
            # Neither is idle for a second yet: refused, told when one will be.
            _assert_too_many(await _initialize(http, mia), 2, 2)
            await asyncio.sleep(1.2)
            assert await _ping(http, mia, newer) == 200  # `newer` was just used: `oldest` is the longest idle
            third = await _open(http, mia)
            assert await _ping(http, mia, oldest) == 404  # reaped: the client must start a new session
            assert await _ping(http, mia, newer) == 200 and await _ping(http, mia, third) == 200
        # The reaped session's analytics session ended as a timeout.
        rows = wait_rows(admin_conn, "SELECT status, disconnect_reason FROM gateway.mcp_sessions"
                         " WHERE mcp_session_id = %s AND status = 'disconnected'", 1, oldest)
        assert rows == [("disconnected", "timeout")]

        # A legacy SSE connection idle past the threshold is reaped too: its stream (its session) ends.
        sid = make_jwt("sid", "acme")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=15) as http, \
                _sse(http, sid) as first_sse, _sse(http, sid) as second_sse:
            await asyncio.sleep(1.2)
            assert await _post_sse(http, sid, second_sse) == 202  # used: `first_sse` is the longest idle
            await _open(http, sid)
            assert await _post_sse(http, sid, first_sse) == 404
            assert await _post_sse(http, sid, second_sse) == 202
            _assert_too_many(await _initialize(http, sid), 2, 2)  # `second_sse` was just used


async def test_sessions_ended_by_the_sdk_idle_timeout_stop_counting(database: TestDatabase, tmp_path: Path) -> None:
    with _gateway(database, tmp_path, MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL="2",
                  MCP_GATEWAY_SESSION_REAP_AFTER="3600", MCP_GATEWAY_SESSION_IDLE_TIMEOUT="1") as gw:
        mia = make_jwt("mia", "acme")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=15) as http:
            first = await _open(http, mia)
            await _open(http, mia)
            _assert_too_many(await _initialize(http, mia), 2, 2)
            started = time.monotonic()

            async def admitted() -> bool:
                return (await _initialize(http, mia)).status_code == 200

            await poll(admitted, timeout=10, interval=0.2, what="idle sessions to expire")
            assert time.monotonic() - started >= 0.5
            assert await _ping(http, mia, first) == 404


def test_ended_sessions_are_forgotten_without_the_sdk_table() -> None:
    """Without the SDK's table (fallback), a session counts until idle for the idle timeout, then its
    entry goes: nothing is kept for principals that never come back."""
    now = [0.0]
    cap = SessionCap(limit=2, reap_after=1000, idle_timeout=30, clock=lambda: now[0])
    principals = [Principal(user_id=f"u{i}", tenant_id="t", role="member", token_kind="jwt_hs")  # type: ignore[arg-type]
                  for i in range(50)]
    for p in principals:
        for n in range(2):
            assert cap.admit(p).admitted
            cap.opened(p, f"{p.user_id}-{n}", "mcp")
        assert not cap.admit(p).admitted
    assert len(cap) == 100
    state = cap.begin(principals[0].key, "u0-0")  # a request in flight holds its session open
    now[0] = 100.0
    assert cap.count(principals[1].key) == 0 and cap.admit(principals[1]).admitted
    cap.opened(principals[1], None, "mcp")  # that opening failed: nothing counted
    assert cap.count(principals[1].key) == 0
    now[0] = 200.0  # past the sweep interval: every ended session is dropped at the next admission
    assert cap.admit(principals[2]).admitted
    cap.opened(principals[2], "new", "mcp")
    assert len(cap) == 2 and cap.count(principals[0].key) == 1  # the in-flight one, and the new one
    cap.end(principals[0].key, "u0-0", state, gone=True)
    assert len(cap) == 1


OPS = st.lists(st.tuples(st.sampled_from(["open", "fail", "request", "delete", "expire", "wait"]),
                         st.integers(0, 3), st.integers(0, 5), st.floats(0, 90)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_no_principal_ever_holds_more_than_the_cap_and_ended_sessions_are_forgotten(
        ops: list[tuple[str, int, int, float]]) -> None:
    """Any interleaving of opens (some failing), requests, DELETEs, SDK-side ends and time: the count a
    principal is admitted against never exceeds the cap, nobody's sessions are reaped for someone else,
    and once everything has ended and a sweep ran, nothing is remembered."""
    now = [0.0]
    sdk: dict[str, object] = {}  # stands in for the SDK manager's session table

    class Holder:
        class session_manager:  # the shape of FastMCP's ASGI app
            _server_instances = sdk

    reaped: list[tuple[str, str]] = []
    cap = SessionCap(limit=3, reap_after=30, idle_timeout=60, clock=lambda: now[0],
                     on_reaped=lambda p, kind, sid: reaped.append((p.key, sid)))
    cap._holder = Holder
    owners: dict[str, str] = {}
    people = [Principal(user_id=f"u{i}", tenant_id="t", role="member", token_kind="jwt_hs")  # type: ignore[arg-type]
              for i in range(4)]
    serial = 0
    for op, who, which, seconds in ops:
        principal = people[who]
        mine = sorted(s for s, o in owners.items() if o == principal.key and s in sdk)
        if op in ("open", "fail"):
            admission = cap.admit(principal)
            if admission.admitted:
                if admission.victim is not None:
                    victim_id = admission.victim[0]
                    assert owners[victim_id] == principal.key  # only one's own sessions are reaped
                    sdk.pop(victim_id, None)
                serial += 1
                new_id = f"s{serial}" if op == "open" else None
                if new_id:
                    sdk[new_id] = object()
                    owners[new_id] = principal.key
                cap.opened(principal, new_id, "mcp")
            assert len([s for s, o in owners.items() if o == principal.key and s in sdk]) <= 3
        elif op == "request" and mine:
            sid = mine[which % len(mine)]
            cap.end(principal.key, sid, cap.begin(principal.key, sid), gone=False)
        elif op == "delete" and mine:
            sid = mine[which % len(mine)]
            sdk.pop(sid)
            cap.end(principal.key, sid, cap.begin(principal.key, sid), gone=True)
        elif op == "expire" and mine:  # idle timeout or a transport failure: only the SDK knows
            sdk.pop(mine[which % len(mine)])
        else:
            now[0] += seconds
        for p in people:
            assert cap.count(p.key) == len([s for s, o in owners.items() if o == p.key and s in sdk])
    sdk.clear()
    now[0] += 120
    cap.admit(people[0])
    cap.opened(people[0], None, "mcp")
    assert len(cap) == 0 and not cap._opening
