"""Every private FastMCP / MCP SDK name the project touches, fenced in one module.

FastMCP 4.1 and the MCP SDK 2.3 have no public way to do these few things; each function below says what
it is for and who uses it. tests/test_fastmcp_private.py checks every name (and the signatures relied on)
against the installed packages, and fails when code outside this module uses one, so an upgrade that moves
one fails there, loudly, instead of somewhere deep in a request or a shared session.

A package of its own, importing nothing from auth/ or gateway/: both use it, and auth/ must not import
gateway/. The versions these were read from are pinned in pyproject.toml.

Read from: fastmcp 4.1 (fastmcp/server/server.py, http.py, low_level.py, dependencies.py, extensions.py,
mixins/mcp_operations.py, auth/middleware.py, providers/proxy.py, client/client.py) and mcp 2.3
(mcp/server/streamable_http_manager.py, streamable_http.py, _streamable_http_modern.py, runner.py,
connection.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import weakref
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from fastmcp.server import server as fastmcp_server
from fastmcp.server.context import Context, reset_transport, set_transport
from fastmcp.server.dependencies import _claim_client_tool_call, _client_dispatch, _client_tool_call, _ClientToolCall
from fastmcp.server.extensions import _delegated_extension_scope, _extension_dispatch_scope
from fastmcp.server.http import HostOriginGuardMiddleware, _current_http_request
from fastmcp.server.mixins.mcp_operations import _normalize_call_tool_result
from fastmcp.server.providers.aggregate import AggregateProvider
from fastmcp.server.providers.fastmcp_provider import FastMCPProvider, FastMCPProviderTool
from fastmcp.server.providers.local_provider import LocalProvider
from fastmcp.utilities.async_utils import gather
from mcp.server._streamable_http_modern import _tool_input_schema
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.runner import ServerRunner, _dump_result, _extract_meta, serve_connection
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.inbound import InboundModernRoute
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import InitializeRequestParams
from mcp_types import methods as mcp_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Send

log = logging.getLogger("mcp_gateway.sessions")

__all__ = [
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "PROXY_PROVIDER_HOOKS",
    "PROXY_PROVIDER_STATE",
    "InlineLocalLookups",
    "MountedServer",
    "add_http_routes",
    "adopt",
    "ask_in_place",
    # the fast call path (gateway/mcp/fastpath.py)
    "call_tool_result",
    "call_tool_wire_result",
    "client_session_task",
    "connection_of",
    "discard",
    "find_session_holder",
    "find_session_manager",
    "force_disconnect",
    "forwardable_request_meta",
    "has_extensions",
    "holds",
    "is_session_owner",
    "is_stateless",
    "lifespan_of",
    "lifespan_state",
    "listed_input_schema",
    "mcp_http_client",
    "mount",
    "negotiated_version",
    "open_session_ids",
    "proxy_cache_entry",
    "proxy_tool_backend_name",
    "proxy_tool_client_factory",
    "rebind_prefab_tool_names",
    "request_context",
    "requestor_identity",
    "send_auth_error",
    "send_missing_auth",
    "session_expiring",
    "session_in_use",
    "session_transport",
    # what a 2026-07-28 tools/call's Mcp-Param headers are checked against (gateway/mcp/param_headers.py)
    "set_tool_input_schema",
    "stamp_request",
    "terminate_session",
    "tool_call_scope",
    "use_state_store",
    "wire_result",
    "wrap_manager",
]


# -- FastMCP: server, auth middleware, client, proxy (auth/provider.py, auth/starlette.py, gateway/mcp/) --------

# Protected hooks of fastmcp.server.providers.proxy.ProxyProvider that gateway.mcp.upstreams overrides or reads
# (guarded listings, a last-known tool cache); `_tools_cache` / `_cache_ttl` are instance attributes.
PROXY_PROVIDER_HOOKS = ("_list_tools", "_get_tool", "_list_resources", "_list_resource_templates",
                        "_list_prompts", "_get_prompt", "_get_resource", "_get_resource_template", "_get_client")
PROXY_PROVIDER_STATE = ("_tools_cache", "_cache_ttl")


def add_http_routes(mcp: Any, routes: Sequence[BaseRoute]) -> None:
    """Extra routes served by `mcp.http_app()` (RFC 9728 metadata): FastMCP keeps them in a private list."""
    mcp._additional_http_routes.extend(routes)


async def send_auth_error(middleware: Any, send: Send, status: int, error: str, description: str) -> None:
    """RequireAuthMiddleware's 401 with `error=...`: the exact challenge the MCP endpoint sends."""
    await middleware._send_auth_error(send, status, error, description)


