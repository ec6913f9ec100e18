"""A 2026-07-28 `tools/call` the SDK serves (every one in SSE-response mode; in JSON mode those the fast path
hands it) is checked for `Mcp-Param-*` headers without a `tools/list` of its own: before, the SDK listed every
provider for it, each upstream over the network, and the call waited for the slowest listing. Real gateways
(SSE and JSON mode) and a real upstream whose listings are counted and held."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.gateway_proc import free_port, make_jwt, running_together, start_gateway
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


def _listed(listings: Path) -> int:
    return listings.read_text().count("\n") if listings.exists() else 0


def test_calls_the_sdk_serves_neither_list_nor_wait_for_an_upstream(database: TestDatabase, tmp_path: Path) -> None:
    port = free_port()
    listings = tmp_path / "listings"
    config = tmp_path / "gateway.toml"
    # The upstream holds every listing for two minutes, and the gateway waits that long for one.
    config.write_text(f'[[upstreams]]\nname = "held"\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = 120\n')
    args = ("serve", "--config", str(config), "--tools", "tests.fastpath_tools:mcp")
    with upstream("json", port, tmp_path / "up.log", UPSTREAM_LISTINGS=str(listings), UPSTREAM_LIST_DELAY="120"), \
            running_together(
                start_gateway(database, tmp_path / "sse", args=args, wait=False, MCP_GATEWAY_JSON_RESPONSE="false"),
                start_gateway(database, tmp_path / "json", args=args, wait=False)) as (sse, plain):
        wait_for(lambda: _listed(listings) >= 2, 20, "each gateway's first listing of the upstream (held there)")
        token = make_jwt("alice", "acme")
        # SSE mode: the SDK serves every call. JSON mode: a request with a Mcp-Param header goes to the SDK too.
        cases = [(sse, {}), (sse, {"Mcp-Param-Text": "anything"}), (plain, {"Mcp-Param-Text": "anything"})]
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
        assert _listed(listings) == 2  # no listing for any call
