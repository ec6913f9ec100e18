"""Every private FastMCP / MCP SDK name the project uses still exists with the shape we rely on.

fastmcp_private/ is the only module that touches them; when an upgrade moves one, this test names it (and
the fence is the one place to fix). If it fails after an upgrade of mcp or fastmcp, cross-process session
sharing, the session cap, upstream proxying or the 401 challenges may be broken: re-read the files the
fence names and adapt it (and only it).
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import gc
import hashlib
import importlib
import inspect
import math
import re
import subprocess
import sys
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastmcp import Client, FastMCP
from fastmcp.server import dependencies, extensions
from fastmcp.server import http as fastmcp_http
from fastmcp.server.auth.middleware import RequireAuthMiddleware
from fastmcp.server.mixins import mcp_operations
from fastmcp.server.providers.fastmcp_provider import FastMCPProvider
from fastmcp.server.providers.local_provider import LocalProvider
from fastmcp.server.providers.proxy import ProxyProvider, ProxyTool
from fastmcp.server.server import StateValue, default_lifespan
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.client import session as client_session_module
from mcp.client.session import ClientSession
from mcp.server import _streamable_http_modern as modern_module
from mcp.server import runner as runner_module
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server as LowLevelServer
from mcp.server.runner import ServerRunner, serve_connection
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

import fastmcp_private as private

REPO = Path(__file__).resolve().parent.parent
FENCE = REPO / "fastmcp_private" / "__init__.py"


def _params(func: object) -> set[str]:
    return set(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_the_versions_are_the_ones_the_fence_was_read_from() -> None:
    assert version("mcp").startswith("2.3."), "mcp moved: re-check fastmcp_private/ against the new SDK"
    assert version("fastmcp").startswith("4.1."), "fastmcp moved: re-check fastmcp_private/ against it"


# -- FastMCP: server, auth middleware, client, proxy --------------------------------------------------------------

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
    entry = private.proxy_cache_entry([], 0.0)
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


# -- The SDK's Streamable HTTP session manager --------------------------------------------------------------------

def test_the_sdks_schema_lookup_hook_and_listing_walk() -> None:
    """The low-level server's `get_tool_input_schema` (what the SDK asks before checking a 2026-07-28 call's
    Mcp-Param headers; FastMCP leaves it unset) and the listing walk it takes without one, as
    `listed_input_schema` calls it."""
    server = FastMCP("fence")._mcp_server
    assert isinstance(server, LowLevelServer) and "get_tool_input_schema" in _params(LowLevelServer.__init__)
    assert server.get_tool_input_schema is None
    assert list(inspect.signature(modern_module._tool_input_schema).parameters) == [
        "app", "request", "request_id", "verdict", "lifespan_state", "name"]


def test_session_manager_private_names_and_signatures() -> None:
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
    assert private.negotiated_version(params) == negotiated


async def test_the_session_manager_is_found_read_and_wrapped_behind_fastmcps_http_app() -> None:
    app = FastMCP("compat").http_app(path="/mcp", json_response=True)
    async with app.router.lifespan_context(app):
        manager = private.find_session_manager(app)
        assert private.find_session_holder(app).session_manager is manager
        for name in ("_server_instances", "_session_owners", "_task_group", "_lifespan_state", "max_sessions",
                     "json_response", "event_store", "security_settings", "retry_interval", "session_idle_timeout",
                     "stateless", "app"):
            assert hasattr(manager, name), name
        assert manager._task_group is not None
        assert isinstance(manager._server_instances, dict)
        ids = private.open_session_ids(manager)
        assert ids is not None and "nope" not in ids and not private.holds(manager, "nope")
        await private.terminate_session(manager, "nope")  # an unknown id: nothing to end
        assert isinstance(manager.asgi_app, RequestBodyLimitMiddleware)
        seen = []

        def wrap(inner: object) -> object:
            seen.append(inner)
            return inner
        private.wrap_manager(manager, wrap)
        assert seen and getattr(seen[0], "__func__", None) is StreamableHTTPSessionManager._handle_request
    assert private.open_session_ids(object()) is None  # unreadable: the session cap falls back to its own view


async def test_requests_adopting_one_session_together_adopt_it_once_and_find_it_connected() -> None:
    """A session is listed only once its transport is connected: a request that finds it can be served.
    Before: it was listed first, and a request arriving meanwhile got a 500 from the SDK's transport."""
    app = FastMCP("compat").http_app(path="/mcp", json_response=True)
    init = {"protocolVersion": private.LATEST_HANDSHAKE_VERSION, "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}
    async with app.router.lifespan_context(app):
        manager = private.find_session_manager(app)
        connected: list[bool] = []

        async def request() -> bool:
            adopted = await private.adopt(manager, "s1", {}, private.LATEST_HANDSHAKE_VERSION, init,
                                          idle_timeout=None)
            transport = manager._server_instances["s1"]
            connected.append(transport._read_stream_writer is not None)
            return adopted

        async def seen_while_adopting() -> None:  # every step of the adoption, from the loop's side
            for _ in range(50):
                if private.holds(manager, "s1"):
                    connected.append(manager._server_instances["s1"]._read_stream_writer is not None)
                await anyio.sleep(0)

        results: list[bool] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(seen_while_adopting)
            for _ in range(8):
                tg.start_soon(lambda: _append(results, request()))
        assert results.count(True) == 1 and len(results) == 8
        assert connected and all(connected)
        await private.terminate_session(manager, "s1")


async def _append(results: list[bool], work: Any) -> None:
    results.append(await work)


# -- Nothing outside the fence touches a private name ---------------------------------------------------------------

def _is_private(name: str) -> bool:
    return re.fullmatch(r"_[A-Za-z][A-Za-z0-9_]*", name) is not None and not name.endswith("__")


def _fenced_names() -> set[str]:
    """Every private name the fence reads, calls, imports or lists (for the ProxyProvider hooks)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(FENCE.read_text())):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_private(node.value):
            names.add(node.value)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names if _is_private(alias.name))
    return names


# Private attributes of FastMCP / SDK objects known to tempt, beyond those the fence uses.
TEMPTING = {"_connection", "_tool_manager", "_mcp_server", "_session_manager", "_negotiate_initialize"}
# A subclass of ProxyProvider (gateway.mcp.upstreams) overrides and reads these on itself: fenced as names.
OVERRIDDEN = set(private.PROXY_PROVIDER_HOOKS) | set(private.PROXY_PROVIDER_STATE)


def _outside_the_fence() -> list[tuple[str, int, str]]:
    lines = []
    for package in ("auth", "gateway"):
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                lines.append((str(path.relative_to(REPO)), number, line))
    return lines


async def test_every_private_name_the_fence_uses_exists() -> None:
    """Whatever the fence reads, calls or imports is found on the objects it is used on (a name added to the
    fence is checked here without a test of its own)."""
    from fastmcp.server.providers import proxy

    async def factory() -> Client:  # never called
        raise AssertionError

    client = Client(FastMCP("fence"))
    app = FastMCP("fence").http_app(path="/mcp", json_response=True)
    async with app.router.lifespan_context(app):
        manager = private.find_session_manager(app)
        # the fast call path's: a session's transport, the runner kernel, FastMCP's tools/call helpers
        transport = StreamableHTTPServerTransport(mcp_session_id="x", is_json_response_enabled=True, idle_timeout=9)
        connection = Connection.from_envelope("2026-07-28", None, None)
        runner = ServerRunner(manager.app, connection, None)
        session = ServerSession(None, connection)  # type: ignore[arg-type]  # only its attributes are read
        # the direct upstream call's: an SDK client session (its stamp, version, result parser) and its module
        send, receive = anyio.create_memory_object_stream[Any](1)
        client_session = ClientSession(receive, send)
        owners = [FastMCP("fence"), RequireAuthMiddleware, client, client._session_state, proxy,
                  ProxyProvider(factory, cache_ttl=1.0), manager,
                  ProxyTool(client_factory=factory, name="t", description=None, parameters={"type": "object"}),
                  transport, runner, runner_module, dependencies, extensions, fastmcp_http, mcp_operations, session,
                  client_session, client_session_module, private.MountedServer(FastMCP("fence")), modern_module]
        missing = sorted(name for name in _fenced_names() if not any(hasattr(o, name) for o in owners))
    assert missing == []


def test_the_fence_names_what_it_uses() -> None:
    fenced = _fenced_names()
    assert {"_server_instances", "_session_owners", "_task_group", "_discard_session", "_lifespan_state",
            "_additional_http_routes", "_send_auth_error", "_send_missing_auth", "_lifespan", "_disconnect",
            "_session_state", "_client_factory", "_CacheEntry", "_tools_cache", "_list_tools"} <= fenced


def test_no_private_fastmcp_name_imported_outside_the_fence() -> None:
    pattern = re.compile(r"from (fastmcp|mcp|mcp_types)[.A-Za-z_]* import .*\b_[A-Za-z]")
    found = [f"{path}:{number}: {line}" for path, number, line in _outside_the_fence() if pattern.search(line)]
    assert found == []


def test_no_fenced_or_tempting_private_attribute_outside_the_fence() -> None:
    """`manager._server_instances`, `getattr(x, "_lifespan")`, `ctx.session._connection` and the like go
    through fastmcp_private/. A class's own attributes (`self._x`) are its own business; `super()._x` only
    for the ProxyProvider hooks gateway.mcp.upstreams overrides."""
    names = _fenced_names() | TEMPTING
    use = re.compile(r"(?P<owner>super\(\)|[\w\])]+)\.(?P<attr>" + "|".join(sorted(names)) + r")\b"
                     r"|[\"'](?P<text>" + "|".join(sorted(names)) + r")[\"']")
    found = []
    for path, number, line in _outside_the_fence():
        for match in use.finditer(line):
            owner = match["owner"]
            if owner == "self" or (owner == "super()" and match["attr"] in OVERRIDDEN):
                continue
            found.append(f"{path}:{number}: {line.strip()}")
    assert found == []


def test_the_fence_is_a_leaf_that_imports_cleanly() -> None:
    """Both auth/ and gateway/ import it, and auth/ must never import gateway/: it imports neither."""
    code = ("import sys, fastmcp_private; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('auth', 'gateway')))")
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "[]"


_REQUEST_STATE: ContextVar[object | None] = ContextVar("fence_test_request_state", default=None)


async def test_the_idle_timer_of_a_session_keeps_no_request_alive_and_still_ends_the_session() -> None:
    """A request served outside the SDK's transport pauses the session's idle countdown and restarts it when
    done; the restarted timer must not hold that request's contextvars (its Request, scope, principal: an
    idle session would keep them as long as it lives), and must still end the session when it runs out."""
    class State:
        pass

    transport = StreamableHTTPServerTransport(mcp_session_id="x", is_json_response_enabled=True, idle_timeout=0.2)
    transport.idle_scope = anyio.CancelScope()  # as the transport's connect() makes it
    seen: list[weakref.ref[State]] = []

    async def request() -> None:
        state = State()
        seen.append(weakref.ref(state))
        _REQUEST_STATE.set(state)  # what the auth and request middleware set for a request
        with private.session_in_use(transport):
            assert transport.idle_scope is not None and transport.idle_scope.deadline == math.inf

    with anyio.fail_after(10):
        with transport.idle_scope:  # entered by the host, as the session manager's server task does
            async with anyio.create_task_group() as tg:
                tg.start_soon(request)
            gc.collect()
            assert seen[0]() is None  # nothing holds the request's state now that it is done
            await anyio.sleep(30)  # cancelled by the idle timeout
    assert transport.idle_scope.cancelled_caught


# -- FastMCP's tool lookup: in-process providers asked in place --------------------------------------------------

def _tool(provider: LocalProvider, name: str, version: str | None, label: str) -> None:
    def fn() -> str:
        return label
    provider.tool(fn, name=name, version=version, description=label)


def _servers(providers: list[Any], strategy: Any = "warn", *, gateway_providers: list[Any] | None = None
             ) -> tuple[FastMCP, FastMCP]:
    """FastMCP as it is and the gateway's, both over the very same providers (or the gateway's over its own
    list: a mounted server is a provider of one parent only, so each side mounts its own twin)."""
    from gateway.mcp.server import GatewayFastMCP
    pair = []
    for cls, own in ((FastMCP, providers), (GatewayFastMCP, gateway_providers or providers)):
        server = cls("lookup")
        server.provider_error_strategy = strategy
        for provider in own:
            server.add_provider(provider)
        pair.append(server)
    return pair[0], pair[1]


def _child(strategy: str) -> FastMCP:
    """A user's server to mount: its own tools in two providers (versions across them)."""
    child = FastMCP("child")
    child.provider_error_strategy = strategy  # type: ignore[assignment]
    _tool(child.local_provider, "b", "3", "mounted")
    extra = LocalProvider()
    _tool(extra, "b", "2", "mounted-older")
    _tool(extra, "c", "1", "mounted-extra")
    child.add_provider(extra)
    return child