async def send_missing_auth(middleware: Any, send: Send) -> None:
    """RequireAuthMiddleware's 401 for a request without a token."""
    await middleware._send_missing_auth(send)


def lifespan_of(server: Any) -> Any:
    """A FastMCP server's lifespan function (no public accessor in 4.1)."""
    return getattr(server, "_lifespan", None)


async def force_disconnect(client: Any) -> None:
    """Close a fastmcp.Client's session now, whoever still holds it (shutdown of a shared upstream client)."""
    await client._disconnect(force=True)


def client_session_task(client: Any) -> Any:
    """The task that runs a connected fastmcp.Client's session (done: the session died)."""
    return getattr(getattr(client, "_session_state", None), "session_task", None)


def proxy_cache_entry(items: Any, created_at: float) -> Any:
    """A ProxyProvider's `_tools_cache` value (gateway.mcp.upstreams keeps its last listing there). Imported
    here, not at the top: its module loads FastMCP's whole client (some 8 MB and 500 modules), which only a
    gateway with upstreams needs."""
    from fastmcp.server.providers.proxy import _CacheEntry

    return _CacheEntry(items, created_at)


def proxy_tool_backend_name(tool: Any) -> str:
    """The upstream's own name of a ProxyTool (before FastMCP's namespacing renamed it), as ProxyTool.run sends."""
    return str(tool._backend_name or tool.name)


def proxy_tool_client_factory(tool: Any) -> Any:
    """The client factory a ProxyTool was made with (gateway.mcp.upstreams binds it to its Upstream)."""
    return tool._client_factory


# -- FastMCP's tool lookup (gateway/mcp/server.py GatewayFastMCP) ------------------------------------------------
# Read from fastmcp 4.1 (server/providers/aggregate.py AggregateProvider._get_tool / _list_tools, whose results
# server/server.py FastMCP._get_tool takes through `super()`; providers/local_provider/local_provider.py).


class InlineLocalLookups(AggregateProvider):
    """AggregateProvider's tool lookups, asking in-process providers in place instead of in tasks.

    FastMCP asks every provider in an anyio task of its own, so that providers that wait on the network
    (upstream proxies, mounted servers) wait together. A plain LocalProvider is a scan of a dict that never
    waits: its task costs ~40 us a call and buys nothing, and the gateway has two or more of them (its own
    tools, each directly served `--tools` server) on every tools/call. Those are awaited in place, and so is
    a provider that may wait when it is the only one; two or more are still gathered, to wait together.
    Results are combined exactly as AggregateProvider does (provider order,
    failures warned or raised by the same rules, the highest version wins). Placed after FastMCP in a
    subclass's bases, it is what FastMCP's own `_get_tool` reaches through `super()`.
    """

    async def _get_tool(self, name: str, version: Any = None) -> Any:
        results = await _ask_providers(self.providers, lambda p: p.get_tool(name, version))
        return self._get_highest_version_result(results, f"get_tool({name!r})")

    async def _list_tools(self) -> Any:
        results = await _ask_providers(self.providers, lambda p: p.list_tools())
        return self._collect_list_results(results, "list_tools")


async def _ask_providers(providers: Sequence[Any], ask: Any) -> list[Any]:
    """Each provider's answer or exception, in provider order (as `gather(..., return_exceptions=True)`)."""
    results: list[Any] = [None] * len(providers)
    may_wait = [i for i, p in enumerate(providers) if type(p) is not LocalProvider or p.transforms]
    together = may_wait if len(may_wait) > 1 else []  # one provider that may wait has nothing to wait with
    for i, provider in enumerate(providers):
        if i not in together:
            try:
                results[i] = await ask(provider)
            except Exception as exc:
                results[i] = exc
    if together:
        answers = await gather((ask(providers[i]) for i in together), return_exceptions=True)
        for i, answer in zip(together, answers, strict=True):
            results[i] = answer
    return results



