"""Many concurrent clients, both protocol eras: every call answered, every call recorded, per user."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.resilience.conftest import Load, poll, rows, scalar

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")


async def _load_is_recorded(database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection,
                            clients: int, calls: int, deadline: float) -> None:
    tokens = [make_jwt(f"u{n}", f"t{n % 4}") for n in range(clients)]
    with running_gateway(database, tmp_path, args=TOOLS) as gateway:
        async with Load([gateway.base_url], tokens, clients=clients, calls=calls, deadline=deadline) as load:
            await load.wait()
        assert not load.errors, load.summary()
        assert load.ok == clients * calls
        total = clients * calls
        await poll(lambda: scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") >= total, 60,
                   f"{total} rows")
    assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_requests") == total
    per_user = dict(rows(admin_conn, "SELECT user_id, count(*) FROM gateway.mcp_requests GROUP BY user_id"))
    assert per_user == load.per_user()
    assert rows(admin_conn, "SELECT DISTINCT status FROM gateway.mcp_requests") == [("success",)]
    # One analytics session per handshake-era protocol session, one per sessionless user/client.
    assert scalar(admin_conn, "SELECT count(*) FROM gateway.mcp_sessions") == clients
    assert scalar(admin_conn, "SELECT count(*) FROM (SELECT user_id FROM gateway.mcp_requests"
                              " GROUP BY user_id HAVING count(DISTINCT session_id) > 1) x") == 0


async def test_load_10_clients_x_50_calls(database: TestDatabase, tmp_path: Path,
                                          admin_conn: psycopg.Connection) -> None:
    await _load_is_recorded(database, tmp_path, admin_conn, clients=10, calls=50, deadline=60)


@pytest.mark.slow
async def test_load_50_clients_x_200_calls(database: TestDatabase, tmp_path: Path,
                                           admin_conn: psycopg.Connection) -> None:
    await _load_is_recorded(database, tmp_path, admin_conn, clients=50, calls=200, deadline=300)
