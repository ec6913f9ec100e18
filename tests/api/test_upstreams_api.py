"""GET /api/upstreams against real upstreams: a stdio server that answers and a URL nobody listens on."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_proc import GatewayProcess, free_port, make_jwt, running_gateway
from tests.pg import DatabaseFactory
from tests.upstreams.helpers import SERVER


@pytest.fixture(scope="module")
def gateway(db_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("upstreams")
    config = work / "gateway.toml"
    config.write_text(f"""
[[upstreams]]
name = "local"
command = "{sys.executable}"
args = ["{SERVER}", "stdio"]
timeout = 10
health_interval = 1

[[upstreams]]
name = "gone"
url = "http://127.0.0.1:{free_port()}/mcp"
timeout = 2
retry_seconds = 0.5
health_interval = 1
""")
    database = db_factory.create()
    try:
        with running_gateway(database, work / "gw", MCP_GATEWAY_CONFIG=str(config)) as gw:
            yield gw
    finally:
        db_factory.drop(database)


def _get(gateway: GatewayProcess, role: str) -> httpx.Response:
    token = make_jwt("ops", "acme", role=role)
    return httpx.get(gateway.base_url + "/api/upstreams", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_up_down_last_error_and_tools(gateway: GatewayProcess, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        body = _get(gateway, "admin").json()
        states = {u["name"]: u for u in body["upstreams"]}
        if states["local"]["status"] == "up" and states["gone"]["status"] == "down":
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    local, gone = states["local"], states["gone"]
    assert "local_forecast" in local["tools"] and local["tool_count"] == len(local["tools"])
    assert local["last_ok"] and local["last_error"] is None
    assert gone["tools"] == [] and gone["last_error"] and gone["last_error_at"] and "\n" not in gone["last_error"]
    assert gone["target"].startswith("http://127.0.0.1:")
    assert {u["name"] for u in _get(gateway, "auditor").json()["upstreams"]} == {"local", "gone"}
    member = _get(gateway, "member")
    assert member.status_code == 403 and "tenant admins and auditors" in member.json()["detail"]
