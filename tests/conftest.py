"""Shared test configuration. The fixtures live in tests/helpers/ (see `pytest_plugins`)."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.helpers.database"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long resilience runs are `slow`: they run with MCP_GATEWAY_FULL_TESTS=1 or `-m slow`."""
    if os.environ.get("MCP_GATEWAY_FULL_TESTS") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with MCP_GATEWAY_FULL_TESTS=1 or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
