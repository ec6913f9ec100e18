"""The fast call path: `tools/call` and `tools/list` answered without the SDK's per-request transport machinery.

A handshake-era request normally travels from the HTTP task through the session's transport, a memory
stream, the session's dispatcher task and back through another stream to the HTTP task; a 2026-07-28
`tools/call` with arguments first runs a whole `tools/list` to find the tool's `Mcp-Param` headers. For
the two requests that make up almost all traffic, this module answers in the HTTP task, with the session's
own connection, and writes the JSON reply the transport would have written. A `tools/call` runs the
gateway's middleware hooks as one chain around FastMCP's own `call_tool` (FastMCP's steps around it taken
as they are); anything less common, and `tools/list`, runs through the SDK's request kernel (`ServerRunner`).

It sits where the SDK's session manager starts its own work: after FastMCP's authentication, the session
cap and session sharing. Anything it does not handle goes to the SDK untouched, with the body replayed:
other methods, notifications, batches, SSE responses, a progress token, an unknown or foreign session,
`Mcp-Param-*` headers, a tool that declares them, or a malformed request (the SDK owns its errors).

A request served here is not in the session dispatcher's table of requests in flight, so a client's
`notifications/cancelled` for it does not stop it (it completes and is answered; in JSON-response mode a
client can only drop the connection to stop waiting). As in the SDK's JSON-response mode, a notification
a tool sends tied to the request has no wire and is dropped.

The private FastMCP and SDK names it needs are fenced in `fastmcp_private/`.
"""
from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import pydantic_core
from fastmcp.exceptions import DisabledError, FastMCPError, NotFoundError
from fastmcp.server.context import Context
from fastmcp.server.dependencies import bind_request_context
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.middleware.dereference import DereferenceRefsMiddleware
from fastmcp.tools.base import InputRequiredToolResult, ToolResult
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.runner import ServerRunner, aclose_shielded, modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    INVALID_PARAMS,
    PROTOCOL_VERSION_META_KEY,
    CallToolRequestParams,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    JSONRPCResponse,
    RequestId,
    TextContent,
)
from mcp_types import methods as mcp_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

import fastmcp_private
from gateway.asgi import read_body, replaying
from gateway.mcp.access import AccessMiddleware
from gateway.mcp.param_headers import ParamHeaderSchemas
from gateway.mcp.quotas import QuotaMiddleware
from gateway.otel import tracing_configured
from gateway.tracking.middleware import TrackingMiddleware

log = logging.getLogger("mcp_gateway.fastpath")

# What `prepare` hands back: run it with the request's `receive` (the body replayed) and `send`.
Answer = Callable[[Receive, Send], Awaitable[None]]

FAST_METHODS = frozenset({"tools/call", "tools/list"})
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower().encode("latin-1")
# Middleware whose whole part in a tools/call is its `on_call_tool` hook (their on_message and on_request
# hooks pass tools/call through untouched): with only these, a tools/call can run them directly.
DIRECT_MIDDLEWARE = (TrackingMiddleware, QuotaMiddleware, AccessMiddleware, DereferenceRefsMiddleware)