class MountedServer(FastMCPProvider):
    """The provider `FastMCP.mount` adds for a server, keeping the wrapper it builds around a tool.

    FastMCPProvider wraps the mounted server's tool in a new FastMCPProviderTool (a pydantic model of a dozen
    fields) on every lookup, so on every call. The wrapper is kept while the server's lookup returns the very
    same tool with the same fields (what the wrapper copies, by reference, is then the same); anything else
    gets a new one, as before. Read from fastmcp 4.1 server/providers/fastmcp_provider.py (`_get_tool`).
    """

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self._wrappers: dict[str, tuple[Any, dict[str, Any], Any]] = {}  # name -> (tool, its fields, wrapper)

    async def _get_tool(self, name: str, version: Any = None) -> Any:
        async with Context(fastmcp=self.server):
            tool = await self.server.get_tool(name, version)
        if tool is None or version is not None:
            return None if tool is None else FastMCPProviderTool.wrap(self.server, tool)
        kept = self._wrappers.get(name)
        if kept is not None and kept[0] is tool and kept[1] == vars(tool):
            return kept[2]
        wrapper = FastMCPProviderTool.wrap(self.server, tool)
        if len(self._wrappers) >= 4096:
            self._wrappers.clear()  # names come from the server's own tools, but stay bounded
        self._wrappers[name] = (tool, dict(vars(tool)), wrapper)
        return wrapper


def mount(parent: Any, server: Any, *, state_store: Any = None) -> None:
    """`parent.mount(server)` (no namespace, no renames), with MountedServer as the provider; the server then
    asks its own in-process providers in place (`ask_in_place`), and keeps its session state in `state_store`
    when given one and it has none of its own yet (`use_state_store`)."""
    if parent._mask_error_details and not server._mask_error_details:
        fastmcp_server.logger.warning(  # what FastMCP.mount says
            f"Parent server {parent.name!r} has mask_error_details=True but mounted server {server.name!r} does "
            f"not. Error details from {server.name!r} may leak through to clients. Set mask_error_details=True "
            "on the child server to prevent this.")
    parent.add_provider(MountedServer(server))
    ask_in_place(server)
    if state_store is not None:
        use_state_store(server, state_store)


def use_state_store(server: Any, store: Any) -> None:
    """`server` keeps its session state in `store`, when it has no store of its own yet (none passed as
    `session_state_store`, and FastMCP's default, made on first use, not made). Read from fastmcp 4.1
    server/server.py (`_state_storage`, and the `_state_store` adapter built from it on first use)."""
    if server._state_storage is None and server._FastMCP__state_store is None:
        server._state_storage = store


_IN_PLACE_CLASSES: dict[type, type] = {}


def ask_in_place(server: Any) -> None:
    """A mounted server's own tool lookups — for the parent's lookup, then again inside its own call_tool —
    ask its in-process providers in place as well, as GatewayFastMCP's do: its class gains InlineLocalLookups
    ahead of AggregateProvider (the same place GatewayFastMCP's bases give it). Its class's name, module and
    methods, and every isinstance check, stay as they were; its answers are FastMCP's (tested)."""
    cls = type(server)
    if isinstance(server, InlineLocalLookups):
        return
    in_place = _IN_PLACE_CLASSES.get(cls)
    if in_place is None:
        in_place = _IN_PLACE_CLASSES[cls] = type(cls.__name__, (cls, InlineLocalLookups), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})
    server.__class__ = in_place


# -- The SDK's Streamable HTTP session manager ------------------------------------------------------------------
# The SDK keeps a handshake-era session in its session manager's memory and offers no public way to list its
# sessions, end one, or add one that was initialized elsewhere. Cross-process session sharing
# (gateway/mcp/session_sharing.py) and the per-principal session cap (gateway/mcp/session_cap.py) do that
# through the functions below and nothing else.


def negotiated_version(init_params: dict[str, Any]) -> str:
    """The protocol version the SDK answers an `initialize` with (runner.ServerRunner._negotiate_initialize)."""
    requested = init_params.get("protocolVersion")
    return str(requested) if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION


