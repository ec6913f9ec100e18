"""Every private SDK name gateway/mcp/sdk_compat.py uses still exists with the shape it relies on.

If this fails after an upgrade of mcp or fastmcp, cross-process session sharing is broken: re-read the
SDK files named in gateway/mcp/sdk_compat.py and adapt that module (and only it).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from fastmcp import FastMCP
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, serve_connection
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from gateway.mcp import sdk_compat


def _params(func: object) -> set[str]:
    return set(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_the_sdk_versions_are_the_ones_the_compat_module_was_read_from() -> None:
    assert version("mcp").startswith("2.3."), "mcp moved: re-check gateway/mcp/sdk_compat.py against the new SDK"
    assert version("fastmcp").startswith("4.1."), "fastmcp moved: re-check gateway/mcp/sdk_compat.py"


def test_private_names_and_signatures() -> None:
    assert {"mcp_session_id", "is_json_response_enabled", "event_store", "security_settings", "retry_interval",
            "idle_timeout"} <= _params(StreamableHTTPServerTransport.__init__)
    for name in ("connect", "terminate", "is_terminated", "handle_request"):
        assert hasattr(StreamableHTTPServerTransport, name), name
    assert {"outbound", "protocol_version", "session_id", "client_params"} <= _params(Connection.__init__)
    assert {"server", "dispatcher", "connection", "lifespan_state"} <= _params(serve_connection)
    assert {"read_stream", "write_stream", "inline_methods"} <= _params(JSONRPCDispatcher.__init__)
    assert {"session_id", "transport"} <= _params(StreamableHTTPSessionManager._discard_session)
    assert hasattr(StreamableHTTPSessionManager, "_handle_request")


@pytest.mark.parametrize("requested", ["2025-06-18", "2025-11-25", "1999-01-01", None])
def test_our_negotiation_matches_the_sdk(requested: str | None) -> None:
    params = {"protocolVersion": requested, "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}
    if requested is None:
        params["protocolVersion"] = "2024-11-05"
    _, negotiated = ServerRunner._negotiate_initialize(params)
    assert sdk_compat.negotiated_version(params) == negotiated


async def test_the_session_manager_is_found_and_wrapped_behind_fastmcps_http_app() -> None:
    app = FastMCP("compat").http_app(path="/mcp", json_response=True)
    async with app.router.lifespan_context(app):
        manager = sdk_compat.find_session_manager(app)
        for name in ("_server_instances", "_session_owners", "_task_group", "_lifespan_state", "max_sessions",
                     "json_response", "event_store", "security_settings", "retry_interval", "session_idle_timeout",
                     "stateless", "app"):
            assert hasattr(manager, name), name
        assert manager._task_group is not None
        assert isinstance(manager.asgi_app, RequestBodyLimitMiddleware)
        seen = []

        def wrap(inner: object) -> object:
            seen.append(inner)
            return inner
        sdk_compat.wrap_manager(manager, wrap)
        assert seen and getattr(seen[0], "__func__", None) is StreamableHTTPSessionManager._handle_request
