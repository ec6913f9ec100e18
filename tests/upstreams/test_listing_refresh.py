"""A proxied call's tool lookup when the upstream's last listing has gone stale: one listing goes out for the
calls that find it so (not one per call), a tool in the last listing is called without waiting for it, a tool
missing from it waits for the new one; clients listing at the same time share one listing; and with per-user
credentials one user's failing listing is never another user's answer. Real upstream servers; the listings
are real requests, counted and held at the client."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from auth.principal import Principal
from fastmcp_private import proxy_cache_entry
from gateway.config import UpstreamConfig
from gateway.credentials.errors import CredentialRejected
from gateway.mcp.param_headers import schema_walk
from gateway.mcp.upstreams import UnlistedUpstreamTool, Upstream, UpstreamProvider
from tests.credentials.test_per_user_calls import _start
from tests.gateway_proc import free_port
from tests.upstreams.helpers import stop, upstream

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("test_caller", default="")


class Listings:
    """Every `tools/list` an upstream client sends, by caller; a caller's can be held until released."""

    def __init__(self) -> None:
        self.by: list[str] = []
        self.held: dict[str, asyncio.Event] = {}
        self.sent: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)  # a caller's has gone out

    def hold(self, caller: str) -> asyncio.Event:
        self.held[caller] = asyncio.Event()
        return self.held[caller]


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listings]:
    seen = Listings()
    real = Client.list_tools

    async def counted(self: Client, *args: Any, **kwargs: Any) -> Any:
        caller = _caller.get()
        seen.by.append(caller)
        seen.sent[caller].set()
        if caller in seen.held:
            await seen.held[caller].wait()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Client, "list_tools", counted)
    yield seen


@pytest.fixture
async def weather(tmp_path: Path) -> AsyncIterator[Upstream]:
    """An in-process Upstream (shared credential) fronting a real JSON-answering upstream server."""
    port = free_port()
    with upstream("json", port, tmp_path / "up.log"):
        up = Upstream(UpstreamConfig(name="w", url=f"http://127.0.0.1:{port}/mcp", timeout=10))
        try:
            yield up
        finally:
            await up.stop()


def _expire(provider: UpstreamProvider, tools: Any) -> None:
    """The provider's last listing is `tools`, made an hour ago (its TTL is seconds)."""
    provider._tools_cache = proxy_cache_entry(tools, time.monotonic() - 3600)


async def test_a_burst_of_calls_on_a_stale_listing_lists_once_and_none_waits_for_it(
        weather: Upstream, listings: Listings) -> None:
    _expire(weather.provider, await weather.provider.refresh_tools())
    listings.by.clear()
    release = listings.hold("")
    # 20 calls at once while the only listing is held: each is answered from the last listing.
    found = await asyncio.wait_for(asyncio.gather(*(weather.provider.get_tool("forecast") for _ in range(20))), 10)
    assert [t.name if t else None for t in found] == ["forecast"] * 20
    assert listings.by == [""]  # one listing for the burst, not one per call
    release.set()
    # A tool the last listing lacks waits for the listing in flight (still one), then is looked up in it.
    assert await asyncio.wait_for(weather.provider.get_tool("no-such-tool"), 10) is None
    assert listings.by == [""]
    assert weather.health.state == "up"
    # The new listing is fresh: the calls after it list nothing.
    await asyncio.gather(*(weather.provider.get_tool("forecast") for _ in range(5)))
    assert listings.by == [""]


async def test_a_tool_missing_from_the_stale_listing_is_found_in_the_new_one(
        weather: Upstream, listings: Listings) -> None:
    listed = await weather.provider.refresh_tools()
    _expire(weather.provider, [t for t in listed if t.name != "forecast"])  # added upstream since
    listings.by.clear()
    tool = await asyncio.wait_for(weather.provider.get_tool("forecast"), 10)
    assert tool is not None and tool.name == "forecast"
    assert listings.by == [""]