def find_session_holder(app: Any) -> Any:
    """FastMCP's StreamableHTTPASGIApp (it has `.session_manager`), behind the /mcp route's auth wrapper; None
    if there is none. FastMCP 4.1 replaces its `session_manager` in every run of the app's lifespan: keep the
    holder, read the manager when needed."""
    for route in getattr(app, "routes", ()):
        endpoint = getattr(route, "app", None)
        for _ in range(4):
            if endpoint is None:
                break
            if hasattr(endpoint, "session_manager"):
                return endpoint
            endpoint = getattr(endpoint, "app", None)
    return None


def find_session_manager(http_app: Any) -> StreamableHTTPSessionManager:
    """The session manager of FastMCP's `http_app()` (created in its lifespan: call once that has started)."""
    manager = getattr(find_session_holder(http_app), "session_manager", None)
    if isinstance(manager, StreamableHTTPSessionManager):
        return manager
    raise RuntimeError("no StreamableHTTPSessionManager behind FastMCP's http app (FastMCP changed?)")


def wrap_manager(manager: StreamableHTTPSessionManager, wrap: Any) -> None:
    """Put `wrap(inner)` between the body-size limit and the manager's own request handling.

    `asgi_app` is what `handle_request` calls; it is `RequestBodyLimitMiddleware(_handle_request, ...)`,
    whose `.app` is the private `_handle_request`.
    """
    limiter = manager.asgi_app
    inner: ASGIApp = limiter.app  # type: ignore[attr-defined]
    limiter.app = wrap(inner)  # type: ignore[attr-defined]


def is_stateless(manager: StreamableHTTPSessionManager) -> bool:
    return bool(manager.stateless)


def holds(manager: StreamableHTTPSessionManager, session_id: str) -> bool:
    return session_id in manager._server_instances


def open_session_ids(manager: Any) -> Collection[str] | None:
    """The ids of the sessions the manager holds open now (a live view), None when its table is not readable.

    The SDK forgets a session on DELETE, on its idle timeout, on a transport failure and at shutdown, with no
    hook for any of them: this table is the only place that knows.
    """
    sessions = getattr(manager, "_server_instances", None)
    return sessions.keys() if isinstance(sessions, dict) else None


async def terminate_session(manager: Any, session_id: str) -> None:
    """End a session the SDK's own way: its server task then discards it, and its id answers 404."""
    sessions = getattr(manager, "_server_instances", None)
    transport = sessions.get(session_id) if isinstance(sessions, dict) else None
    if transport is not None:
        await transport.terminate()


def requestor_identity(scope: MutableMapping[str, Any]) -> str | None:
    """What the SDK compares to bind a session to the credential that created it, as stable text."""
    user = scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        return None
    return json.dumps(dict(authorization_context(user)), sort_keys=True)


# Adoptions under way, per manager: a request for a session another request is adopting waits for it.
_adopting: weakref.WeakKeyDictionary[StreamableHTTPSessionManager, dict[str, anyio.Event]] = (
    weakref.WeakKeyDictionary())


