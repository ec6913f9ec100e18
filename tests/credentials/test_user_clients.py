"""The per-user client pool against a real bearer-checking upstream: one client per user, bounded, replaced when
the credential changes, closed when evicted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.context import Context

from auth.principal import Principal
from gateway.config import UpstreamConfig
from gateway.credentials.clients import UserBearer, UserClients, fingerprint
from gateway.mcp.upstreams import Upstream, _alive, _leave
from tests.credentials.test_per_user_calls import _start
from tests.gateway_proc import free_port
from tests.upstreams.helpers import poll, stop


async def test_bounded_per_user_clients(tmp_path: Path) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"t-ann": "ann", "t-ben": "ben", "t-cy": "cy", "t-ann-2": "ann"}))
    upstream = _start(port, tokens, tmp_path / "upstream.log")
    url = f"http://127.0.0.1:{port}/mcp"

    def make(auth: UserBearer) -> Client:
        return Client(url, auth=auth, timeout=10)

    pool = UserClients(make, _leave, max_users=2)
    try:
        async def who(key: tuple[str, str], token: str) -> str:
            entry = await pool.get(key, token, _alive)
            async with entry.client:
                return (await entry.client.call_tool("whoami", {})).data["user"]

        assert await who(("t", "ann"), "t-ann") == "ann"
        assert await who(("t", "ben"), "t-ben") == "ben"
        first_ann = pool.current(("t", "ann"))
        assert first_ann is not None
        assert await who(("t", "cy"), "t-cy") == "cy"  # the least recently used (ann) is evicted and closed
        assert len(pool) == 2 and pool.current(("t", "ann")) is None
        await poll(lambda: _closed(first_ann.client), what="evicted client closed")

        ben = pool.current(("t", "ben"))
        assert await who(("t", "ben"), "t-ben") == "ben" and pool.current(("t", "ben")) is ben  # reused
        assert await who(("t", "ann"), "t-ann-2") == "ann"  # a new credential: a new client
        assert repr(pool.current(("t", "ann")).auth) == "UserBearer(***)"  # type: ignore[union-attr]
    finally:
        await pool.close()
        stop(upstream)


async def _closed(client: Client) -> bool:
    return not client.is_connected()


class HeldRefresh:
    """Stands in for the CredentialResolver (its store and authorization server are exercised end to end in
    test_oauth_link.py): the user's token lives in the file the upstream reads, and a refresh waits until the
    test lets it finish, so a second call can be made while the first one's refresh is in flight."""

    link_url = "http://gateway.test/dashboard#connections"

    def __init__(self, tokens: Path) -> None:
        self.tokens = tokens
        self.current = "old-token"
        self.asked: list[bytes | None] = []
        self.refreshed = 0
        self.first_asked, self.second_asked, self.finish = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._one_at_a_time = asyncio.Lock()

    async def token(self, config: object, principal: Principal, subject_token: str | None) -> str:
        return self.current

    async def refresh(self, config: object, principal: Principal, secret: object = None,
                      refused: bytes | None = None) -> None:
        self.asked.append(refused)
        (self.first_asked if len(self.asked) == 1 else self.second_asked).set()
        async with self._one_at_a_time:
            if refused is not None and refused != fingerprint(self.current):
                return  # another call refreshed it meanwhile
            await self.finish.wait()
            self.current = "new-token"
            self.tokens.write_text(json.dumps({"new-token": "alice"}))
            self.refreshed += 1

    async def rejected(self, config: object, principal: Principal) -> None:
        raise AssertionError("a refreshed token must not be reported as rejected")


