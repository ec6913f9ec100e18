"""The HTTP surface of a real `mcp-gateway serve`: challenges, metadata, health and readiness."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import psycopg

from tests.gateway.conftest import wait_rows
from tests.gateway_proc import REPO, GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase

_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _with_oversized_token(http: httpx.Client, gateway: GatewayProcess) -> httpx.Response:
    """A tools/list with a 3 MB bearer token: over any sane limit, under h11's 4 MB event size."""
    return http.post(gateway.mcp_url, json=_LIST, headers=_HEADERS | {"Authorization": "Bearer " + "a" * 3_000_000})


def test_oversized_and_missing_tokens_get_401_with_a_resolvable_challenge(gateway: GatewayProcess) -> None:
    with httpx.Client(timeout=30) as http:
        missing = http.post(gateway.mcp_url, json=_LIST, headers=_HEADERS)
        huge = _with_oversized_token(http, gateway)
        for path in ("/mcp", "/sse"):
            challenge = http.get(gateway.base_url + path).headers["www-authenticate"]
            metadata_url = re.search(r'resource_metadata="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
            assert http.get(metadata_url).status_code == 200, metadata_url
    assert missing.status_code == 401 and "invalid_token" not in missing.headers["www-authenticate"]
    assert huge.status_code == 401 and 'error="invalid_token"' in huge.headers["www-authenticate"]


def test_http_is_parsed_by_h11_even_where_httptools_is_installed(database: TestDatabase, tmp_path: Path) -> None:
    """uvicorn takes httptools whenever it can import it, and the limits the gateway sets are h11's. Here an
    `httptools` that refuses to be imported is on the path: the gateway starts, and an oversized token still
    gets its 401 (h11's 4 MB event limit, not a parser without one)."""
    poisoned = tmp_path / "site" / "httptools"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text('raise RuntimeError("the gateway parses HTTP with h11")\n')
    path = f"{REPO}{os.pathsep}{poisoned.parent}"
    with running_gateway(database, tmp_path / "gw", PYTHONPATH=path) as gateway, httpx.Client(timeout=30) as http:
        huge = _with_oversized_token(http, gateway)
    assert huge.status_code == 401 and 'error="invalid_token"' in huge.headers["www-authenticate"]


def test_protected_resource_metadata(gateway: GatewayProcess) -> None:
    with httpx.Client(timeout=10) as http:
        root = http.get(gateway.base_url + "/.well-known/oauth-protected-resource").json()
        mcp = http.get(gateway.base_url + "/.well-known/oauth-protected-resource/mcp").json()
    assert root["resource"].rstrip("/") == gateway.base_url
    assert mcp["resource"] == gateway.mcp_url and mcp["authorization_servers"]


def test_health_and_ready(gateway: GatewayProcess) -> None:
    with httpx.Client(timeout=10) as http:
        assert http.get(gateway.base_url + "/health").json()["status"] == "ok"
        ready = http.get(gateway.base_url + "/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] == "up" and ready.json()["writer"]["backlog"] == 0


def test_health_check_tool(gateway: GatewayProcess) -> None:
    import asyncio

    from fastmcp import Client

    async def call() -> dict:
        async with Client(gateway.mcp_url, auth=make_jwt("hc", "acme")) as client:
            return (await client.call_tool("health_check", {})).structured_content

    assert asyncio.run(call())["database"] == "up"


async def test_serve_without_admin_credentials(database: TestDatabase, tmp_path: Path,
                                              admin_conn: psycopg.Connection) -> None:
    """`serve --no-migrate`: the process holds only the runtime login, and still serves and records."""
    from fastmcp import Client

    with running_gateway(database, tmp_path, args=("serve", "--no-migrate", "--tools", "tests.sample_tools:mcp"),
                         MCP_GATEWAY_DATABASE_URL=database.urls.app) as gw:
        async with Client(gw.mcp_url, auth=make_jwt("lean", "acme")) as client:
            assert (await client.call_tool("echo", {"text": "no admin"})).data == "no admin"
        wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests WHERE user_id = 'lean'", 1)