def _seen(tool: Any) -> Any:
    return None if tool is None else (tool.name, tool.version, tool.description)


_NAMES = ["a", "b", "c"]
_layout = st.lists(  # providers, each serving names in one version or more (or unversioned: FastMCP's rule)
    st.dictionaries(st.sampled_from(_NAMES), st.just([None]) | st.lists(st.sampled_from(["1", "2"]), min_size=1,
                                                                        max_size=2, unique=True), max_size=3),
    min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(layout=_layout, mounted_at=st.none() | st.integers(0, 4), failing_at=st.none() | st.integers(0, 4),
       strategy=st.sampled_from(["warn", "raise"]))
def test_the_gateways_lookup_finds_what_fastmcps_finds(layout: list[dict[str, list[str | None]]],
                                                       mounted_at: int | None, failing_at: int | None,
                                                       strategy: str) -> None:
    """Same providers (local ones, a mounted server, one that fails), same answers: which tool wins a name
    (the highest version, whichever provider has it), what is listed and in which order, what a failing
    provider does under either error strategy. The mounted server is mounted as FastMCP mounts it on one
    side and as the gateway does on the other (its own lookups then asked in place too)."""
    providers: list[Any] = []
    for i, tools in enumerate(layout):
        provider = LocalProvider()
        for name, versions in tools.items():
            for tool_version in versions:
                _tool(provider, name, tool_version, f"p{i}")
        providers.append(provider)
    sides = [list(providers), list(providers)]
    if mounted_at is not None:  # FastMCP's own mount on one side, the gateway's (private.mount) on the other
        at = min(mounted_at, len(providers))
        sides[0].insert(at, FastMCPProvider(_child(strategy)))
        gateway_parent = FastMCP("gateway-parent")
        private.mount(gateway_parent, _child(strategy))
        sides[1].insert(at, gateway_parent.providers[-1])
    if failing_at is not None:
        for side in sides:
            failing = side[min(failing_at, len(side) - 1)]

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("provider down")
            failing._get_tool = broken
            failing._list_tools = broken
    fastmcp, gateway = _servers(sides[0], strategy, gateway_providers=sides[1])

    async def answers(server: FastMCP) -> list[Any]:
        out: list[Any] = []
        for name in [*_NAMES, "missing"]:
            try:
                out.append(_seen(await server.get_tool(name)))
            except RuntimeError as exc:
                out.append(f"raised {exc}")
        try:
            out.append([_seen(t) for t in await server.list_tools()])
        except RuntimeError as exc:
            out.append(f"raised {exc}")
        return out

    assert anyio.run(answers, gateway) == anyio.run(answers, fastmcp)


async def test_providers_are_asked_in_place_unless_two_may_wait() -> None:
    """What the gateway saves on every tools/call: no task per in-process provider, nor for one provider
    that may wait (a mounted server, an upstream) when nothing else may; two of those still wait together."""
    import asyncio
    first, second = LocalProvider(), LocalProvider()
    _tool(first, "a", None, "first")
    _tool(second, "b", None, "second")
    children = [FastMCP("child"), FastMCP("other")]
    _tool(children[0].local_provider, "c", None, "mounted")
    _tool(children[1].local_provider, "d", None, "other")
    mounted, other = FastMCPProvider(children[0]), FastMCPProvider(children[1])
    asked_from: dict[str, Any] = {}
    for label, provider in (("first", first), ("second", second), ("mounted", mounted), ("other", other)):
        lookup = provider._get_tool

        async def recording(name: str, version: Any = None, *, _label: str = label, _lookup: Any = lookup) -> Any:
            asked_from[_label] = asyncio.current_task()
            return await _lookup(name, version)
        provider._get_tool = recording
    caller = asyncio.current_task()

    fastmcp, gateway = _servers([first, second, mounted])
    assert _seen(await gateway.get_tool("c")) == ("c", None, "mounted")
    assert asked_from["first"] is caller and asked_from["second"] is caller and asked_from["mounted"] is caller
    asked_from.clear()
    assert _seen(await fastmcp.get_tool("c")) == ("c", None, "mounted")
    assert asked_from["first"] is not caller  # FastMCP's own: a task each (what the test would miss)

    asked_from.clear()
    _, gateway = _servers([first, mounted, other])
    assert _seen(await gateway.get_tool("d")) == ("d", None, "other")
    assert asked_from["first"] is caller
    assert asked_from["mounted"] is not caller and asked_from["other"] is not caller


async def test_a_mounted_servers_tool_wrapper_is_kept_while_the_tool_is_the_same() -> None:
    """The wrapper FastMCP builds per lookup is kept for the same, unchanged tool, and built anew for a
    changed or replaced one; the parent serves what the server has now."""
    child = FastMCP("child")
    _tool(child.local_provider, "t", None, "one")
    parent = FastMCP("parent")
    private.mount(parent, child)
    first = await parent.get_tool("t")
    assert first is not None and first.description == "one"
    assert await parent.get_tool("t") is first  # kept (FastMCP's own provider builds a new one each time)
    tool = await child.get_tool("t")
    tool.description = "two"  # changed in place
    second = await parent.get_tool("t")
    assert second is not first and second.description == "two"
    child.local_provider.remove_tool("t")
    _tool(child.local_provider, "t", None, "three")  # replaced
    third = await parent.get_tool("t")
    assert third is not second and third.description == "three"
    result = await parent.call_tool("t", {})
    assert result.content[0].text == "three"
    child.local_provider.remove_tool("t")
    assert await parent.get_tool("t") is None


async def test_a_mounted_server_asks_its_own_providers_in_place_and_stays_the_users_class() -> None:
    """A mounted server looks its tool up twice a call (for the parent, then in its own call_tool): both in
    place after the gateway's mount, in a task each before. Its class keeps its name, module and methods."""
    import asyncio

    class UsersServer(FastMCP):
        """The user's own subclass."""

        def describe(self) -> str:
            return f"users server {self.name}"

    child = UsersServer("child")
    _tool(child.local_provider, "t", None, "theirs")
    asked_from: list[Any] = []
    lookup = child.local_provider._get_tool

    async def recording(name: str, version: Any = None) -> Any:
        asked_from.append(asyncio.current_task())
        return await lookup(name, version)
    child.local_provider._get_tool = recording  # type: ignore[method-assign]

    await child.get_tool("t")
    assert asked_from[-1] is not asyncio.current_task()  # FastMCP's own: a task per provider
    from gateway.mcp.server import GatewayFastMCP
    parent = GatewayFastMCP("parent")  # the gateway's server (its own lookups in place already)
    private.mount(parent, child)
    asked_from.clear()
    result = await parent.call_tool("t", {})
    assert result.content[0].text == "theirs"
    assert len(asked_from) == 2 and all(task is asyncio.current_task() for task in asked_from), asked_from
    assert isinstance(child, UsersServer) and isinstance(child, FastMCP)
    assert (type(child).__name__, type(child).__qualname__, type(child).__module__) == (
        "UsersServer", UsersServer.__qualname__, __name__)
    assert child.describe() == "users server child" and type(child).__doc__ == UsersServer.__doc__
    private.mount(FastMCP("another parent"), child)  # mounted twice: the class is not wrapped again
    assert type(child).__mro__.count(private.InlineLocalLookups) == 1
    assert type(UsersServer("second")) is UsersServer  # only the mounted instance changed


async def test_a_mounted_server_takes_the_state_store_only_when_it_has_none_of_its_own() -> None:
    """FastMCP makes a server's default store on first use from `_state_storage`; the store handed to the
    mount is used only while that has not happened and the user passed none."""
    from key_value.aio.stores.memory import MemoryStore

    given_store, users_store = MemoryStore(), MemoryStore()
    fresh, own, used = FastMCP("fresh"), FastMCP("own", session_state_store=users_store), FastMCP("used")
    await used._state_store.get(key="k")  # its default store exists now
    for server in (fresh, own, used):
        private.mount(FastMCP("parent"), server, state_store=given_store)
    for server in (fresh, own, used):
        await server._state_store.put(key=f"{server.name}:k", value=StateValue(value=server.name))
    assert await given_store.get("fresh:k", collection="fastmcp_state") == {"value": "fresh"}
    assert await users_store.get("own:k", collection="fastmcp_state") == {"value": "own"}
    assert await given_store.get("used:k", collection="fastmcp_state") is None
    assert (await used._state_store.get(key="used:k")).value == "used"
    later = MemoryStore()
    private.use_state_store(fresh, later)  # taken once, kept
    await fresh._state_store.put(key="fresh:again", value=StateValue(value="again"))
    assert await given_store.get("fresh:again", collection="fastmcp_state") == {"value": "again"}
    assert await later.get("fresh:again", collection="fastmcp_state") is None


# -- FastMCP steps the fence repeats rather than calls ------------------------------------------------------------

# sha256 of each mirrored function's source (first 16 hex digits), as read from fastmcp 4.1.
MIRRORED_SOURCE = {
    "fastmcp.server.dependencies:_serving_client_tool_call": "64ecf51ae7f6287d",
    "fastmcp.server.dependencies:_dispatching_tool_call": "17c1fa891c8b6330",
    "fastmcp.server.extensions:_extension_tool_call_scope": "ca127282ebdf0eb6",
    "mcp.server._streamable_http_modern:_mcp_param_rejection": "933612dde6d7622f",
}


def test_the_functions_the_fence_mirrors_are_as_they_were_read() -> None:
    """A change to any of them (an upgrade) must be read again and the fence's copy of its steps brought in
    line: this fails loudly rather than let the fast path drift from what FastMCP sets."""
    found = {}
    for entry in private.MIRRORED:
        module, name = entry.split(":")
        source = inspect.getsource(getattr(importlib.import_module(module), name))
        found[entry] = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert found == MIRRORED_SOURCE


_SHARED: ContextVar[str] = ContextVar("fence_test_shared", default="unset")


@pytest.mark.parametrize("delegated", ["none", "this server", "another server"])
def test_the_tool_call_scope_sets_what_fastmcps_own_scopes_set(delegated: str) -> None:
    _delegated_extension_scope, _extension_dispatch_scope = (extensions._delegated_extension_scope,
                                                             extensions._extension_dispatch_scope)
    server, other = FastMCP("fence"), FastMCP("other")
    server._shared_context_snapshot = {_SHARED: "from the lifespan"}

    def seen() -> tuple[Any, ...]:
        call = dependencies._client_tool_call.get()
        return (_SHARED.get(), call is not None and call.claimed, dependencies._is_client_tool_call(),
                _delegated_extension_scope.get(), _extension_dispatch_scope.get())

    def run(scope: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        def body() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
            if delegated != "none":
                _delegated_extension_scope.set((server if delegated == "this server" else other,
                                                frozenset({"ext"})))
            before = seen()
            with scope():
                inside = seen()
            assert seen() == before  # everything set is reset on the way out
            return inside, before
        return contextvars.copy_context().run(body)

    @contextlib.contextmanager
    def fastmcps() -> Iterator[None]:  # as FastMCP nests them around a client's tools/call
        token = _SHARED.set("from the lifespan")
        try:
            with (dependencies._serving_client_tool_call(), dependencies._dispatching_tool_call(),
                  extensions._extension_tool_call_scope(server)):
                yield
        finally:
            _SHARED.reset(token)

    ours = run(lambda: private.tool_call_scope(server))
    assert ours == run(fastmcps)
    assert ours[0][:3] == ("from the lifespan", True, True)