async def test_a_listing_made_only_to_find_a_schema_answers_from_the_last_listing(
        weather: Upstream, listings: Listings) -> None:
    """The SDK's walk for the schema a call's Mcp-Param headers are checked against (gateway/mcp/param_headers.py)
    never waits on the upstream: the last listing answers it, and a stale one is listed again behind it."""
    listed = await weather.provider.refresh_tools()
    expected = sorted(t.name for t in listed)
    listings.by.clear()
    with schema_walk():  # fresh: answered from it, nothing listed
        assert sorted(t.name for t in await weather.provider.list_tools()) == expected
    assert listings.by == []
    _expire(weather.provider, listed)
    release = listings.hold("")
    with schema_walk():  # stale, the new listing held: still answered at once, and one listing went out
        answers = await asyncio.wait_for(asyncio.gather(*(weather.provider.list_tools() for _ in range(5))), 10)
    assert [sorted(t.name for t in answer) for answer in answers] == [expected] * 5
    await asyncio.wait_for(listings.sent[""].wait(), 10)
    assert listings.by == [""]
    release.set()
    await asyncio.wait_for(weather.provider.shared_refresh(), 10)
    assert weather.provider._tools_cache is not None and weather.provider._tools_cache.is_fresh(60)


@pytest.fixture
async def slow_to_list(tmp_path: Path) -> AsyncIterator[Upstream]:
    """As `weather`, with a client's list waiting for it a fifth of a second at most."""
    port = free_port()
    with upstream("json", port, tmp_path / "up.log"):
        up = Upstream(UpstreamConfig(name="w", url=f"http://127.0.0.1:{port}/mcp", timeout=10, list_wait=0.2))
        try:
            yield up
        finally:
            await up.stop()


async def test_a_client_list_waits_list_wait_then_has_the_last_listing_while_the_listing_goes_on(
        slow_to_list: Upstream, listings: Listings) -> None:
    provider = slow_to_list.provider
    expected = sorted(t.name for t in await provider.refresh_tools())
    listings.by.clear()
    release = listings.hold("")
    # Up, listing held: each list has the last listing after list_wait, and they share the one held listing.
    for _ in range(3):
        assert sorted(t.name for t in await asyncio.wait_for(provider.list_tools(), 5)) == expected
    assert listings.by == [""]
    # Once seen down (and past retry_seconds), a held listing leaves its tools out instead.
    slow_to_list.health.state, slow_to_list.health.last_failure_mono = "down", time.monotonic() - 3600
    assert await asyncio.wait_for(provider.list_tools(), 5) == []
    assert listings.by == [""]
    release.set()  # the listing comes back: the upstream is up again, and listed in full
    assert sorted(t.name for t in await asyncio.wait_for(provider.shared_refresh(), 5)) == expected
    assert slow_to_list.health.state == "up"
    assert sorted(t.name for t in await asyncio.wait_for(provider.list_tools(), 5)) == expected


