from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.gateway_proc import GatewayProcess, running_gateway
from tests.helpers import wait_for as wait_for  # re-exported: tests import it from here
from tests.pg import TestDatabase


@pytest.fixture
def gateway(database: TestDatabase, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(database, tmp_path / "gw", args=("serve", "--tools", "tests.sample_tools:mcp")) as gw:
        yield gw


def query(admin_conn: psycopg.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return admin_conn.execute(sql, params).fetchall()


def wait_rows(admin_conn: psycopg.Connection, sql: str, expected: int, *params: Any,
              timeout: float = 15.0) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []

    def enough() -> bool:
        nonlocal rows
        rows = query(admin_conn, sql, *params)
        return len(rows) >= expected

    wait_for(enough, timeout, f"{expected} rows of: {sql}")
    return rows
