"""A gateway configured closed: /metrics behind a token, a Host allow-list, an extra allowed Origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase

METRICS_TOKEN = "metrics-token-Zq8 with spaces and ünïcode"  # compared exactly as configured


@pytest.fixture
def closed_gateway(database: TestDatabase, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(database, tmp_path / "gw", args=("serve", "--tools", "tests.sample_tools:mcp"),
                         MCP_GATEWAY_METRICS_TOKEN=METRICS_TOKEN,
                         MCP_GATEWAY_ALLOWED_HOSTS="127.0.0.1,gateway.example",
                         MCP_GATEWAY_ALLOWED_ORIGINS="https://app.example") as gw:
        yield gw


async def test_closed_gateway(closed_gateway: GatewayProcess) -> None:
    gw = closed_gateway
    token = make_jwt("alice", "acme")
    async with Client(gw.mcp_url, auth=token, mode="legacy") as client:  # a normal client is unaffected
        assert (await client.call_tool("echo", {"text": "hi"})).content

    with httpx.Client(base_url=gw.base_url, timeout=10) as http:
        # /metrics: only with the exact token.
        tries: list[dict[bytes, bytes]] = [{}, {b"Authorization": b"Bearer wrong"},
                                           {b"Authorization": METRICS_TOKEN.encode()},
                                           {b"Authorization": ("Bearer " + METRICS_TOKEN + "x").encode()},
                                           {b"Authorization": ("Bearer " + METRICS_TOKEN.upper()).encode()}]
        for headers in tries:
            r = http.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), headers
            assert METRICS_TOKEN not in r.text
        ok = http.get("/metrics", headers={b"Authorization": ("Bearer " + METRICS_TOKEN).encode()})
        assert ok.status_code == 200 and "mcp_gateway_tool_calls_total" in ok.text

        # Host allow-list: every path, 400 for any other name (DNS rebinding arrives with the attacker's name).
        for path in ("/health", "/mcp", "/api/mcp/sessions", "/dashboard"):
            assert http.get(path, headers={"Host": "evil.example"}).status_code == 400, path
            assert http.get(path, headers={"Host": f"127.0.0.1.evil.example:{gw.port}"}).status_code == 400
        assert http.get("/health", headers={"Host": "gateway.example"}).status_code == 200
        assert http.get("/health", headers={"Host": "GATEWAY.example:443"}).status_code == 200

        # Origins: the configured one and the gateway's own pass, others do not.
        auth = {"Authorization": f"Bearer {make_jwt('carol', 'acme', 'admin')}"}
        for origin, status in (("https://app.example", 200), (f"http://localhost:{gw.port}", 200),
                               ("https://evil.example", 403), ("http://app.example", 403)):
            r = http.post("/api/sql", json={"sql": "SELECT 1"}, headers=auth | {"Origin": origin})
            assert r.status_code == status, (origin, r.text)

    log = gw.log()
    assert METRICS_TOKEN not in log and "metrics-token-Zq8" not in log
