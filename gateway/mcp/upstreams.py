"""Upstream MCP servers: their tools, resources and prompts served on /mcp as `<name>_<tool>`.

Built on FastMCP's proxy machinery: one `ProxyProvider` per upstream, added to the
gateway server with `namespace=<name>` (FastMCP's mount namespacing: tools and prompts
become `<name>_<tool>`, resource URIs `scheme://<name>/path`). Calls go through the
gateway's middleware chain like local tools, so TrackingMiddleware records them with
tool_name `<name>_<tool>`, and access rules and quotas apply.

What we add on top of FastMCP's proxy:
- Our own backend `Client` per upstream (never a `ProxyClient`): the caller's headers,
  including the gateway bearer token, are never forwarded upstream, and upstream
  log/sampling/elicitation requests are not relayed to whichever caller happens to be
  current (a multi-user gateway must not cross those wires). Upstream auth is only the
  static headers and the bearer token from `bearer_token_env`.
- One long-lived backend session per upstream, shared by all callers' requests (MCP
  multiplexes requests on a session). Sharing is safe because nothing is relayed back
  (above). A dead session (upstream restarted, stdio child exited) is replaced on the
  next request; a request that provably never reached the upstream on a stale session
  (expired session id, connection refused) is retried once on a new one.
- Every backend request runs under the upstream's `timeout`. Failures become tool
  errors the caller can read, with a type the record names:
  `UpstreamUnavailable` (cannot connect, connection lost, HTTP error status, child
  process gone), `UpstreamTimeout`, `UpstreamProtocolError` (not MCP: unparsable or
  invalid answers), `UpstreamError` (the upstream answered with a JSON-RPC error).
  A tool error the upstream itself returns (isError) is passed through unchanged.
- Health per upstream (up / down / unknown), refreshed by every request and by a
  background check every `health_interval` seconds; shown on /ready. Nothing is ever
  permanently failed: every call tries the upstream again.
- Tool calls to a streamable-HTTP upstream are posted directly on its open session
  (gateway.mcp.upstream_call: the same request, the same reading of the answer, a fraction
  of the SDK client's CPU); anything that path does not take on goes through the Client.
- A call finds its tool in the last listing (kept `health_interval` seconds); once that is stale, one
  listing renews it for all the calls that find it so, and only a call whose tool the last listing lacks
  waits for it. Requests that list at the same time, and the background check, share one listing too (per
  user for per-user credentials).
- Listing while an upstream is down: its tools, resources and prompts are left out of
  the lists (the lists show what can be called now), and for `retry_seconds` after a
  failure listings skip it without waiting on it. A call to one of its tools still
  tries the upstream and, if it is still down, answers `UpstreamUnavailable` (not
  "Unknown tool").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
import httpx2
import mcp_types
from fastmcp import Client, FastMCP
from fastmcp.client.telemetry import client_span
from fastmcp.client.transports import (
    ClientTransport,
    SSETransport,
    StdioTransport,
    StreamableHttpTransport,
)
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_context
from fastmcp.server.providers.proxy import ProxyProvider, ProxyTool
from fastmcp.telemetry import inject_trace_context
from fastmcp.tools.base import InputRequiredToolResult, Tool, ToolResult
from fastmcp.utilities.versions import VersionSpec, version_sort_key
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import x_mcp_header_map
from pydantic import ValidationError as PydanticValidationError

from auth.provider import current_principal
from fastmcp_private import (
    client_session_task,
    force_disconnect,
    forwardable_request_meta,
    proxy_cache_entry,
    proxy_tool_backend_name,
    proxy_tool_client_factory,
)
from gateway.config import UpstreamConfig
from gateway.credentials.clients import UserBearer, UserClient, UserClients, fingerprint
from gateway.credentials.elicit import offer_link
from gateway.credentials.errors import (
    CredentialError,
    CredentialMissing,
    CredentialRejected,
)
from gateway.formatting import one_line
from gateway.mcp.param_headers import schema_lookup_only
from gateway.mcp.upstream_call import NotDirect, SessionHttp, StreamedSession, call_tool
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from fastmcp.server.context import Context

    from gateway.credentials.resolver import CredentialResolver

log = logging.getLogger("mcp_gateway.upstreams")
# Per request: the per-user client entry it used (its token's fingerprint, and whether that token was refused),
# read after a failure: by then other requests may have replaced the user's client.
_sent: contextvars.ContextVar[UserClient | None] = contextvars.ContextVar("mcp_gateway_sent_credential",
                                                                         default=None)
T = TypeVar("T")


# -- errors the caller sees (ToolError subclasses: FastMCP returns them as isError results) --------


class UpstreamError(ToolError):
    """The upstream answered the request with a JSON-RPC error."""

    def __init__(self, message: str) -> None:
        # One line, bounded: it reaches the caller, the logs and mcp_requests.error_message.
        super().__init__(" ".join(message.split())[:300], log_level=logging.WARNING)


class UpstreamUnavailable(UpstreamError):
    """Could not reach the upstream, or lost it mid-request."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its timeout."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer was not valid MCP."""


_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, BrokenPipeError, ...
    httpx2.TransportError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
)
_PROTOCOL_ERRORS: tuple[type[BaseException], ...] = (
    json.JSONDecodeError,
    PydanticValidationError,
    httpx2.DecodingError,
    UnicodeDecodeError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes/contexts and the members of exception groups (bounded)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return seen


def classify(name: str, exc: BaseException, timeout: float) -> UpstreamError:
    """Map whatever escaped a backend request to one of the upstream error types."""
    if isinstance(exc, UpstreamError):
        return exc
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, TimeoutError | httpx2.TimeoutException):
            return UpstreamTimeout(f"upstream {name!r} did not answer within {timeout:g}s")
        if isinstance(e, MCPError) and e.error.code == mcp_types.REQUEST_TIMEOUT:
            return UpstreamTimeout(f"upstream {name!r} did not answer within {timeout:g}s")
    for e in chain:
        if isinstance(e, httpx2.HTTPStatusError):
            return UpstreamUnavailable(f"upstream {name!r} answered HTTP {e.response.status_code}")
    for e in chain:
        if isinstance(e, _PROTOCOL_ERRORS):
            return UpstreamProtocolError(f"upstream {name!r} sent an invalid MCP answer ({one_line(e, 200)})")
    for e in chain:
        if isinstance(e, _TRANSPORT_ERRORS) or (
                isinstance(e, RuntimeError) and "failed to connect" in str(e).lower()):
            return UpstreamUnavailable(f"upstream {name!r} is unreachable ({one_line(e, 200)})")
    for e in chain:
        if isinstance(e, MCPError) and _session_gone(e):
            return UpstreamUnavailable(f"upstream {name!r} is unreachable (session lost: {e.error.message})")
        if isinstance(e, MCPError):
            if e.error.code in (mcp_types.PARSE_ERROR, mcp_types.INVALID_REQUEST):
                detail = one_line(e.error.message) if e.error.message else e.error.code
                return UpstreamProtocolError(f"upstream {name!r} sent an invalid MCP answer ({detail})")
            if e.error.code == mcp_types.CONNECTION_CLOSED:
                return UpstreamUnavailable(f"upstream {name!r} is unreachable (connection closed)")
            return UpstreamError(f"upstream {name!r} answered error {e.error.code}: {e.error.message}")
    return UpstreamProtocolError(f"upstream {name!r} failed ({one_line(exc, 200)})")


# -- one upstream -------------------------------------------------------------------------------


@dataclass
class UpstreamHealth:
    state: str = "unknown"  # unknown | up | down
    last_ok: float | None = None       # wall clock
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    last_failure_mono: float | None = None
    consecutive_failures: int = 0
    tools: int | None = None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


class Upstream:
    """Connection settings, health, and the guarded way every backend request is made."""

    def __init__(self, config: UpstreamConfig, *, direct_calls: bool = True) -> None:
        self.config = config
        self.name = config.name
        # Tool calls posted directly on the session (gateway.mcp.upstream_call); streamable HTTP only.
        self.direct_calls = direct_calls and config.kind == "http"
        self._header_maps: dict[str, tuple[dict[str, Any], dict[tuple[str, ...], str]]] = {}
        self._streamed_at = -math.inf  # when a session last turned out to answer with SSE streams
        self.health = UpstreamHealth()
        self._transport = self._make_transport()
        self._client = Client(self._transport, timeout=config.timeout, init_timeout=config.timeout,
                              mode=config.protocol, name=f"mcp-gateway-upstream-{config.name}")
        # Per-user credentials: one client per caller, never shared (set up by install_credentials).
        self.resolver: CredentialResolver | None = None
        self.principal_of = current_principal
        self._users = UserClients(self._user_client_for, _leave) if config.per_user else None
        self.provider = UpstreamProvider(self)
        self._task: asyncio.Task[None] | None = None
        self._shared: Client | None = None
        self._connected_at = 0.0
        self._connect_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    def _make_transport(self, user_auth: UserBearer | None = None) -> ClientTransport:
        cfg = self.config
        if cfg.command:
            env = dict(cfg.env)
            for child, source in cfg.env_from.items():
                env[child] = os.environ.get(source, "")
            return StdioTransport(cfg.command, list(cfg.args), env=env or None, cwd=cfg.cwd, keep_alive=True)
        assert cfg.url is not None
        token = os.environ.get(cfg.bearer_token_env) if cfg.bearer_token_env else None
        auth: str | UserBearer | None = token or None
        if cfg.per_user:
            auth = user_auth  # the caller's own; never the shared one, never another user's
        headers = dict(cfg.headers)
        if cfg.kind == "sse":
            return SSETransport(cfg.url, headers=headers, auth=auth)
        if self.direct_calls:  # the same httpx client the SDK would make, kept where the direct path finds it
            return StreamableHttpTransport(cfg.url, headers=headers, auth=auth,
                                           httpx_client_factory=SessionHttp(cfg.url))
        return StreamableHttpTransport(cfg.url, headers=headers, auth=auth)

    def _user_client_for(self, auth: UserBearer) -> Client:
        return Client(self._make_transport(auth), timeout=self.config.timeout, init_timeout=self.config.timeout,
                      mode=self.config.protocol, name=f"mcp-gateway-upstream-{self.config.name}")

    def listing_key(self) -> tuple[str, str] | None:
        """Whose listing a caller's would be: everyone's with a shared credential, else the caller's own."""
        return self._user_key() if self._users is not None else None

    def _user_key(self) -> tuple[str, str] | None:
        principal = self.principal_of()
        return (principal.tenant_id, principal.user_id) if principal is not None else None

    async def _user_client(self) -> Client:
        """The caller's own connected client, carrying the caller's own credential."""
        assert self._users is not None
        principal = self.principal_of()
        if principal is None or self.resolver is None:
            raise CredentialMissing(self.name, self.resolver.link_url if self.resolver else "/dashboard#connections")
        subject = None
        if self.config.credentials == "token_exchange":
            from fastmcp.server.dependencies import get_access_token

            access = get_access_token()
            subject = access.token if access is not None else None
        token = await self.resolver.token(self.config, principal, subject)
        key = (principal.tenant_id, principal.user_id)
        if self.config.credentials != "token_exchange" and self._users.holds_another_token(key, token):
            # The user's client carries another token that nothing refused: another call may have stored a
            # fresher one and connected with it since this call read the store. Read once more rather than
            # replace that client with an older token (a refused handshake and a second connection).
            token = await self.resolver.token(self.config, principal, subject)
        try:
            entry = await self._users.get(key, token, _alive)
        except Exception:
            # Refused while connecting (a token another call is refreshing right now): the pool keeps that
            # entry, marked refused, so guarded() sees the credential was refused, not the upstream failing.
            kept = self._users.current(key)
            _sent.set(kept if kept is not None and kept.fingerprint == fingerprint(token) else None)
            raise
        _sent.set(entry)
        return entry.client

    def forget_user(self, tenant_id: str, user_id: str) -> None:
        """A user's credential was revoked or replaced: close their client now."""
        if self._users is not None:
            self._users.evict((tenant_id, user_id))

    async def client_factory(self) -> Client:
        """The upstream's one shared, connected client (reconnected when its session has died).

        Safe to share between callers because it is a plain `Client`: nothing the upstream sends
        on its own (logs, progress, sampling, elicitation) is relayed to any caller. Each request
        enters it (`async with`), our own reference keeps the session open between requests.
        """
        if self._users is not None:
            return await self._user_client()
        shared = self._shared
        if shared is not None and _alive(shared):
            return shared
        async with self._connect_lock:
            shared = self._shared
            if shared is not None and _alive(shared):
                return shared
            self._release()
            fresh = self._client.new()
            await fresh.__aenter__()  # bounded by init_timeout and by the caller's guard
            self._shared = fresh
            self._connected_at = time.monotonic()
            return fresh

    def _release(self) -> None:
        """Stop using the shared session; it closes once requests still inside it leave."""
        if self._users is not None:
            key = self._user_key()
            if key is not None:
                self._users.evict(key)
            return
        old, self._shared = self._shared, None
        if old is not None:
            task = asyncio.create_task(_leave(old), name=f"mcp-gateway-upstream-{self.name}-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def call(self, tool: UpstreamTool, arguments: dict[str, Any], context: Context | None) -> ToolResult:
        """One backend tools/call (run under `guarded`): directly on the session where it can, else FastMCP's
        ProxyTool.run through the Client."""
        if self.direct_calls and tool.listed and time.monotonic() - self._streamed_at > self.config.health_interval:
            client = await self.client_factory()
            http = getattr(client.transport, "httpx_client_factory", None)
            ctx = context or get_context()
            if isinstance(http, SessionHttp) and not ctx.input_responses and not ctx.request_state:
                try:
                    return await self._call_directly(client, http, tool, arguments, ctx)
                except StreamedSession:
                    # Its sessions stream: the client makes the calls, without asking for a client first each
                    # time (a per-user one resolves the caller's credential); looked at again after a while.
                    self._streamed_at = time.monotonic()
                except NotDirect:
                    pass
        return await ProxyTool.run(tool, arguments, context)

    def _header_map(self, backend: str, tool: UpstreamTool) -> dict[tuple[str, ...], str]:
        """Arguments the tool mirrors into Mcp-Param-* headers (SEP-2243), read from its input schema once per
        listing (FastMCP hands each call a copy of the tool; the schema object is the listing's)."""
        known = self._header_maps.get(backend)
        if known is None or known[0] is not tool.parameters:
            known = (tool.parameters, x_mcp_header_map(tool.parameters))
            if len(self._header_maps) > 4096:
                self._header_maps.clear()
            self._header_maps[backend] = known
        return known[1]

    async def _call_directly(self, client: Client, http: SessionHttp, tool: UpstreamTool, arguments: dict[str, Any],
                             ctx: Context) -> ToolResult:
        """What ProxyTool.run does, with the request posted by upstream_call instead of the SDK session."""
        backend = proxy_tool_backend_name(tool)
        with client_span(f"tools/call {backend}", "tools/call", backend, tool_name=backend) as span:
            span.set_attribute("fastmcp.provider.type", "ProxyProvider")
            async with client:
                meta = inject_trace_context(forwardable_request_meta(ctx)) or None
                result = await call_tool(client, http, backend, arguments, meta, self._header_map(backend, tool))
        if isinstance(result, mcp_types.InputRequiredResult):
            return InputRequiredToolResult(result)
        return ToolResult(content=result.content, structured_content=result.structured_content, meta=result.meta,
                          is_error=result.is_error)

    # -- health --------------------------------------------------------------------------------

    def _ok(self) -> None:
        if self.health.state != "up":
            log.info("upstream %s is up", self.name, extra={"event": "upstream_up", "upstream": self.name})
        self.health.state = "up"
        self.health.last_ok = time.time()
        self.health.consecutive_failures = 0

    def _failed(self, error: UpstreamError, *, listing: bool) -> None:
        # A call that times out says that tool is slow, not that the upstream is down.
        down = isinstance(error, UpstreamUnavailable | UpstreamProtocolError) or (
            listing and isinstance(error, UpstreamTimeout))
        if down:
            if self.health.state != "down":
                log.warning("upstream %s is down: %s: %s", self.name, type(error).__name__, error,
                            extra={"event": "upstream_down", "upstream": self.name})
            self.health.state = "down"
            self.health.consecutive_failures += 1
            self.health.last_failure_mono = time.monotonic()
        elif not isinstance(error, UpstreamTimeout):  # it answered: reachable, the request was refused
            self._ok()
        self.health.last_error = f"{type(error).__name__}: {error}"
        self.health.last_error_at = time.time()

    def recently_failed(self) -> bool:
        h = self.health
        return (h.state == "down" and h.last_failure_mono is not None
                and time.monotonic() - h.last_failure_mono < self.config.retry_seconds)

    def _session_started(self) -> float:
        if self._users is not None:
            key = self._user_key()
            return self._users.connected_at(key) if key else 0.0
        return self._connected_at

    async def _refused(self, work: Callable[[], Awaitable[T]], listing: bool, retried: bool) -> T:
        """The upstream answered 401/403 to the caller's own credential."""
        sent = _sent.get()
        refused = sent.fingerprint if sent is not None else None  # this request's token, not the current one
        if sent is not None and self._users is not None and self._users.current(self._user_key()) is sent:
            self._release()
        principal = self.principal_of()
        if principal is None or self.resolver is None:
            raise CredentialMissing(self.name, "/dashboard#connections")
        if self.config.credentials == "per_user_oauth" and not retried:
            # once; raises CredentialRejected on failure
            await self.resolver.refresh(self.config, principal, refused=refused)
            return await self.guarded(work, listing=listing, _retried=True)
        await self.resolver.rejected(self.config, principal)
        raise CredentialRejected(self.name, self.resolver.link_url)

    async def guarded(self, work: Callable[[], Awaitable[T]], *, listing: bool = False, _retried: bool = False) -> T:
        """Run one backend request under the timeout; failures become UpstreamError subclasses.

        A request that failed before reaching the upstream on a session opened earlier (session
        expired: HTTP 404; connection refused) is retried once on a new session: it cannot have
        run, so retrying cannot run a tool twice.
        """
        started_guard = time.monotonic()
        try:
            with anyio.fail_after(self.config.timeout):
                started = time.monotonic()
                try:
                    result = await work()
                except Exception as exc:
                    if not (_not_delivered(exc) and self._session_started() < started):
                        raise
                    self._release()
                    result = await work()
        except CredentialError:
            raise  # the caller's credential, not the upstream's health
        except Exception as exc:
            sent = _sent.get() if self._users is not None else None
            if self._users is not None and (_credential_refused(exc) or (
                    sent is not None and sent.auth.refused_at >= started_guard)):
                return await self._refused(work, listing, _retried)
            error = classify(self.name, exc, self.config.timeout)
            if isinstance(error, UpstreamUnavailable | UpstreamProtocolError):
                self._release()  # the next request connects afresh
            self._failed(error, listing=listing)
            raise error from exc
        self._ok()
        return result

    def status(self) -> dict[str, Any]:
        h = self.health
        return {"status": h.state, "transport": self.config.kind, "target": self.config.target,
                "tools": h.tools, "last_ok": _iso(h.last_ok), "last_error": h.last_error,
                "last_error_at": _iso(h.last_error_at)}

    def offered_tools(self) -> list[str]:
        """Tool names as clients see them (`<upstream>_<tool>`), from the last successful listing."""
        return sorted(f"{self.name}_{t.name}" for t in self.provider.last_listing())

    # -- lifecycle ------------------------------------------------------------------------------

    async def check(self) -> bool:
        try:
            await asyncio.shield(self.provider.shared_refresh())  # shared with calls listing meanwhile
            return True
        except UpstreamError:
            return False

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # never let the loop die
                log.exception("upstream %s: health check failed unexpectedly", self.name)
            await asyncio.sleep(self.config.health_interval)

    def start(self) -> None:
        if self._users is not None:
            return  # no background check: every request needs some caller's own credential
        self._task = asyncio.create_task(self._health_loop(), name=f"mcp-gateway-upstream-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.provider.stop_refreshing()
        shared, self._shared = self._shared, None
        try:
            with anyio.move_on_after(5):
                if self._users is not None:
                    await self._users.close()
                if shared is not None:
                    await force_disconnect(shared)
                if self._closing:
                    await asyncio.gather(*self._closing, return_exceptions=True)
                await self._transport.close()  # the stdio child process
                http = getattr(self._transport, "httpx_client_factory", None)
                if isinstance(http, SessionHttp) and http.raw is not None:
                    http.raw.close()  # the direct calls' kept-alive connections
        except Exception as exc:
            log.debug("upstream %s: close failed: %s", self.name, exc)


def _alive(client: Client) -> bool:
    if not client.is_connected():
        return False
    task = client_session_task(client)
    return task is None or not task.done()


async def _leave(client: Client) -> None:
    try:
        with anyio.move_on_after(30):
            await client.__aexit__(None, None, None)
    except Exception as exc:  # a dead session may fail to close cleanly: nothing to do about it
        log.debug("closing an upstream session failed: %s", exc)


def _credential_refused(exc: BaseException) -> bool:
    """HTTP 401/403 from the upstream: it refused the credential we sent."""
    return any(isinstance(e, httpx2.HTTPStatusError) and e.response.status_code in (401, 403) for e in _chain(exc))


def _not_delivered(exc: BaseException) -> bool:
    """The request certainly did not reach the upstream's tool (safe to retry)."""
    for e in _chain(exc):
        if isinstance(e, httpx2.ConnectError | ConnectionRefusedError):
            return True
        if isinstance(e, httpx2.HTTPStatusError) and e.response.status_code == 404:
            return True  # unknown/expired session id
        if _session_gone(e):
            return True
    return False


def _session_gone(exc: BaseException) -> bool:
    """The upstream does not know our session id (it restarted, or the session expired): HTTP 404,
    which the SDK client reports as INVALID_REQUEST "Session not found" / "Session terminated"."""
    return (isinstance(exc, MCPError) and exc.error.code == mcp_types.INVALID_REQUEST
            and exc.error.message in ("Session not found", "Session terminated"))


class UpstreamTool(ProxyTool):
    """A proxied tool whose backend call is timed and classified by its Upstream."""

    listed: ClassVar[bool] = True  # from the upstream's listing (its schemas known)

    async def run(self, arguments: dict[str, Any], context: Context | None = None) -> ToolResult:
        upstream: Upstream = proxy_tool_client_factory(self).__self__
        try:
            return await upstream.guarded(lambda: upstream.call(self, arguments, context))
        except CredentialError as error:  # calls only (not listings): ask URL-capable clients to open the link
            await offer_link(error, timeout=min(upstream.config.timeout, 10.0))
            raise


class UnlistedUpstreamTool(UpstreamTool):
    """A tool of an upstream that is down, called on the chance it exists: through the Client (whose session
    lists the tools first, to check the result against the tool's output schema)."""

    listed: ClassVar[bool] = False


class UpstreamProvider(ProxyProvider):
    """FastMCP's ProxyProvider with guarded listings, a last-known tool cache and health."""

    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream.client_factory, cache_ttl=upstream.config.health_interval)
        self.upstream = upstream
        # The listings in flight that calls and clients share, by kind (tools, prompts, ...): one for a shared
        # credential, one per user for per-user ones (a listing made with one user's credential, failing, must
        # not fail another user's call).
        self._refreshing: dict[tuple[str, tuple[str, str] | None], asyncio.Task[Sequence[Any]]] = {}

    async def refresh_tools(self) -> Sequence[Tool]:
        """List the upstream's tools now (raises UpstreamError); updates the cache and health."""

        async def work() -> Sequence[Tool]:
            client = await self._get_client()
            async with client:
                try:
                    listed = await client.list_tools()
                except MCPError as e:
                    if e.error.code == mcp_types.METHOD_NOT_FOUND:
                        return []
                    raise
            return [UpstreamTool.from_mcp_tool(self.client_factory, t) for t in listed]

        tools = await self.upstream.guarded(work, listing=True)
        self._tools_cache = proxy_cache_entry(tools, time.monotonic())
        self.upstream.health.tools = len(tools)
        return tools

    def last_listing(self) -> Sequence[Tool]:
        """The tools of the last successful listing (kept in FastMCP's cache), whether fresh or not."""
        cache = self._tools_cache
        return cache.items if cache else []

    async def _list_tools(self) -> Sequence[Tool]:
        if self.upstream.recently_failed():
            return []
        if schema_lookup_only():
            # Listed only to find the schema a call's Mcp-Param headers are checked against: the last listing
            # answers, as it answers the call's own lookup, and a stale one is listed again behind it.
            if not self._fresh():
                self.shared_refresh()
            return list(self.last_listing())
        try:
            # Listed now, for this request; requests listing at the same time (as their credential would)
            # share one listing, not one each. A slow one answers from the last listing (`_within_list_wait`).
            return await self._within_list_wait(self.shared_refresh(), self.last_listing)
        except CredentialError:
            # This caller has no usable credential: show the last-known tools, so a call can answer
            # with the link URL (tool definitions only; nothing another user called is shown).
            return list(self.last_listing())
        except UpstreamError:
            return []  # down: not listed (see module docstring); health and logs say why

    async def _get_tool(self, name: str, version: VersionSpec | None = None) -> Tool | None:
        cache = self._tools_cache
        matching = _matching(cache, name, version)
        if not self._fresh() and not self.upstream.recently_failed():
            # Stale: one listing goes out for every call that finds it so, not one per call (a burst of calls
            # as the cache expires would each list the upstream, and each wait for it). A tool in the last
            # listing is called now; one missing from it (added since?) waits for the new listing.
            refreshing = self.shared_refresh()
            if not matching:
                with contextlib.suppress(UpstreamError, CredentialError):
                    await asyncio.shield(refreshing)  # a caller that gives up does not stop it for the others
                matching = _matching(self._tools_cache, name, version)
        if matching:
            return max(matching, key=version_sort_key)
        if self.upstream.health.state != "up":
            # Down (or never reached): we cannot know whether the tool exists. Let the call try the
            # upstream, so the caller learns it is unavailable rather than reading "Unknown tool".
            return UnlistedUpstreamTool(client_factory=self.client_factory, name=name, description=None,
                                        parameters={"type": "object"})
        return None

    def _fresh(self) -> bool:
        cache = self._tools_cache
        return cache is not None and cache.is_fresh(self._cache_ttl)

    def shared_refresh(self) -> asyncio.Task[Sequence[Tool]]:
        """The caller's tool listing in flight, or a new one, made as the caller (its context: its credential
        for a per-user upstream), as an inline listing was. Its failure is recorded in health, not raised here."""
        return self._shared("tools", self.refresh_tools)

    def _shared(self, kind: str, fetch: Callable[[], Coroutine[Any, Any, Sequence[Any]]],
                ) -> asyncio.Task[Sequence[Any]]:
        key = (kind, self.upstream.listing_key())
        task = self._refreshing.get(key)
        if task is None or task.done():  # (done: its callback, which forgets it, has not run yet)
            task = self._refreshing[key] = asyncio.create_task(
                fetch(), name=f"mcp-gateway-upstream-{self.upstream.name}-{kind}-listing")
            task.add_done_callback(lambda done: self._listed(key, done))
        return task

    def _listed(self, key: tuple[str, tuple[str, str] | None], task: asyncio.Task[Sequence[Any]]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed listing has told health so (Upstream.guarded)

    async def stop_refreshing(self) -> None:
        for task in list(self._refreshing.values()):
            await cancel_and_wait(task)

    async def _within_list_wait(self, listing: asyncio.Task[Sequence[Any]],
                                last: Callable[[], Sequence[Any]]) -> Sequence[Any]:
        """A client's list waits for this upstream's listing `list_wait` seconds at most. Past that the listing
        goes on behind the answer (shared, within `timeout`), and the answer has what the last listing had
        while the upstream was last seen up, or nothing of it: a hung upstream delays no one's list by more."""
        try:
            return await asyncio.wait_for(asyncio.shield(listing), self.upstream.config.list_wait)
        except TimeoutError:
            return list(last()) if self.upstream.health.state == "up" else []

    async def _guarded_list(self, kind: str, fetch: Callable[[], Awaitable[Sequence[Any]]]) -> Sequence[Any]:
        if self.upstream.recently_failed():
            return []
        listing = self._shared(kind, lambda: self.upstream.guarded(fetch, listing=True))
        try:
            if _looking_up.get():  # a prompts/get or resources/read: the listing is what finds it, so wait
                return await asyncio.shield(listing)
            # A client's list. FastMCP maps "method not found" to []; it keeps no usable last listing of these:
            # a slow one is left out of the answer until it comes back.
            return await self._within_list_wait(listing, list)
        except (UpstreamError, CredentialError):
            return []

    async def _list_resources(self) -> Sequence[Any]:
        return await self._guarded_list("resources", super()._list_resources)

    async def _list_resource_templates(self) -> Sequence[Any]:
        return await self._guarded_list("resource-templates", super()._list_resource_templates)

    async def _list_prompts(self) -> Sequence[Any]:
        return await self._guarded_list("prompts", super()._list_prompts)

    # FastMCP's lookups of one prompt or resource list them all when its last listing is old.
    async def _get_prompt(self, name: str, version: VersionSpec | None = None) -> Any:
        with _lookup():
            return await super()._get_prompt(name, version)

    async def _get_resource(self, uri: str, version: VersionSpec | None = None) -> Any:
        with _lookup():
            return await super()._get_resource(uri, version)

    async def _get_resource_template(self, uri: str, version: VersionSpec | None = None) -> Any:
        with _lookup():
            return await super()._get_resource_template(uri, version)

    def __repr__(self) -> str:
        return f"UpstreamProvider({self.upstream.name!r})"


_looking_up: contextvars.ContextVar[bool] = contextvars.ContextVar("mcp_gateway_upstream_lookup", default=False)


@contextlib.contextmanager
def _lookup() -> Iterator[None]:
    """Listings made inside find one prompt or resource: they wait for the upstream (within `timeout`)."""
    token = _looking_up.set(True)
    try:
        yield
    finally:
        _looking_up.reset(token)


def _matching(cache: Any, name: str, version: VersionSpec | None) -> list[Tool]:
    """The versions of tool `name` in a listing cache (FastMCP's `_CacheEntry`, or None) that `version` admits."""
    matching = [t for t in (cache.items if cache else []) if t.name == name]
    if version:
        matching = [t for t in matching if version.matches(t.version)]
    return matching


# -- wiring ------------------------------------------------------------------------------------


class Upstreams:
    """Every configured upstream; a Component (gateway.wiring): health loops run between start and stop."""

    name = "upstreams"

    def __init__(self, configs: Sequence[UpstreamConfig], *, direct_calls: bool = True) -> None:
        self.items = [Upstream(c, direct_calls=direct_calls) for c in configs]

    def mount(self, mcp: FastMCP) -> None:
        for upstream in self.items:
            mcp.add_provider(upstream.provider, namespace=upstream.name)

    async def start(self) -> None:
        for upstream in self.items:
            upstream.start()

    async def stop(self) -> None:
        await asyncio.gather(*(u.stop() for u in self.items), return_exceptions=True)

    async def ready(self) -> dict[str, Any]:
        """Per-upstream health for /ready. Never fails readiness: the gateway serves the rest."""
        return {u.name: u.status() for u in self.items}

    def health_states(self) -> dict[str, str]:
        """{upstream name: "up" | "down" | "unknown"}, for metrics."""
        return {u.name: u.health.state for u in self.items}

