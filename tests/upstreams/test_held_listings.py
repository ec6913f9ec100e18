"""An upstream that holds its listings delays nothing else: real gateways (SSE and JSON response mode) in front
of a real upstream whose tools, prompts and resources listings are logged and held for two minutes, within
the gateway's `timeout` for it.

- A 2026-07-28 `tools/call` the SDK serves (every one in SSE-response mode; in JSON mode those the fast path
  hands it) is checked for `Mcp-Param-*` headers without a `tools/list` of its own: before, the SDK listed
  every provider for it, the held upstream included, and the call waited for that listing.
- A client's tools, prompts and resources lists wait for the upstream `list_wait` seconds, not its whole
  `timeout`: before, each waited for the held listing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client

from tests.gateway_proc import GatewayProcess, free_port, make_jwt, running_together, start_gateway
from tests.helpers.database import DatabaseFactory
from tests.helpers.wait import wait_for
from tests.pg import TestDatabase
from tests.upstreams.helpers import upstream

MODERN = "2026-07-28"


def _modern_call(http: httpx.Client, url: str, token: str, tool: str, arguments: dict[str, Any],
                 headers: dict[str, str], status: int = 200) -> Any:
    """One sessionless tools/call; its JSON-RPC answer, from a JSON body or the SSE stream's message."""
    response = http.post(url, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call", "Mcp-Name": tool, **headers,
    }, content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}))
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        return json.loads(next(line[5:] for line in response.text.splitlines() if line.startswith("data:")))
    return response.json()


class Held:
    def __init__(self, listings: Path, sse: GatewayProcess, plain: GatewayProcess) -> None:
        self.listings = listings
        self.sse = sse
        self.plain = plain

    def listed(self, method: str = "tools/list") -> int:
        return self.listings.read_text().splitlines().count(method) if self.listings.exists() else 0


@pytest.fixture(scope="module")
def held(db_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    database = db_factory.create()
    try:
        yield from _held(database, tmp_path_factory.mktemp("held"))
    finally:
        db_factory.drop(database)


def _held(database: TestDatabase, tmp_path: Path) -> Iterator[Held]:
    port = free_port()
    listings = tmp_path / "listings"
    config = tmp_path / "gateway.toml"
    # The upstream holds every listing for two minutes, and the gateway would wait that long for one.
    config.write_text(f'[[upstreams]]\nname = "held"\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = 120\n'
                      'list_wait = 0.5\n')
    args = ("serve", "--config", str(config), "--tools", "tests.fastpath_tools:mcp")
    with upstream("json", port, tmp_path / "up.log", UPSTREAM_LISTINGS=str(listings), UPSTREAM_LIST_DELAY="120"), \
            running_together(
                start_gateway(database, tmp_path / "sse", args=args, wait=False, MCP_GATEWAY_JSON_RESPONSE="false"),
                start_gateway(database, tmp_path / "json", args=args, wait=False)) as (sse, plain):
        state = Held(listings, sse, plain)
        wait_for(lambda: state.listed() >= 2, 20, "each gateway's first listing of the upstream (held there)")
        yield state


def test_calls_the_sdk_serves_neither_list_nor_wait_for_an_upstream(held: Held) -> None:
    before = held.listed()
    token = make_jwt("alice", "acme")
    # SSE mode: the SDK serves every call. JSON mode: a request with a Mcp-Param header goes to the SDK too.
    cases = [(held.sse, {}), (held.sse, {"Mcp-Param-Text": "anything"}), (held.plain, {"Mcp-Param-Text": "anything"})]
    with httpx.Client(timeout=15) as http:  # far less than the held listing
        for gateway, headers in cases:
            for n in range(3):
                answer = _modern_call(http, gateway.mcp_url, token, "echo", {"text": f"hi {n}"}, headers)
                assert answer["result"]["content"][0]["text"] == f"hi {n}", answer
            unknown = _modern_call(http, gateway.mcp_url, token, "no_such_tool", {"text": "x"}, headers)
            assert unknown["result"]["isError"] and "no_such_tool" in unknown["result"]["content"][0]["text"]
            # A tool that declares a routing header is still checked, as the SDK checks it.
            routed = _modern_call(http, gateway.mcp_url, token, "routed", {"region": "eu"},
                                  {"Mcp-Param-Region": "eu"})
            assert routed["result"]["content"][0]["text"] == "eu: ", routed
            refused = _modern_call(http, gateway.mcp_url, token, "routed", {"region": "eu"},
                                   {"Mcp-Param-Region": "us"}, status=400)
            assert "Mcp-Param-Region header does not match" in refused["error"]["message"], refused
    assert held.listed() == before  # no listing for any call


async def test_a_clients_lists_wait_list_wait_for_a_held_upstream_not_its_timeout(held: Held) -> None:
    for gateway in (held.sse, held.plain):
        async with Client(gateway.mcp_url, auth=make_jwt("bob", "acme"), timeout=15) as client:
            # The upstream has never answered a listing: none of its tools; the gateway's own are all there.
            tools = {t.name for t in await client.list_tools()}
            assert {"echo", "routed", "whoami"} <= tools and not any(n.startswith("held_") for n in tools)
            prompts = {p.name for p in await client.list_prompts()}
            assert not any(n.startswith("held_") for n in prompts)
            resources = [str(r.uri) for r in await client.list_resources()]
            assert not any("held" in uri for uri in resources)
    # Each list asked the upstream (the listings are held there, shared by the lists made meanwhile).
    assert held.listed("prompts/list") >= 1 and held.listed("resources/list") >= 1
