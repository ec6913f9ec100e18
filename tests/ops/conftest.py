"""Fixtures for the operator-experience tests: a real gateway with the sample tools mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_proc import GatewayProcess, running_gateway
from tests.pg import TestDatabase


@pytest.fixture
def gateway(database: TestDatabase, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(database, tmp_path / "gw", args=("serve", "--tools", "tests.sample_tools:mcp")) as gw:
        yield gw
