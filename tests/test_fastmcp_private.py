"""Every private FastMCP / MCP SDK name the project uses still exists with the shape we rely on.

auth/fastmcp_private.py is the only module that touches them; when an upgrade moves one, this
test names it (and the fence is the one place to fix).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.auth.middleware import RequireAuthMiddleware
from fastmcp.server.providers.proxy import ProxyProvider, ProxyTool
from fastmcp.server.server import default_lifespan

from auth import fastmcp_private as private

REPO = Path(__file__).resolve().parent.parent


def test_fastmcp_server_privates() -> None:
    server = FastMCP("fence")
    assert isinstance(server._additional_http_routes, list)
    assert private.lifespan_of(server) is default_lifespan


def test_require_auth_middleware_responders() -> None:
    error = inspect.signature(RequireAuthMiddleware._send_auth_error)
    assert list(error.parameters)[1:] == ["send", "status_code", "error", "description"]
    assert list(inspect.signature(RequireAuthMiddleware._send_missing_auth).parameters)[1:] == ["send"]


def test_client_privates() -> None:
    assert "force" in inspect.signature(Client._disconnect).parameters
    client = Client(FastMCP("fence"))
    assert hasattr(client, "_session_state")
    assert "session_task" in {f for f in dir(client._session_state)} | set(vars(client._session_state))


def test_proxy_privates() -> None:
    entry = private.ProxyCacheEntry([], 0.0)
    assert entry.items == [] and entry.is_fresh(1e12)
    for hook in private.PROXY_PROVIDER_HOOKS:
        assert callable(getattr(ProxyProvider, hook)), hook

    async def factory() -> Client:  # never called
        raise AssertionError

    provider = ProxyProvider(factory, cache_ttl=1.0)
    for name in private.PROXY_PROVIDER_STATE:
        assert hasattr(provider, name), name
    tool = ProxyTool(client_factory=factory, name="t", description=None, parameters={"type": "object"})
    assert private.proxy_tool_client_factory(tool) is factory


@pytest.mark.parametrize("package", ["auth", "gateway"])
def test_no_private_fastmcp_name_outside_the_fence(package: str) -> None:
    """Outside the fence, no module imports a private name from fastmcp/mcp."""
    found = subprocess.run(
        ["grep", "-rnE", r"from (fastmcp|mcp)[.a-z_]* import .*\b_[A-Za-z]", package, "--include=*.py"],
        cwd=REPO, capture_output=True, text=True, check=False).stdout.splitlines()
    assert [line for line in found if not line.startswith("auth/fastmcp_private.py")] == []


# Private attributes of FastMCP / SDK objects known to tempt (session exit stacks, lifespans, routes...).
KNOWN_PRIVATE_ATTRIBUTES = ("_additional_http_routes", "_send_auth_error", "_send_missing_auth", "_lifespan",
                            "_disconnect", "_session_state", "_client_factory", "_connection", "_tool_manager",
                            "_mcp_server", "_session_manager")


@pytest.mark.parametrize("package", ["auth", "gateway"])
def test_no_known_private_attribute_outside_the_fence(package: str) -> None:
    """`obj._lifespan`, `ctx.session._connection` and the like go through auth/fastmcp_private.py."""
    pattern = r"[]A-Za-z0-9_)]\.(" + "|".join(KNOWN_PRIVATE_ATTRIBUTES) + r")\b"
    found = subprocess.run(["grep", "-rnE", pattern, package, "--include=*.py"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.splitlines()
    if package == "auth":
        assert any(line.startswith("auth/fastmcp_private.py") for line in found)  # the pattern does match
    outside = [line for line in found
               if not line.startswith("auth/fastmcp_private.py") and not re.search(r"\bself\._", line)]
    assert outside == []


def test_fence_imports_cleanly() -> None:
    subprocess.run([sys.executable, "-c", "import auth.fastmcp_private"], check=True, cwd=REPO)