async def test_a_prompt_or_resource_lookup_waits_for_the_listing_a_clients_list_does_not(
        slow_to_list: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's prompts or resources list answers after list_wait without the upstream's (it keeps no last
    listing of those); a `prompts/get` or `resources/read` of one of them still waits for the listing, as it did."""
    gate = asyncio.Event()
    for method in ("list_prompts", "list_resources"):
        real = getattr(Client, method)

        async def held(self: Client, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            await gate.wait()
            return await _real(self, *args, **kwargs)

        monkeypatch.setattr(Client, method, held)
    provider = slow_to_list.provider
    await provider.refresh_tools()  # seen up
    assert await asyncio.wait_for(provider.list_prompts(), 5) == []
    assert await asyncio.wait_for(provider.list_resources(), 5) == []
    lookups = [asyncio.create_task(provider.get_prompt("ask_weather")),
               asyncio.create_task(provider.get_resource("data://cities"))]
    _, pending = await asyncio.wait(lookups, timeout=1.0)  # five times list_wait
    assert len(pending) == 2
    gate.set()
    prompt, resource = await asyncio.wait_for(asyncio.gather(*lookups), 10)
    assert prompt is not None and prompt.name == "ask_weather"
    assert resource is not None and str(resource.uri) == "data://cities"


async def test_clients_listing_at_the_same_time_share_one_listing(weather: Upstream, listings: Listings) -> None:
    expected = sorted(t.name for t in await weather.provider.refresh_tools())
    listings.by.clear()
    release = listings.hold("")
    lists = [asyncio.create_task(weather.provider.list_tools()) for _ in range(10)]
    await asyncio.wait_for(listings.sent[""].wait(), 10)  # the one listing is out, held: the ten wait on it
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*lists), 10)
    assert [sorted(t.name for t in answer) for answer in answers] == [expected] * 10
    assert listings.by == [""]
    # Listed afresh for each request that comes after it.
    assert sorted(t.name for t in await weather.provider.list_tools()) == expected
    assert listings.by == ["", ""]


async def test_stopping_cancels_a_listing_in_flight(weather: Upstream, listings: Listings) -> None:
    _expire(weather.provider, await weather.provider.refresh_tools())
    listings.hold("")
    assert await weather.provider.get_tool("forecast") is not None  # starts the listing, which stays held
    await asyncio.wait_for(listings.sent[""].wait(), 10)
    [listing] = [t for t in asyncio.all_tasks() if t.get_name() == "mcp-gateway-upstream-w-tools-listing"]
    await asyncio.wait_for(weather.stop(), 10)
    assert listing.cancelled()


class Tokens:
    """Stands in for the CredentialResolver: each user's stored token (a user's read can be held until released);
    a refused one is reported here."""

    link_url = "http://gateway.test/dashboard#connections"

    def __init__(self, stored: dict[str, str]) -> None:
        self.stored = stored
        self.rejected_for: list[str] = []
        self.read: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.held: dict[str, asyncio.Event] = {}

    async def token(self, config: object, principal: Principal, subject_token: str | None) -> str:
        self.read[principal.user_id].set()
        if principal.user_id in self.held:
            await self.held[principal.user_id].wait()
        return self.stored[principal.user_id]

    async def rejected(self, config: object, principal: Principal) -> None:
        self.rejected_for.append(principal.user_id)


async def test_one_users_failing_listing_is_not_another_users_answer(tmp_path: Path, listings: Listings) -> None:
    """Per-user credentials: ann's token is refused, ben's is good. While ann's listing is in flight (held, then
    refused), ben's call for a tool the stale listing lacks makes its own listing and finds the tool; ann's
    failure reaches neither ben nor the cache."""
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"t-ben": "ben"}))  # the upstream knows ben's token only
    server = _start(port, tokens, tmp_path / "upstream.log", "json")
    up = Upstream(UpstreamConfig(name="cloud", url=f"http://127.0.0.1:{port}/mcp", credentials="per_user_token",
                                 timeout=10))
    resolver = Tokens({"ann": "t-ann", "ben": "t-ben"})
    up.resolver = resolver  # type: ignore[assignment]
    up.principal_of = lambda: Principal(user_id=_caller.get(), tenant_id="acme", token_kind="jwt_hs")
    try:
        _caller.set("ben")
        listed = await up.provider.refresh_tools()
        assert [t.name for t in listed] == ["whoami"]
        _expire(up.provider, [])  # stale, and without the tool (as if listed before it existed)
        listings.by.clear()

        resolver.held["ann"] = release_ann = asyncio.Event()

        async def lookup(user: str) -> Any:
            _caller.set(user)  # this task's own context
            return await up.provider.get_tool("whoami")

        ann = asyncio.create_task(lookup("ann"))
        await asyncio.wait_for(resolver.read["ann"].wait(), 10)  # ann's listing is under way, held
        ben = await asyncio.wait_for(lookup("ben"), 10)
        assert ben is not None and ben.name == "whoami"
        assert listings.by == ["ben"]  # ann's has not reached the upstream
        release_ann.set()
        assert await asyncio.wait_for(ann, 10) is not None  # found in ben's listing; her own was refused
        assert resolver.rejected_for == ["ann"]
        assert [t.name for t in up.provider.last_listing()] == ["whoami"]
    finally:
        await up.stop()
        stop(server)


async def test_a_refused_credential_is_still_reported_to_its_own_user(tmp_path: Path, listings: Listings) -> None:
    """ann alone, her token refused, calling a tool the stale listing lacks: her lookup waits for her own
    listing, which is refused and reported as before (the tool is not found; nothing raised at lookup)."""
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({}))
    server = _start(port, tokens, tmp_path / "upstream.log", "json")
    up = Upstream(UpstreamConfig(name="cloud", url=f"http://127.0.0.1:{port}/mcp", credentials="per_user_token",
                                 timeout=10))
    resolver = Tokens({"ann": "t-ann"})
    up.resolver = resolver  # type: ignore[assignment]
    up.principal_of = lambda: Principal(user_id="ann", tenant_id="acme", token_kind="jwt_hs")
    try:
        with pytest.raises(CredentialRejected):
            await up.provider.refresh_tools()
        resolver.rejected_for.clear()
        _expire(up.provider, [])
        tool = await asyncio.wait_for(up.provider.get_tool("whoami"), 10)
        # Never listed for anyone: the call is let through to the upstream, which tells ann to link again.
        assert isinstance(tool, UnlistedUpstreamTool)
        assert resolver.rejected_for == ["ann"]
    finally:
        await up.stop()
        stop(server)