@pytest.mark.parametrize("answers", ["sse", "json"])
async def test_a_client_refused_while_connecting_is_refreshed_not_reported_as_an_upstream_error(
        tmp_path: Path, answers: str) -> None:
    """Call A meets the expired token on the user's open session, drops that client and refreshes (held open).
    Call B, made meanwhile, still reads the old token, connects a new client with it and is refused during the
    handshake. B must take the refresh path too (and share A's refresh), not fail as `answered error -32603`."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"old-token": "alice"}))
    resolver = HeldRefresh(tokens)
    async with _alice_on_cloud(tmp_path, tokens, answers, resolver) as (_, whoami):
        assert await whoami("before") == {"user": "alice", "tag": "before"}
        tokens.write_text("{}")  # the token expires: the upstream now answers 401 to it

        a = asyncio.create_task(whoami("a"))
        await asyncio.wait_for(resolver.first_asked.wait(), 10)
        b = asyncio.create_task(whoami("b"))
        second = asyncio.create_task(resolver.second_asked.wait())
        await asyncio.wait({b, second}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if b.done():
            b.result()  # the bug: B failed before asking for the refresh; this raises what it saw
        assert second.done(), "the call refused while connecting never asked for a refresh"
        resolver.finish.set()
        assert await a == {"user": "alice", "tag": "a"}
        assert await b == {"user": "alice", "tag": "b"}
        assert resolver.refreshed == 1  # one refresh served both
        assert resolver.asked == [fingerprint("old-token")] * 2  # each named the token it saw refused


@asynccontextmanager
async def _alice_on_cloud(tmp_path: Path, tokens: Path, answers: str, resolver: object,
                          ) -> AsyncIterator[tuple[Upstream, Callable[[str], Coroutine[Any, Any, Any]]]]:
    """A real bearer-checking upstream reading `tokens`, an in-process per_user_oauth Upstream whose
    resolver is `resolver`, and `whoami(tag)` called through it as alice."""
    port = free_port()
    server = _start(port, tokens, tmp_path / "upstream.log", answers)
    up = Upstream(UpstreamConfig(name="cloud", url=f"http://127.0.0.1:{port}/mcp", credentials="per_user_oauth",
                                 oauth={"client_id": "mcp-gateway"}, timeout=10))
    up.resolver = resolver  # type: ignore[assignment]
    alice = Principal(user_id="alice", tenant_id="acme", token_kind="jwt_hs")
    up.principal_of = lambda: alice
    try:
        async with Context(fastmcp=FastMCP("t")) as ctx:
            tool = next(t for t in await up.provider.refresh_tools() if t.name == "whoami")

            async def whoami(tag: str) -> Any:
                return (await tool.run({"tag": tag}, ctx)).structured_content

            yield up, whoami
    finally:
        await up.stop()
        stop(server)


class StaleRead:
    """Stands in for the CredentialResolver: the stored token is `new-token`; a read can be made to return the
    token the store held before (a read that finished just before another call stored a refreshed token)."""

    link_url = "http://gateway.test/dashboard#connections"

    def __init__(self) -> None:
        self.stale_reads = 0
        self.reads = 0
        self.refreshes: list[bytes | None] = []

    async def token(self, config: object, principal: Principal, subject_token: str | None) -> str:
        self.reads += 1
        if self.stale_reads:
            self.stale_reads -= 1
            return "old-token"
        return "new-token"

    async def refresh(self, config: object, principal: Principal, secret: object = None,
                      refused: bytes | None = None) -> None:
        self.refreshes.append(refused)

    async def rejected(self, config: object, principal: Principal) -> None:
        raise AssertionError("the stored token is good: nothing may be reported as rejected")


async def test_a_call_holding_an_older_token_does_not_replace_the_users_fresh_client(tmp_path: Path) -> None:
    """Call B read the user's token just before call A stored a refreshed one and connected with it. B must
    not replace A's good client with a connection made with the older token (which the upstream refuses:
    a wasted handshake, a refresh asked for nothing, and a third connection)."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"new-token": "alice"}))  # the older token is refused
    resolver = StaleRead()
    async with _alice_on_cloud(tmp_path, tokens, "json", resolver) as (up, whoami):
        assert await whoami("a") == {"user": "alice", "tag": "a"}
        assert up._users is not None
        fresh = up._users.current(("acme", "alice"))
        assert fresh is not None and fresh.fingerprint == fingerprint("new-token")
        reads = resolver.reads
        resolver.stale_reads = 1
        assert await whoami("b") == {"user": "alice", "tag": "b"}
        assert up._users.current(("acme", "alice")) is fresh and fresh.client.is_connected()
        assert resolver.refreshes == []  # nothing was refused
        assert resolver.reads == reads + 2  # the stale read, and one more