@dataclass
class _Exchange:
    """The request-scoped channel of one JSON reply: as the SDK's JSON-response mode has it, nothing but
    the reply fits, so notifications tied to the request are dropped and server-to-client requests refused."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: ServerMessageMetadata
    _cancel_requested: anyio.Event | None = None

    @property
    def cancel_requested(self) -> anyio.Event:
        # Made on first use: nothing here ever sets it (a JSON reply's request is not cancelled mid-flight
        # on this path), and an anyio Event costs a backend lookup to make.
        if self._cancel_requested is None:
            self._cancel_requested = anyio.Event()
        return self._cancel_requested

    @property
    def can_send_request(self) -> bool:
        return False

    async def send_raw_request(self, method: str, params: Mapping[str, Any] | None,
                               opts: CallOptions | None = None) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        return None

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None


class FastPath:
    """Serves `tools/call` and `tools/list` in JSON-response mode; everything else falls through to the SDK."""

    name = "fast_path"

    def __init__(self, fastmcp: Any, param_headers: ParamHeaderSchemas, *, enabled: bool) -> None:
        self.fastmcp = fastmcp
        self.param_headers = param_headers  # which tools' Mcp-Param headers the SDK must check
        self.enabled = enabled
        self.manager: Any = None
        self.served = 0
        self.fell_back = 0
        # A session's live connection, learnt from the first request the SDK serves on it (its
        # `initialize`); weak, so a session that ends takes its entry with it.
        self._connections: weakref.WeakValueDictionary[str, Connection] = weakref.WeakValueDictionary()
        self._direct: Callable[[MiddlewareContext[Any]], Awaitable[Any]] | None = None
        self.direct = 0  # of `served`: tools/call run without FastMCP's dispatch machinery

    # -- Component -----------------------------------------------------------------------------------

    async def start(self) -> None:
        return None  # attached in the app's lifespan, once the SDK's session manager exists

    async def stop(self) -> None:
        return None

    async def ready(self) -> dict[str, Any]:
        return {"enabled": self.active, "served": self.served, "direct": self.direct, "fell_back": self.fell_back}

    @property
    def active(self) -> bool:
        return self.enabled and self.manager is not None

    def attach(self, http_app: Any) -> None:
        """Once FastMCP's http app has started. Only JSON-response mode has a single reply to write."""
        manager = fastmcp_private.find_session_manager(http_app)
        if not self.enabled or not manager.json_response or fastmcp_private.is_stateless(manager):
            return
        self.manager = manager
        settings = manager.security_settings
        # FastMCP turns the SDK's DNS-rebinding check off (its own guard runs before the SDK): then the SDK's
        # check is the Content-Type test `plain_json_post` makes anyway, and need not run per request.
        self._security: TransportSecurityMiddleware | None = (TransportSecurityMiddleware(settings)
                          if settings is not None and settings.enable_dns_rebinding_protection else None)
        manager.app.middleware.append(self._learn_connection)
        self._direct = self._direct_chain()
        fastmcp_private.wrap_manager(manager, self._wrap)

    def _direct_chain(self) -> Callable[[MiddlewareContext[Any]], Awaitable[Any]] | None:
        """The gateway's tools/call middleware as one call, then FastMCP's own tool execution; None when
        something else takes part in a tools/call (other middleware, an extension, OpenTelemetry tracing,
        whose spans the SDK's path opens), and the SDK's request kernel serves tools/call instead."""
        middleware = list(self.fastmcp.middleware)
        if (any(type(m) not in DIRECT_MIDDLEWARE for m in middleware) or fastmcp_private.has_extensions(self.fastmcp)
                or tracing_configured()):
            return None
        fastmcp = self.fastmcp

        async def execute(context: MiddlewareContext[Any]) -> Any:
            return await fastmcp.call_tool(context.message.name, context.message.arguments or {},
                                           run_middleware=False)

        call: Callable[[MiddlewareContext[Any]], Awaitable[Any]] = execute
        for m in reversed(middleware):
            if type(m).on_call_tool is not Middleware.on_call_tool:
                call = partial(m.on_call_tool, call_next=call)
        return call

    async def _learn_connection(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        connection = fastmcp_private.connection_of(ctx.session)
        if connection is not None and connection.session_id and connection.session_id not in self._connections:
            self._connections[connection.session_id] = connection
        return await call_next(ctx)

    # -- the ASGI hook -----------------------------------------------------------------------------

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                await inner(scope, receive, send)
                return
            await self._post(inner, scope, receive, send)
        return handle

    async def _post(self, inner: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders(scope)
        body = await read_body(receive)
        replay = replaying(body, receive)
        answer = await self.prepare(scope, headers, body)
        if answer is None:
            self.fell_back += 1
            await inner(scope, replay, send)
        else:
            await self.answer(answer, replay, send)

    async def prepare(self, scope: Scope, headers: RequestHeaders, body: bytes) -> Answer | None:
        """How the fast path would answer this POST, or None when the SDK must. Decides only: nothing is
        run, counted or sent until `answer` (so a caller can still do its own bookkeeping, or go elsewhere)."""
        if not self.active or not headers.plain_json_post() or (
                self._security is not None
                and await self._security.validate_request(Request(scope), is_post=True) is not None):
            return None
        message = _request_message(body)
        if message is None:
            return None
        if headers.modern:
            return await self._modern(scope, headers, message)
        return self._handshake(scope, headers, message)

    async def answer(self, answer: Answer, receive: Receive, send: Send) -> None:
        self.served += 1
        await answer(receive, send)

    # -- handshake era: an initialized session of this process -------------------------------------

    def _handshake(self, scope: Scope, headers: RequestHeaders, message: dict[str, Any]) -> Answer | None:
        session_id = headers.session_id
        if session_id is None or _has_modern_envelope(message.get("params")):
            return None  # the SDK refuses an enveloped request on a handshake session
        transport = fastmcp_private.session_transport(self.manager, session_id)
        connection = self._connections.get(session_id)
        if (transport is None or connection is None or transport.is_terminated
                or fastmcp_private.session_expiring(transport)
                or not connection.initialize_accepted
                or not fastmcp_private.is_session_owner(self.manager, session_id, scope)):
            return None  # the SDK answers (404 for a foreign or ended session)
        return partial(self._serve_handshake, scope, session_id, transport, connection, message)

    async def _serve_handshake(self, scope: Scope, session_id: str, transport: Any, connection: Connection,
                               message: dict[str, Any], receive: Receive, send: Send) -> None:
        request_id: RequestId = message["id"]
        request = Request(scope, receive)
        exchange = _Exchange(
            transport=TransportContext(kind="jsonrpc", can_send_request=False), request_id=request_id,
            message_metadata=ServerMessageMetadata(request_context=request, can_send_request=False))
        runner = ServerRunner(self.manager.app, connection, fastmcp_private.lifespan_state(self.manager))
        with fastmcp_private.session_in_use(transport):  # the session's idle countdown pauses, as the SDK's does
            reply: JSONRPCResponse | JSONRPCError
            try:
                result = await self._run(runner, exchange, message)
                reply = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
            except Exception as exc:
                error = handler_exception_to_error_data(exc)
                if error is None:  # as the SDK's dispatcher answers an unmapped handler exception
                    log.exception("handler for %r raised", message["method"])
                    error = ErrorData(code=0, message=str(exc))
                reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
        await _send_json(send, 200, reply.model_dump_json(by_alias=True, exclude_unset=True).encode(),
                         session_id=session_id)

    # -- 2026-07-28: one self-contained request --------------------------------------------------------

    async def _modern(self, scope: Scope, headers: RequestHeaders, message: dict[str, Any]) -> Answer | None:
        if headers.mcp_param or find_duplicated_routing_header(headers.items()) is not None:
            return None
        verdict = classify_inbound_request(message, headers=headers.as_dict())
        if not isinstance(verdict, InboundModernRoute):
            return None  # the SDK writes the rejection
        if message["method"] == "tools/call" and await self.param_headers.declares(message.get("params")):
            return None
        return partial(self._serve_modern, scope, verdict, message)

    async def _serve_modern(self, scope: Scope, verdict: InboundModernRoute, message: dict[str, Any],
                            receive: Receive, send: Send) -> None:
        request_id: RequestId = message["id"]
        request = Request(scope, receive)
        connection = Connection.from_envelope(verdict.protocol_version, verdict.client_info,
                                              verdict.client_capabilities)
        exchange = _Exchange(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
            request_id=request_id, message_metadata=ServerMessageMetadata(request_context=request))
        runner = ServerRunner(self.manager.app, connection, fastmcp_private.lifespan_state(self.manager))
        reply: JSONRPCResponse | JSONRPCError
        try:
            result = await self._run(runner, exchange, message)
            reply = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
        except Exception as exc:
            reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=modern_error_data(exc))
        finally:
            await aclose_shielded(connection)  # as serve_one: the per-request connection's exit stack unwinds
        # Exactly the SDK's `_write`: the table-mapped status, compact json.dumps of the model.
        status = ERROR_CODE_HTTP_STATUS.get(reply.error.code, 200) if isinstance(reply, JSONRPCError) else 200
        body = json.dumps(reply.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
        await _send_json(send, status, body.encode())

    async def _run(self, runner: ServerRunner[Any], exchange: _Exchange, message: dict[str, Any]) -> dict[str, Any]:
        method, params = message["method"], message.get("params")
        if method == "tools/call" and self._direct is not None:
            context = self._direct_context(runner, exchange, params)
            if context is not None:
                self.direct += 1
                return await self._call_directly(runner, context, self._direct)
        return await runner.on_request(exchange, method, params)

    def _direct_context(self, runner: ServerRunner[Any], exchange: _Exchange, params: Any,
                        ) -> ServerRequestContext[Any, Any] | None:
        """The request's context when a direct call answers exactly as the SDK's path would; else None (then
        the SDK's kernel runs it: a malformed request, a version pin or a multi-round-trip continuation)."""
        if not isinstance(params, dict) or not set(params) <= {"name", "arguments", "_meta"}:
            return None
        meta = params.get("_meta")
        if meta is not None and not (isinstance(meta, dict) and all(
                isinstance(k, str) and k.startswith("io.modelcontextprotocol/") for k in meta)):
            return None
        if not runner.connection.initialize_accepted:
            return None
        try:
            mcp_methods.validate_client_request("tools/call", runner.connection.protocol_version, params)
            CallToolRequestParams.model_validate(params, by_name=False)
        except Exception:
            return None
        return fastmcp_private.request_context(runner, exchange, "tools/call", params)

    async def _call_directly(self, runner: ServerRunner[Any], ctx: ServerRequestContext[Any, Any],
                             chain: Callable[[MiddlewareContext[Any]], Awaitable[Any]]) -> dict[str, Any]:
        """FastMCP's `_on_call_tool` and `call_tool` steps, with the gateway's middleware called directly."""
        params = ctx.params or {}
        name, arguments = params["name"], params.get("arguments") or {}
        fastmcp = self.fastmcp
        wire: Any
        with bind_request_context(ctx), fastmcp_private.tool_call_scope(fastmcp):
            try:
                async with Context(fastmcp=fastmcp) as fastmcp_context:
                    result = await chain(MiddlewareContext(
                        message=CallToolRequestParams(name=name, arguments=arguments), source="client",
                        type="request", method="tools/call", fastmcp_context=fastmcp_context))
                    result = await fastmcp_private.rebind_prefab_tool_names(fastmcp, result)
            except (DisabledError, NotFoundError):
                wire = CallToolResult(content=[TextContent(type="text", text=f"Unknown tool: {name!r}")],
                                      is_error=True)
            except FastMCPError as exc:  # masking already happened inside call_tool
                wire = CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
            else:
                if not isinstance(result, ToolResult):
                    wire = result
                elif isinstance(result, InputRequiredToolResult):
                    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                        raise MCPError(code=INVALID_PARAMS, message=(
                            f"Tool {name!r} returned an InputRequiredResult to request client input, but the "
                            "multi-round-trip result type (SEP-2322) only exists at MCP 2026-07-28; this "
                            f"connection negotiated {ctx.protocol_version!r}. Use ctx.elicit() for "
                            "server-initiated input on handshake-era connections."))
                    wire = result.input_required
                else:
                    wire = fastmcp_private.call_tool_wire_result(result)
        return fastmcp_private.wire_result(runner, "tools/call", wire)


# header name -> the RequestHeaders attribute that keeps its first value
_READ_HEADERS = {b"accept": "accept", b"content-type": "content_type", b"authorization": "authorization",
                 b"content-length": "content_length", b"mcp-protocol-version": "protocol_version",
                 b"mcp-session-id": "session_id"}


class RequestHeaders:
    """The few request headers the fast path (and the front door) decide on, read once. The first of a
    repeated header counts, as Starlette's `request.headers.get` (what the SDK reads) has it."""

    __slots__ = ("_items", "_raw", "accept", "authorization", "content_length", "content_type", "mcp_param",
                 "protocol_version", "session_id")

    def __init__(self, scope: Scope) -> None:
        self._raw: list[tuple[bytes, bytes]] = scope["headers"]
        self._items: list[tuple[str, str]] | None = None
        self.accept: str | None = None
        self.content_type: str | None = None
        self.authorization: str | None = None
        self.content_length: str | None = None
        self.protocol_version: str | None = None
        self.session_id: str | None = None
        self.mcp_param = False
        for key, value in self._raw:
            name = _READ_HEADERS.get(key)
            if name is not None:
                if getattr(self, name) is None:
                    setattr(self, name, value.decode("latin-1"))
            elif key.startswith(_PARAM_PREFIX):
                self.mcp_param = True

    @property
    def modern(self) -> bool:
        """As the SDK routes: a version header that is not a handshake version is the 2026-07-28 entry."""
        version = self.protocol_version
        return version is not None and version not in fastmcp_private.HANDSHAKE_PROTOCOL_VERSIONS

    def plain_json_post(self) -> bool:
        """application/json in, application/json accepted: the only shape the fast path answers."""
        media = [part.strip() for part in (self.content_type or "").split(";")[0].split(",")]
        if "application/json" not in media:
            return False
        has_json, _ = check_accept_headers(_AcceptOnly(self.accept or ""))
        return has_json

    def items(self) -> list[tuple[str, str]]:
        """Every header, decoded (once: the 2026-07-28 checks read them twice)."""
        if self._items is None:
            self._items = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]
        return self._items

    def as_dict(self) -> dict[str, str]:
        """As `dict(request.headers)`: the first of repeated headers."""
        folded: dict[str, str] = {}
        for key, value in self.items():
            folded.setdefault(key, value)
        return folded


@dataclass(frozen=True, slots=True)
class _AcceptOnly:
    """What `check_accept_headers` reads from a request."""

    accept: str

    @property
    def headers(self) -> dict[str, str]:
        return {"accept": self.accept}


def _has_modern_envelope(params: Any) -> bool:
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    return isinstance(meta, Mapping) and PROTOCOL_VERSION_META_KEY in meta


def _request_message(body: bytes) -> dict[str, Any] | None:
    """The body as one JSON-RPC request for a fast method, or None (then the SDK parses and answers it)."""
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") not in FAST_METHODS:
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    params = message.get("params")
    if params is not None and not isinstance(params, dict):
        return None
    meta = params.get("_meta") if params else None
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None  # progress needs a stream: the SDK's path
    if set(message) - {"jsonrpc", "id", "method", "params"}:
        return None
    return message


async def _send_json(send: Send, status: int, body: bytes, *, session_id: str | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
