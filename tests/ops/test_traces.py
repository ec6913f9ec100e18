"""FastMCP's OpenTelemetry spans: kept when a tracer provider records them, not built when none does.

Without a provider (the other gateway tests, and tests/upstreams/test_direct_calls.py, which also checks a
client's trace context still reaches an upstream), the gateway sets FastMCP to `propagation_only`. Here a
user's tools module sets a provider when it is imported, before the gateway serves: FastMCP's spans stay on.
"""

from __future__ import annotations

from pathlib import Path

from fastmcp import Client

from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase


async def test_a_tracer_provider_set_by_the_users_code_gets_fastmcps_spans(
        database: TestDatabase, tmp_path: Path) -> None:
    args = ("serve", "--tools", "tests.sample_tools_traced:mcp")
    with running_gateway(database, tmp_path, args=args) as gateway:
        async with Client(gateway.mcp_url, auth=make_jwt("tia", "acme")) as client:
            opened = (await client.call_tool("spans", {})).data
        assert "tools/call spans" in opened, opened
        assert "builds no spans" not in gateway.log()
