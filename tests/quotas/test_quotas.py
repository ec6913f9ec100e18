"""Rate limits and budgets over real gateway processes: exceed, read the error, see it reset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastmcp import Client

from tests.gateway.conftest import query, wait_rows
from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import poll

# Every call costs exactly $0.01 (no token prices), so budgets count calls.
CONFIG = """
[pricing]
call_price = 0.01
input_price_per_mtok = 0
output_price_per_mtok = 0

[quotas]
refresh_seconds = 0.3

[quotas.roles.member]
calls_per_minute = 60
burst = 3

[quotas.roles.admin]
calls_per_minute = 6000

[quotas.tenants.slowco.roles.member]
calls_per_minute = 1
burst = 1

[quotas.tenants.budgetco.roles.member]
calls_per_minute = 6000
daily_budget = 0.03

[quotas.tenants.teamco]
tenant_daily_budget = 0.05

[quotas.tenants.teamco.roles.member]
calls_per_minute = 6000
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def gateway(database: TestDatabase, tmp_path: Path, config: Path) -> Iterator[GatewayProcess]:
    with running_gateway(database, tmp_path / "gw", args=(
            "serve", "--config", str(config), "--tools", "tests.access.admin_tools:mcp")) as gw:
        yield gw


async def test_rate_limit_and_tenant_budget_refuse_with_actionable_errors(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    await _rate_limit_refuses_then_resets(gateway, admin_conn)
    await _tenant_budget_counts_every_user_of_the_tenant(gateway, admin_conn)


async def _rate_limit_refuses_then_resets(gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("rita", "acme")) as client:
        # The burst of 3 goes through at once; then one call per second (a slow machine may refill one).
        accepted = 0
        for i in range(20):
            refused = await client.call_tool("echo", {"text": str(i)}, raise_on_error=False)
            if refused.is_error:
                break
            accepted += 1
        refused_at = time.monotonic()
        assert refused.is_error and accepted >= 3
        text = refused.content[0].text
        assert text.startswith(f"Rate limit exceeded (calls_per_minute, per user): {accepted} calls in the last"
                               " minute, limit 60 per minute (burst 3). Retry in "), text
        data: dict[str, Any] = refused.structured_content or {}
        assert data["error"] == "rate_limited" and data["limit"] == "calls_per_minute" and data["scope"] == "user"
        assert data["current"] == accepted and data["limit_value"] == 60 and data["burst"] == 3
        assert 0 < data["retry_after_seconds"] <= 1.0
        assert f"retry_after_seconds={data['retry_after_seconds']}" in text
        # Limits are checked before access: a hidden tool is refused like any other, not revealed.
        async with Client(gateway.mcp_url, auth=make_jwt("sam", "slowco")) as slow:
            assert (await slow.call_tool("echo", {"text": "one"})).data == "one"  # the only token for a minute
            hidden = await slow.call_tool("purge", {"days": 1}, raise_on_error=False)
            missing = await slow.call_tool("pxrge", {"days": 1}, raise_on_error=False)
            timing = {"retry_after_seconds", "message"}  # seconds tick on between the two calls
            assert {k: v for k, v in hidden.structured_content.items() if k not in timing} == \
                {k: v for k, v in missing.structured_content.items() if k not in timing}
            assert hidden.structured_content["error"] == "rate_limited"
        # Another user is not affected.
        async with Client(gateway.mcp_url, auth=make_jwt("otto", "acme")) as other:
            assert (await other.call_tool("echo", {"text": "fine"})).data == "fine"

        async def allowed() -> bool:
            result = await client.call_tool("echo", {"text": "later"}, raise_on_error=False)
            return not result.is_error

        await poll(allowed, timeout=5, interval=0.1, what="a rate token")
        assert time.monotonic() - refused_at >= data["retry_after_seconds"] - 0.2
    rows = wait_rows(admin_conn, "SELECT status, error_message FROM gateway.mcp_requests"
                     " WHERE user_id = 'rita' AND status = 'denied'", 1)
    assert rows[0][1].startswith(f"calls_per_minute exceeded: user made {accepted} calls in the last minute,"
                                 " limit 60/min")


def _budget_refusal(result: Any, limit: str, scope: str, current: float, limit_value: float) -> None:
    assert result.is_error
    data = result.structured_content
    assert data["error"] == "budget_exceeded" and data["limit"] == limit and data["scope"] == scope, data
    assert data["current"] == pytest.approx(current) and data["limit_value"] == pytest.approx(limit_value)
    assert data["unit"] == "USD"
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert datetime.fromisoformat(data["resets_at"]) == midnight
    assert abs(data["retry_after_seconds"] - (midnight - now).total_seconds()) < 30
    text = result.content[0].text
    assert text.startswith(f"Daily budget exceeded ({limit}): the {scope} has spent ${current:.4f} of"
                           f" ${limit_value:.4f} today (UTC). It resets at {data['resets_at']}"), text
    assert f"retry_after_seconds={data['retry_after_seconds']}" in text


async def test_user_budget_is_shared_through_the_database_and_resets_with_the_day(
        database: TestDatabase, tmp_path: Path, config: Path, gateway: GatewayProcess,
        admin_conn: psycopg.Connection) -> None:
    token = make_jwt("bea", "budgetco")
    async with Client(gateway.mcp_url, auth=token) as client:
        for i in range(3):
            assert (await client.call_tool("echo", {"text": str(i)})).data == str(i)
        refused = await client.call_tool("echo", {"text": "over"}, raise_on_error=False)
        _budget_refusal(refused, "user_daily_budget", "user", 0.03, 0.03)
    # The spend is in the database: a second replica refuses too, from its first refresh.
    wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests WHERE user_id = 'bea'", 4)
    with running_gateway(database, tmp_path / "gw2", args=(
            "serve", "--config", str(config), "--tools", "tests.access.admin_tools:mcp")) as replica:
        async with Client(replica.mcp_url, auth=token) as client:
            refused = await client.call_tool("echo", {"text": "elsewhere"}, raise_on_error=False)
            # 3 calls were written by the first replica; its refused call ran nothing and cost nothing.
            _budget_refusal(refused, "user_daily_budget", "user", 0.03, 0.03)
    rows = query(admin_conn, "SELECT status, error_message FROM gateway.mcp_requests WHERE user_id = 'bea'"
                             " AND status = 'denied'")
    assert len(rows) >= 1 and rows[0][1] == "user_daily_budget exceeded: user spent $0.0300 of $0.0300 today (UTC)"

    # A new UTC day starts from zero: move today's spend to yesterday and the refresh lets calls through.
    wait_rows(admin_conn, "SELECT 1 FROM gateway.mcp_requests WHERE user_id = 'bea'", 5)
    admin_conn.execute("UPDATE gateway.usage_daily SET day = day - 1")
    async with Client(gateway.mcp_url, auth=token) as client:

        async def allowed() -> bool:
            result = await client.call_tool("echo", {"text": "new day"}, raise_on_error=False)
            return not result.is_error

        await poll(allowed, timeout=10, interval=0.2, what="budget reset")


async def _tenant_budget_counts_every_user_of_the_tenant(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("tom", "teamco")) as tom, \
            Client(gateway.mcp_url, auth=make_jwt("tia", "teamco")) as tia, \
            Client(gateway.mcp_url, auth=make_jwt("ann", "acme", "admin")) as outsider:
        for _ in range(3):
            await tom.call_tool("echo", {"text": "t"})
        for _ in range(2):
            await tia.call_tool("echo", {"text": "t"})
        refused = await tia.call_tool("echo", {"text": "t"}, raise_on_error=False)
        _budget_refusal(refused, "tenant_daily_budget", "tenant", 0.05, 0.05)
        refused = await tom.call_tool("add", {"a": 1, "b": 2}, raise_on_error=False)
        assert refused.is_error and refused.structured_content["limit"] == "tenant_daily_budget"
        assert (await outsider.call_tool("echo", {"text": "other tenant"})).data == "other tenant"
    rows = wait_rows(admin_conn, "SELECT user_id, error_message FROM gateway.mcp_requests WHERE status = 'denied'"
                     " AND tenant_id = 'teamco' ORDER BY \"timestamp\"", 2)
    assert rows[0] == ("tia", "tenant_daily_budget exceeded: tenant spent $0.0500 of $0.0500 today (UTC)")