async def adopt(manager: StreamableHTTPSessionManager, session_id: str, scope: MutableMapping[str, Any],
                protocol_version: str, init_params: dict[str, Any], *, idle_timeout: float | None) -> bool:
    """Make `session_id` a session of this process, already initialized from another process's `initialize`.

    True when this call adopted it. False when it was held here already (a request arriving together with
    this one adopted it first: this call waited until that session was connected), when the manager is full
    (its max_sessions) or not running. The caller has checked that the requester is the session's owner;
    the SDK's own owner check then holds for every later request.
    """
    if manager._task_group is None:
        return False
    adopting = _adopting.setdefault(manager, {})
    while (under_way := adopting.get(session_id)) is not None:
        await under_way.wait()
    if session_id in manager._server_instances:
        return False
    if manager.max_sessions is not None and len(manager._server_instances) >= manager.max_sessions:
        return False
    params = InitializeRequestParams.model_validate(init_params, by_name=False)
    transport = StreamableHTTPServerTransport(
        mcp_session_id=session_id,
        is_json_response_enabled=manager.json_response,
        event_store=manager.event_store,
        security_settings=manager.security_settings,
        retry_interval=manager.retry_interval,
        idle_timeout=idle_timeout,
    )
    user = scope.get("user")

    async def run_server(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # As the SDK's own `_serve_opening_request.run_server`, but with a connection that is already
        # initialized (born ready, with the client's initialize params) instead of waiting for the handshake.
        async with transport.connect() as (read_stream, write_stream):
            # Listed only once connected: a request that finds the session can be served at once (listed
            # before, a request arriving meanwhile met a transport with no stream yet: a 500).
            if isinstance(user, AuthenticatedUser):
                manager._session_owners[session_id] = authorization_context(user)
            manager._server_instances[session_id] = transport
            task_status.started()
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"}))
                    connection = Connection(dispatcher, protocol_version=protocol_version, session_id=session_id,
                                            client_params=params)
                    connection.initialized.set()
                    await serve_connection(manager.app, dispatcher, connection=connection,
                                           lifespan_state=manager._lifespan_state)
            except Exception:
                log.exception("adopted session crashed")
            finally:
                await manager._discard_session(session_id, transport)

    done = adopting[session_id] = anyio.Event()
    try:
        await manager._task_group.start(run_server)
    except BaseException:
        await manager._discard_session(session_id, transport)
        raise
    finally:
        adopting.pop(session_id, None)
        done.set()
    return True


async def discard(manager: StreamableHTTPSessionManager, session_id: str) -> None:
    """Forget a local session (ended by a DELETE on another process): its id answers 404 from now on."""
    transport = manager._server_instances.get(session_id)
    if transport is not None:
        await manager._discard_session(session_id, transport)


# -- the fast call path (gateway/mcp/fastpath.py) ---------------------------------------------------


def session_transport(manager: StreamableHTTPSessionManager, session_id: str) -> StreamableHTTPServerTransport | None:
    """The transport of a session this process holds."""
    return manager._server_instances.get(session_id)


def is_session_owner(manager: StreamableHTTPSessionManager, session_id: str, scope: MutableMapping[str, Any]) -> bool:
    """The SDK's own owner check (`_handle_stateful_request`): the credential that created the session."""
    user = scope.get("user")
    requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
    return session_id in manager._server_instances and requestor == manager._session_owners.get(session_id)


def lifespan_state(manager: StreamableHTTPSessionManager) -> Any:
    """The server lifespan's state the manager entered once and hands every request."""
    return manager._lifespan_state


def set_tool_input_schema(manager: StreamableHTTPSessionManager, lookup: Any) -> None:
    """The manager's server answers the schema a 2026-07-28 `tools/call`'s `Mcp-Param-*` headers are checked
    against with `lookup(name)` (synchronous; None: nothing to check) instead of a `tools/list` of its own per
    call. A public constructor argument of the low-level Server (`get_tool_input_schema`), set here because
    FastMCP builds that server without it. Read from mcp 2.3 server/_streamable_http_modern.py
    (`_mcp_param_rejection`)."""
    manager.app.get_tool_input_schema = lookup


async def listed_input_schema(manager: StreamableHTTPSessionManager, request: Request, request_id: Any,
                              verdict: InboundModernRoute, name: str) -> Any:
    """`name`'s input schema as the SDK finds it without a lookup: in the server's own `tools/list` walked as
    this caller (None when not listed, or the listing fails). Read from mcp 2.3
    server/_streamable_http_modern.py (`_tool_input_schema`)."""
    return await _tool_input_schema(manager.app, request, request_id, verdict, manager._lifespan_state, name)


def connection_of(session: Any) -> Connection | None:
    """The per-client `Connection` behind a request's `ServerSession` (FastMCP reads it the same way)."""
    connection = getattr(session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


class session_in_use:  # a context manager, named for the `with` it reads in
    """As `StreamableHTTPServerTransport.handle_request` does: a request in flight pauses the idle countdown.
    A class rather than a generator: the fast path enters one per request."""

    __slots__ = ("idle_scope", "idle_timeout", "transport")

    def __init__(self, transport: StreamableHTTPServerTransport) -> None:
        self.transport = transport
        self.idle_scope, self.idle_timeout = transport.idle_scope, transport._idle_timeout

    def __enter__(self) -> None:
        if self.idle_scope is None or self.idle_timeout is None:
            return
        self.transport._requests_in_flight += 1
        self.idle_scope.deadline = math.inf

    def __exit__(self, *exc_info: object) -> None:
        if self.idle_scope is None or self.idle_timeout is None:
            return
        self.transport._requests_in_flight -= 1
        if not self.transport._requests_in_flight:
            # Set from an empty context: the idle timer this schedules would otherwise keep this request's
            # contextvars (its Request, scope and principal) alive for as long as the session idles.
            # The running loop's clock is anyio's on asyncio (what `anyio.current_time()` returns, without
            # its backend lookup), which is the only loop the gateway runs on.
            deadline = asyncio.get_running_loop().time() + self.idle_timeout
            contextvars.Context().run(setattr, self.idle_scope, "deadline", deadline)


def session_expiring(transport: StreamableHTTPServerTransport) -> bool:
    """The idle period ran out and the session is being ended (the SDK answers such a request itself)."""
    return transport.idle_scope is not None and transport.idle_scope.cancel_called


# -- the direct tools/call of the fast path: FastMCP's own steps, without its dispatch machinery ------------
# Read from fastmcp 4.1 (server/low_level.py LowLevelMiddleware.__call__, server/mixins/mcp_operations.py
# _on_call_tool, server/server.py call_tool) and mcp 2.3 (server/runner.py ServerRunner._on_request).


def request_context(runner: ServerRunner[Any], dctx: Any, method: str, params: Mapping[str, Any] | None,
                    ) -> ServerRequestContext[Any, Any]:
    """The SDK's per-request context, exactly as `ServerRunner._on_request` makes it."""
    meta = _extract_meta(params)
    return runner._make_context(dctx, method, params, meta, runner.connection.protocol_version)


def wire_result(runner: ServerRunner[Any], method: str, result: Any) -> dict[str, Any]:
    """A handler's result shaped for the wire, exactly as `ServerRunner._on_request` shapes it."""
    return _dump_result(runner._serialize(method, runner.connection.protocol_version, result))


def has_extensions(fastmcp: Any) -> bool:
    """Extensions may intercept tools/call (`_compose_tool_call_interceptors`): then the SDK's path serves."""
    return bool(fastmcp._extensions)


class tool_call_scope:  # a context manager, named for the `with` it reads in
    """What FastMCP sets around a client's tools/call: the lifespan's shared-context variables (the
    low-level adapter), "this is the client's own call" (`_on_call_tool`, `call_tool`) and the extension
    dispatch scope. The steps of FastMCP's `_serving_client_tool_call`, `_dispatching_tool_call` and
    `_extension_tool_call_scope`, in their order, in one class rather than three nested generators: the
    fast path enters one per call. `MIRRORED` pins those functions' source (tests/test_fastmcp_private.py)."""

    __slots__ = ("fastmcp", "tokens")

    def __init__(self, fastmcp: Any) -> None:
        self.fastmcp = fastmcp

    def __enter__(self) -> None:
        fastmcp = self.fastmcp
        snapshot = fastmcp._shared_context_snapshot or {}
        tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = [
            (var, var.set(value)) for var, value in snapshot.items()]
        tokens.append((_client_tool_call, _client_tool_call.set(_ClientToolCall())))
        tokens.append((_client_dispatch, _client_dispatch.set(_claim_client_tool_call())))
        delegated = _delegated_extension_scope.get()
        identifiers = delegated[1] if delegated is not None and delegated[0] is fastmcp else frozenset()
        tokens.append((_delegated_extension_scope, _delegated_extension_scope.set(None)))
        tokens.append((_extension_dispatch_scope, _extension_dispatch_scope.set((fastmcp, identifiers))))
        self.tokens = tokens

    def __exit__(self, *exc_info: object) -> None:
        for var, token in reversed(self.tokens):
            var.reset(token)


# FastMCP and SDK functions whose steps are repeated rather than called; their source is pinned by a test.
# The last: which requests the SDK looks a schema up for (gateway/mcp/param_headers.py prepares exactly those).
MIRRORED = ("fastmcp.server.dependencies:_serving_client_tool_call",
            "fastmcp.server.dependencies:_dispatching_tool_call",
            "fastmcp.server.extensions:_extension_tool_call_scope",
            "mcp.server._streamable_http_modern:_mcp_param_rejection")


async def rebind_prefab_tool_names(fastmcp: Any, result: Any) -> Any:
    """What `FastMCP.call_tool` does to a result on its way out of the middleware chain."""
    return await fastmcp._rebind_prefab_tool_names(result)


def call_tool_wire_result(result: Any) -> Any:
    """`ToolResult.to_mcp_result()` as `_on_call_tool` hands it to the runner."""
    return _normalize_call_tool_result(result.to_mcp_result())


class http_request_scope:  # a context manager, named for the `with` it reads in
    """What FastMCP's http app and the SDK's auth context middleware set up for a request before its routes
    run: Starlette's `scope["app"]`, `RequestContextMiddleware`'s transport type and current HTTP request
    (`get_http_request()`), and the authenticated user (`get_access_token()`). One class rather than
    nested generators: the fast path enters one per request."""

    __slots__ = ("http_app", "scope", "tokens", "user")

    def __init__(self, http_app: Any, scope: MutableMapping[str, Any], user: AuthenticatedUser) -> None:
        self.http_app, self.scope, self.user = http_app, scope, user

    def __enter__(self) -> None:
        self.scope["app"] = self.http_app
        transport = getattr(self.http_app.state, "transport_type", None)
        self.tokens = (set_transport(transport) if transport else None,
                       _current_http_request.set(Request(self.scope)),  # as set_http_request does
                       auth_context_var.set(self.user))

    def __exit__(self, *exc_info: object) -> None:
        transport, request, user = self.tokens
        auth_context_var.reset(user)
        _current_http_request.reset(request)
        if transport is not None:
            reset_transport(transport)


def auth_middleware_parts(http_app: Any) -> tuple[Any, Any | None]:
    """The authentication backend FastMCP's http app authenticates with, and its Host/Origin guard
    (None when host-origin protection is off), taken from the app's own middleware list."""
    backend, guard = None, None
    for entry in http_app.user_middleware:
        if entry.cls is AuthenticationMiddleware:
            backend = entry.kwargs["backend"]
        elif entry.cls is HostOriginGuardMiddleware:
            guard = entry
    if backend is None:
        raise RuntimeError("FastMCP's http app has no authentication middleware")
    return backend, guard


# -- the direct tools/call to a streamable-HTTP upstream (gateway/mcp/upstream_call.py) -------------------------
# Read from mcp 2.3 (client/session.py ClientSession.send_request / call_tool, client/streamable_http.py
# StreamableHTTPTransport._handle_post_request, shared/_httpx_utils.py) and fastmcp 4.1
# (server/providers/proxy.py ProxyTool.run, client/transports/http.py connect_session). The call posts the
# request itself; what goes into the request and how its answer is read stay the SDK's own steps, on the
# SDK session the gateway already holds.


def mcp_http_client(headers: dict[str, str] | None, timeout: Any, auth: Any) -> Any:
    """The httpx client the SDK's streamable-HTTP transport makes when given no factory."""
    return create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)


def stamp_request(session: Any, data: dict[str, Any]) -> dict[str, str]:
    """What `ClientSession.send_request` stamps onto a request before it is sent: the era's `_meta` envelope
    (2026-07-28) written into `data`, and the returned per-request headers (MCP-Protocol-Version, Mcp-Method,
    Mcp-Name, Mcp-Param-*)."""
    opts: dict[str, Any] = {}
    session._stamp(data, opts)
    return dict(opts.get("headers") or {})


def call_tool_result(session: Any, raw: dict[str, Any]) -> Any:
    """A `tools/call` result as `ClientSession.send_request` reads it for `call_tool` (before the output-schema
    check, which is the public `validate_tool_result`): raises pydantic's ValidationError as it does."""
    from mcp.client.session import _clamp_inbound_ttl, _later_revision_fields  # only with upstreams

    _clamp_inbound_ttl(raw)
    version = session._negotiated_version or "2025-11-25"
    try:
        mcp_methods.validate_server_result("tools/call", version, raw)
    except KeyError:
        pass
    foreign = _later_revision_fields("tools/call", version)
    if not foreign.isdisjoint(raw):
        raw = {key: value for key, value in raw.items() if key not in foreign}
    return session._call_tool_adapter.validate_python(raw, by_name=False)


def forwardable_request_meta(ctx: Any) -> dict[str, Any] | None:
    """The caller's request `_meta` FastMCP's ProxyTool forwards upstream (connection-owned keys dropped)."""
    from fastmcp.server.providers.proxy import _forwardable_request_meta  # loads FastMCP's client: see above

    return _forwardable_request_meta(ctx)
