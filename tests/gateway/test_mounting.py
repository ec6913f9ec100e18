"""`--tools`: plain servers are served from the gateway's own call path; others are mounted whole."""

from __future__ import annotations

from pathlib import Path

import psycopg
from fastmcp import Client, FastMCP

from gateway.mcp.server import has_nothing_to_mount
from tests import sample_tools, sample_tools_lifespan
from tests.gateway.conftest import wait_rows
from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase


def test_only_servers_with_nothing_of_their_own_are_flattened() -> None:
    assert has_nothing_to_mount(sample_tools.mcp)
    assert has_nothing_to_mount(FastMCP("empty"))
    assert not has_nothing_to_mount(sample_tools_lifespan.mcp)      # its own lifespan
    assert not has_nothing_to_mount(sample_tools_lifespan.stamped)  # its own middleware
    parent = FastMCP("parent")
    parent.mount(FastMCP("child"))
    assert not has_nothing_to_mount(parent)                         # providers of its own


async def test_a_mounted_server_keeps_its_lifespan_and_middleware(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    args = ("serve", "--tools", "tests.sample_tools_lifespan:mcp", "--tools", "tests.sample_tools_lifespan:stamped",
            "--tools", "tests.sample_tools:mcp")
    with running_gateway(database, tmp_path, args=args) as gateway:
        async with Client(gateway.mcp_url, auth=make_jwt("mo", "acme")) as client:
            assert (await client.call_tool("greet", {})).data == "hello from the lifespan"
            assert (await client.call_tool("plain", {"text": "x"})).content[0].text == "x (stamped)"
            assert (await client.call_tool("echo", {"text": "flat"})).data == "flat"
        rows = wait_rows(admin_conn, "SELECT tool_name FROM gateway.mcp_requests", 3)
    assert sorted(r[0] for r in rows) == ["echo", "greet", "plain"]
