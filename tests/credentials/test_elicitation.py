"""A client that declares URL-mode elicitation is asked to open the link URL; the tool error still follows.

The request can only reach the client over an SSE response (MCP_GATEWAY_JSON_RESPONSE=false, handshake era);
with JSON responses (the default) there is no channel for it, and the call answers with the tool error alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from tests.credentials.test_per_user_calls import KEY_NEW, _config, _start
from tests.gateway_proc import free_port, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import stop


@pytest.mark.parametrize("json_response", ["false", "true"])
async def test_url_elicitation_names_the_link(database: TestDatabase, tmp_path: Path, json_response: str) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({}))
    upstream = _start(port, tokens, tmp_path / "upstream.log")
    asked: list[Any] = []

    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        asked.append(params)
        return {}

    try:
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(_config(tmp_path / "g.toml",
                                                                                                 port))),
                             MCP_GATEWAY_CREDENTIALS_KEY=KEY_NEW, MCP_GATEWAY_JSON_RESPONSE=json_response) as gw:
            async with Client(gw.mcp_url, auth=make_jwt("alice", "acme"), mode="legacy",
                              elicitation_handler=handler) as client:
                result = await client.call_tool("gh_whoami", {}, raise_on_error=False)
            assert result.is_error and "/dashboard#connections" in result.content[0].text
            if json_response == "true":
                assert asked == []
                return
            assert len(asked) == 1, asked
            assert asked[0].mode == "url" and asked[0].url == f"{gw.base_url}/dashboard#connections"
    finally:
        stop(upstream)
