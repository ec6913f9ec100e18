"""What a 2026-07-28 `tools/call`'s `Mcp-Param-*` headers are checked against, without a `tools/list` per call.

Before it dispatches a 2026-07-28 `tools/call` with arguments, the SDK checks the request's `Mcp-Param-*`
headers against the called tool's input schema; a server that gives it no way to look a schema up has it
take the schema from a whole `tools/list` run for that call. For the gateway that listed every provider —
each upstream over the network — and the call waited for the slowest: in SSE-response mode every such call
(and in JSON mode those the fast path hands the SDK) waited on every upstream's listing, and a hung upstream
held them all until its listing timed out, whichever tool they called.

A schema that marks no argument `x-mcp-header` checks nothing, whatever the headers say, and that is nearly
every tool. So before the SDK sees such a request the called tool is looked up, as the fast path looks it
up (the answer kept a few seconds): a tool that declares no header, or a name no tool has, is "nothing to
check", with no listing; for a tool that does declare one, the SDK's own listing walk runs as before, as this
caller, except that upstreams answer it from their last listing instead of listing again
(`schema_lookup_only`). The SDK asks through its `get_tool_input_schema` hook, which reads the answer kept
for the request.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from mcp.shared.inbound import MCP_PARAM_HEADER_PREFIX, InboundModernRoute, classify_inbound_request
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

import fastmcp_private
from gateway.asgi import read_body, replaying

_SCHEMA_TTL = 5.0  # seconds a tool's "declares Mcp-Param headers" answer is reused
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower().encode("latin-1")

# The request being served: (tool name, the schema its headers are checked against, None: nothing to check).
_prepared: ContextVar[tuple[str, Any] | None] = ContextVar("mcp_gateway_param_schema", default=None)
_walking: ContextVar[bool] = ContextVar("mcp_gateway_schema_walk", default=False)


def schema_lookup_only() -> bool:
    """Whether the `tools/list` being served is only a walk for one tool's schema, not a client's listing."""
    return _walking.get()


@contextmanager
def schema_walk() -> Iterator[None]:
    """Listings made inside are walks for one tool's schema (`schema_lookup_only`)."""
    token = _walking.set(True)
    try:
        yield
    finally:
        _walking.reset(token)


class ParamHeaderSchemas:
    """Answers the SDK's schema lookup for 2026-07-28 `tools/call`s; tells the fast path which tools declare
    `Mcp-Param-*` headers (the SDK then checks them)."""

    def __init__(self, fastmcp: Any) -> None:
        self.fastmcp = fastmcp
        self.manager: Any = None
        self._declares: dict[str, tuple[float, bool]] = {}

    def attach(self, http_app: Any) -> None:
        """Once FastMCP's http app has started, before anything else wraps its session manager: what the
        fast path does not serve reaches the SDK through here."""
        self.manager = fastmcp_private.find_session_manager(http_app)
        fastmcp_private.set_tool_input_schema(self.manager, self._schema)
        fastmcp_private.wrap_manager(self.manager, self._wrap)

    async def declares(self, params: Any) -> bool:
        """Whether the tool a `tools/call`'s params name marks an argument `x-mcp-header` (True also when the
        lookup fails: the SDK then decides)."""
        name = params.get("name") if isinstance(params, Mapping) else None
        if not isinstance(name, str):
            return False
        now = time.monotonic()
        cached = self._declares.get(name)
        if cached is not None and now - cached[0] < _SCHEMA_TTL:
            return cached[1]
        try:
            tool = await self.fastmcp.get_tool(name)
        except Exception:
            return True  # could not tell: let the SDK decide
        declares = tool is not None and "x-mcp-header" in json.dumps(tool.parameters)
        if len(self._declares) > 10_000:
            self._declares.clear()  # made-up names cannot grow this without bound
        self._declares[name] = (now, declares)
        return declares

    def _schema(self, name: str) -> Any:
        prepared = _prepared.get()
        if prepared is None or prepared[0] != name:
            # Every request the SDK checks passes `_wrap` first; were one not to, the SDK logs this and checks
            # nothing, as it does when its own listing fails.
            raise LookupError(f"no input schema prepared for tool {name!r}")
        return prepared[1]

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" or not _modern(scope):
                await inner(scope, receive, send)
                return
            body = await read_body(receive)
            token = _prepared.set(await self._prepare(scope, body))
            try:
                await inner(scope, replaying(body, receive), send)
            finally:
                _prepared.reset(token)
        return handle

    async def _prepare(self, scope: Scope, body: bytes) -> tuple[str, Any] | None:
        """What the SDK will check this request's headers against; None when it checks nothing (not a
        `tools/call`, no arguments and no `Mcp-Param-*` header, or a request it refuses before checking)."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return None
        params = message.get("params") if isinstance(message, dict) and message.get("method") == "tools/call" else None
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        name, arguments = params["name"], params.get("arguments")
        if arguments is not None and not isinstance(arguments, Mapping):
            return None
        if not arguments and not any(key.startswith(_PARAM_PREFIX) for key, _ in scope["headers"]):
            return None
        if not await self.declares(params):
            return name, None
        request = Request(scope)
        verdict = classify_inbound_request(message, headers=dict(request.headers))
        if not isinstance(verdict, InboundModernRoute):
            return None
        with schema_walk():
            return name, await fastmcp_private.listed_input_schema(self.manager, request, message.get("id"), verdict,
                                                                   name)


def _modern(scope: Scope) -> bool:
    """As the SDK's session manager routes: a version header that is not a handshake version."""
    version = next((v for k, v in scope["headers"] if k == b"mcp-protocol-version"), None)
    return version is not None and version.decode("latin-1") not in fastmcp_private.HANDSHAKE_PROTOCOL_VERSIONS
