"""Budgets under parallel load, over real HTTP in both protocol eras, on one replica and on two.

Every call costs exactly $1 (no token prices) and the budget is $3: a budget is refused once spend plus
the prices held by calls in flight reaches it, so exactly 3 of 20 parallel calls run on one replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastmcp import Client
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import query, wait_rows
from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase

CONFIG = """
[pricing]
call_price = 1.0
input_price_per_mtok = 0
output_price_per_mtok = 0

[quotas]
refresh_seconds = 0.3

[quotas.roles.member]
calls_per_minute = 60000
burst = 1000
daily_budget = 3.0
"""
PARALLEL = 20
BUDGET_CALLS = 3  # $3 at $1 a call


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return path


def _serve(database: TestDatabase, data_dir: Path, config: Path) -> Any:
    return running_gateway(database, data_dir, args=(
        "serve", "--config", str(config), "--tools", "tests.access.admin_tools:mcp"))


@pytest.fixture
def gateway(database: TestDatabase, tmp_path: Path, config: Path) -> Iterator[GatewayProcess]:
    with _serve(database, tmp_path / "gw", config) as gw:
        yield gw


async def _parallel_naps(url: str, token: str, mode: str, count: int = PARALLEL) -> list[bool]:
    """`count` overlapping calls on one client; True for each that ran."""
    async with Client(url, auth=token, mode=mode, timeout=60) as client:
        results = await asyncio.gather(*[client.call_tool("nap", {"seconds": 0.5}, raise_on_error=False)
                                         for _ in range(count)])
    for result in results:
        if result.is_error:
            assert result.structured_content["error"] == "budget_exceeded", result
    return [not r.is_error for r in results]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_parallel_calls_cannot_overrun_a_budget(
        gateway: GatewayProcess, admin_conn: psycopg.Connection, mode: str) -> None:
    user = f"par-{mode}"
    served = await _parallel_naps(gateway.mcp_url, make_jwt(user, "acme"), mode)
    assert sum(served) == BUDGET_CALLS, served
    rows = wait_rows(admin_conn, "SELECT status, estimated_cost FROM gateway.mcp_requests WHERE user_id = %s",
                     PARALLEL, user)
    assert len(rows) == PARALLEL  # every call is one row, refused ones too
    assert sorted(r[0] for r in rows) == ["denied"] * (PARALLEL - BUDGET_CALLS) + ["success"] * BUDGET_CALLS
    assert sum(r[1] for r in rows) == BUDGET_CALLS  # $3 spent of $3: no overshoot
    # Another user of the same tenant has a budget of their own.
    assert sum(await _parallel_naps(gateway.mcp_url, make_jwt(f"{user}-2", "acme"), mode, 5)) == BUDGET_CALLS


async def test_two_replicas_overshoot_at_most_one_budget_each_then_agree(
        database: TestDatabase, tmp_path: Path, config: Path, gateway: GatewayProcess,
        admin_conn: psycopg.Connection) -> None:
    """Reservations are per replica: started together, each replica may spend the whole budget once
    before the other's spend reaches it through the database; after one refresh both refuse."""
    token = make_jwt("rex", "acme")
    with _serve(database, tmp_path / "gw2", config) as replica:
        first, second = await asyncio.gather(_parallel_naps(gateway.mcp_url, token, "legacy"),
                                             _parallel_naps(replica.mcp_url, token, "auto"))
        assert sum(first) <= BUDGET_CALLS and sum(second) <= BUDGET_CALLS
        assert BUDGET_CALLS <= sum(first) + sum(second) <= 2 * BUDGET_CALLS
        wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests WHERE user_id = 'rex'", 2 * PARALLEL)
        await asyncio.sleep(1.0)  # > refresh_seconds + flush interval: each replica has read the other's spend
        for url in (gateway.mcp_url, replica.mcp_url):
            assert sum(await _parallel_naps(url, token, "auto", 3)) == 0
    spent = query(admin_conn, "SELECT sum(estimated_cost) FROM gateway.mcp_requests WHERE user_id = 'rex'")[0][0]
    assert BUDGET_CALLS <= spent <= 2 * BUDGET_CALLS


async def test_prompts_and_resources_spend_the_budget_and_are_refused_over_it(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("pia", "acme"), mode="legacy") as client:
        # Under budget: served, recorded with their method, and they cost like any call.
        assert (await client.read_resource("docs://readme"))[0].text == "read me first"
        assert (await client.get_prompt("greet", {"name": "Pia"})).messages[0].content.text == "Hello Pia, welcome."
        assert (await client.call_tool("echo", {"text": "x"})).data == "x"
        # $3 spent: every governed method is refused now, with the budget's facts in the JSON-RPC error.
        for call in (client.read_resource("docs://readme"), client.get_prompt("greet", {"name": "Pia"})):
            with pytest.raises(MCPError) as refused:
                await call
            assert refused.value.code == -32029
            data = refused.value.data
            assert data["error"] == "budget_exceeded" and data["limit"] == "user_daily_budget"
            assert data["current"] == 3.0 and data["limit_value"] == 3.0 and data["retry_after_seconds"] > 0
            assert refused.value.message.startswith("Daily budget exceeded (user_daily_budget): the user has spent"
                                                    " $3.0000 of $3.0000 today (UTC).")
        assert (await client.call_tool("echo", {"text": "y"}, raise_on_error=False)).is_error
        # Listing is not a call: still answered.
        assert {p.name for p in await client.list_prompts()} >= {"greet"}
    rows = wait_rows(admin_conn, "SELECT method, tool_name, status, estimated_cost, error_message"
                     " FROM gateway.mcp_requests WHERE user_id = 'pia' ORDER BY \"timestamp\"", 6)
    assert [(r[0], r[1], r[2], float(r[3])) for r in rows] == [
        ("resources/read", "docs://readme", "success", 1.0),
        ("prompts/get", "greet", "success", 1.0),
        ("tools/call", "echo", "success", 1.0),
        ("resources/read", "docs://readme", "denied", 0.0),
        ("prompts/get", "greet", "denied", 0.0),
        ("tools/call", "echo", "denied", 0.0)]
    assert rows[3][4] == "user_daily_budget exceeded: user spent $3.0000 of $3.0000 today (UTC)"
