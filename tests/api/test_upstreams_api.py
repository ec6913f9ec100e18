"""GET /api/upstreams against real upstreams: a stdio server that answers and a URL nobody listens on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.helpers.upstreams import UP_AND_DOWN, write_up_and_down_config
from tests.pg import DatabaseFactory


@pytest.fixture(scope="module")
def gateway(db_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("upstreams")
    config = write_up_and_down_config(work / "gateway.toml")
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
        if {name: state["status"] for name, state in states.items()} == UP_AND_DOWN:
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
