"""Handshake-era sessions served by any worker or replica: bindings in PostgreSQL, adoption on demand.

The SDK keeps a session (Mcp-Session-Id) in the memory of the process that answered `initialize`.
Behind a load balancer without stickiness the next request of that session reaches another process,
which would answer 404. So:

- On `initialize`, before the answer (and with it the session id) leaves this process, the session's
  binding is stored in gateway.mcp_protocol_sessions: tenant, user, a hash of the principal and of the
  credential identity the SDK binds sessions to, the negotiated protocol version and the client's
  initialize params. The session id is stored only as its SHA-256.
- A request for a session this process does not hold looks the binding up under the caller's own
  tenant. Found, not ended, not idle past the timeout, and the caller is the same principal with the
  same credential identity: the session is adopted (a local, already-initialized copy; fastmcp_private/)
  and the request is served. Anything else goes to the SDK unchanged, which answers 404 exactly as it
  does for an unknown id: a hijacked id is refused on every process.
- DELETE on any process marks the binding ended; every process drops its local copy once it has re-read
  the binding (a local session's binding is re-read in the background after BINDING_CACHE seconds, so no
  request waits on the database) and answers 404. The analytics session ends once as
  `client_disconnect`, after a short grace so the calls other processes still hold in their tracking
  queues are written first.
- GET (the server-to-client stream) is adopted like any request: it carries what the process it lands
  on sends (notifications); server-to-client requests and SSE resumption (Last-Event-ID) stay per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

from psycopg.rows import class_row
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import fastmcp_private
from auth import Principal
from auth.provider import authenticated_principal
from gateway.asgi import header
from gateway.store.db import Database
from gateway.tracking.middleware import ClientInfo
from gateway.tracking.sessions import AnalyticsSessions

log = logging.getLogger("mcp_gateway.sessions")

BINDING_CACHE = 2.0   # seconds a looked-up binding is trusted (how stale a DELETE elsewhere may be seen)
TOUCH_EVERY = 60.0    # seconds between last_used_at updates of one session by one process
# An adopted copy is dropped after this long without a request (the SDK's idle timer; nothing is ended in the
# database): behind round-robin every process would otherwise keep a copy of every session for the full idle
# timeout. The next request re-adopts it from the binding.
ADOPTED_IDLE = 300.0
DB_TIMEOUT = 2.0      # seconds a binding read or write may take before the request goes on without it
DB_BACKOFF = 5.0      # after a failure, sessions this process holds are served without asking for this long


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def owner_hash(principal: Principal, requestor: str | None) -> bytes:
    return hashlib.sha256(f"{principal.key}\n{requestor or ''}".encode()).digest()


@dataclass(frozen=True)
class Binding:
    user_id: str
    owner_hash: bytes
    protocol_version: str
    init_params: dict[str, Any]
    ended: bool
    idle_seconds: float


ENDED = Binding(user_id="", owner_hash=b"", protocol_version="", init_params={}, ended=True, idle_seconds=0.0)


class _Cached(NamedTuple):
    read_at: float  # the store's clock
    binding: Binding


class BindingStore:
    """gateway.mcp_protocol_sessions through the ingest role, with a small positive cache."""

    def __init__(self, db: Database, instance_id: str, idle_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.instance_id = instance_id
        self.idle_timeout = idle_timeout
        self._clock = clock
        # Both in the order they were written, so what has expired is dropped from the front (`_expire`).
        self._cache: OrderedDict[tuple[str, bytes], _Cached] = OrderedDict()
        self._touched: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        # Ended by this process (reaped by the session cap) while the database update is on its way:
        # never adopted again here, whatever an older read of the database says.
        self._ended_here: dict[tuple[str, bytes], float] = {}

    async def record(self, principal: Principal, session_id: str, owner: bytes, protocol_version: str,
                     init_params: dict[str, Any]) -> None:
        async with self.db.as_system("ingest") as conn:
            await conn.execute(
                "INSERT INTO gateway.mcp_protocol_sessions (tenant_id, session_hash, user_id, owner_hash,"
                " protocol_version, init_params, instance_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, session_hash) DO NOTHING",
                (principal.tenant_id, session_hash(session_id), principal.user_id, owner, protocol_version,
                 json.dumps(init_params), self.instance_id))

    def cached(self, tenant_id: str, session_id: str) -> Binding | None:
        """The binding if it is known without asking the database (most requests: no query, no task)."""
        key = (tenant_id, session_hash(session_id))
        if key in self._ended_here:
            return ENDED
        now = self._clock()
        cached = self._fresh(key, now)
        if cached is None:
            return None
        # the idle time has grown since it was read: a cached binding must not look fresher than it is
        return replace(cached.binding, idle_seconds=cached.binding.idle_seconds + (now - cached.read_at))

    def known_ended(self, tenant_id: str, session_id: str) -> bool | None:
        """`cached(...).ended` (None: not known without asking the database), without building the aged
        copy of the binding: a session of this process asks this on every request."""
        key = (tenant_id, session_hash(session_id))
        if key in self._ended_here:
            return True
        cached = self._fresh(key, self._clock())
        return None if cached is None else cached.binding.ended

    def _fresh(self, key: tuple[str, bytes], now: float) -> _Cached | None:
        self._expire(now)
        cached = self._cache.get(key)
        return cached if cached is not None and now - cached.read_at < BINDING_CACHE else None

    async def lookup(self, tenant_id: str, session_id: str) -> Binding | None:
        known = self.cached(tenant_id, session_id)
        if known is not None:
            return known
        key = (tenant_id, session_hash(session_id))
        now = self._clock()
        async with self.db.as_system("ingest") as conn:
            binding = await (await conn.cursor(row_factory=class_row(Binding)).execute(
                "SELECT user_id, owner_hash, protocol_version, init_params, ended_at IS NOT NULL AS ended,"
                " extract(epoch FROM now() - last_used_at)::float8 AS idle_seconds"
                " FROM gateway.mcp_protocol_sessions WHERE tenant_id = %s AND session_hash = %s", key)).fetchone()
        if binding is None:
            self._cache.pop(key, None)  # never cache "unknown": a session just opened elsewhere must be found
            return None
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = _Cached(now, binding)
        self._cache.move_to_end(key)
        return binding

    def _expire(self, now: float) -> None:
        """Drop what can no longer be used, oldest first: a binding read BINDING_CACHE ago is read again
        anyway, and a touch that old is due again anyway. Otherwise every open session would keep its
        binding (init params and all) and its touch time until 50,000 had piled up."""
        cache, touched = self._cache, self._touched
        while cache and now - cache[next(iter(cache))].read_at >= BINDING_CACHE:
            cache.popitem(last=False)
        touch_every = min(TOUCH_EVERY, self.idle_timeout / 4)
        while touched and now - touched[next(iter(touched))] >= touch_every:
            touched.popitem(last=False)

    def ended_here(self, tenant_id: str, session_id: str) -> None:
        """This process ended the session (before `end` has reached the database)."""
        if len(self._ended_here) > 50_000:
            self._ended_here.clear()
        self._ended_here[(tenant_id, session_hash(session_id))] = self._clock()

    async def end(self, tenant_id: str, session_id: str, reason: str) -> None:
        key = (tenant_id, session_hash(session_id))
        self._cache.pop(key, None)
        self._touched.pop(key, None)
        async with self.db.as_system("ingest") as conn:
            await conn.execute(
                "UPDATE gateway.mcp_protocol_sessions SET ended_at = now(), end_reason = %s"
                " WHERE tenant_id = %s AND session_hash = %s AND ended_at IS NULL", (reason, *key))

    def due_for_touch(self, tenant_id: str, session_id: str) -> bool:
        key = (tenant_id, session_hash(session_id))
        now = self._clock()
        self._expire(now)
        if key in self._touched:  # touched less than an interval ago
            return False
        if len(self._touched) > 50_000:
            self._touched.clear()
        self._touched[key] = now  # a new key: in time order at the end
        return True

    async def touch(self, tenant_id: str, session_id: str) -> None:
        async with self.db.as_system("ingest") as conn:
            await conn.execute(
                "UPDATE gateway.mcp_protocol_sessions SET last_used_at = now()"
                " WHERE tenant_id = %s AND session_hash = %s AND ended_at IS NULL",
                (tenant_id, session_hash(session_id)))


class SessionSharing:
    """Wraps the SDK session manager's request handling (see the module docstring). A Component
    (gateway/wiring.py): attached once FastMCP's http app has started, stopped before the writer drains."""

    name = "session_sharing"  # its key in the /ready body

    def __init__(self, store: BindingStore, sessions: AnalyticsSessions, *, idle_timeout: float,
                 end_grace: float) -> None:
        self.store = store
        self.sessions = sessions
        self.idle_timeout = idle_timeout
        self.end_grace = end_grace
        self.manager: Any = None
        self.adopted = 0
        self._pending: dict[asyncio.Task[None], Callable[[], Awaitable[None]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._refreshing: set[tuple[str, str]] = set()
        self._failing_until = 0.0

    async def start(self) -> None:
        return None  # attached in the app's lifespan, once the SDK's session manager exists

    async def ready(self) -> dict[str, Any]:
        return {"adopted": self.adopted, "attached": self.manager is not None}

    def attach(self, http_app: Any) -> None:
        """Once FastMCP's http app has started (its session manager exists)."""
        self.manager = fastmcp_private.find_session_manager(http_app)
        if not fastmcp_private.is_stateless(self.manager):
            fastmcp_private.wrap_manager(self.manager, self._wrap)

    def _wrap(self, inner: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            await self._handle(inner, scope, receive, send)
        return handle

    async def _handle(self, inner: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        version = header(scope, b"mcp-protocol-version")
        principal = authenticated_principal(cast("dict[str, Any]", scope))
        if (scope["type"] != "http" or principal is None
                or (version is not None and version not in fastmcp_private.HANDSHAKE_PROTOCOL_VERSIONS)):
            await inner(scope, receive, send)  # the 2026-07-28 era is sessionless: nothing to share
            return
        session_id = header(scope, b"mcp-session-id")
        if session_id is None:
            if scope["method"] == "POST":
                await self._opening(inner, principal, scope, receive, send)
            else:
                await inner(scope, receive, send)
            return
        if fastmcp_private.holds(self.manager, session_id):
            ended = self._locally_ended(principal, session_id)
            if ended:
                await fastmcp_private.discard(self.manager, session_id)  # DELETEd on another process
        else:
            binding = self.store.cached(principal.tenant_id, session_id)
            if binding is None:
                try:
                    binding = await asyncio.wait_for(self.store.lookup(principal.tenant_id, session_id), DB_TIMEOUT)
                except Exception as exc:  # the database away: local sessions carry on; others cannot be checked
                    self._failed(exc, "lookup")
            ended = None if binding is None else binding.ended
            if binding is not None and self._may_adopt(binding, principal, scope):  # noqa: SIM102
                if await fastmcp_private.adopt(self.manager, session_id, scope, binding.protocol_version,
                                          binding.init_params, idle_timeout=min(self.idle_timeout, ADOPTED_IDLE)):
                    self.adopted += 1
                    log.info("adopted a session opened by another process",
                             extra={"event": "session_adopted", "instance": self.store.instance_id,
                                    "tenant": principal.tenant_id, "user": principal.user_id})
        self._touch_if_due(principal, session_id, ended)
        if scope["method"] == "DELETE":
            await inner(scope, receive, self._on_deleted(principal, session_id, send))
        else:
            await inner(scope, receive, send)

    def serves_locally(self, principal: Principal, session_id: str) -> bool:
        """A request for `session_id` may be served here as it is: this process holds the session and no
        other process has ended it (the bookkeeping `_handle` does for such a request is done). False: the
        request must take the whole way through `_handle` (adoption, or discarding an ended session)."""
        if self.manager is None or not fastmcp_private.holds(self.manager, session_id):
            return False
        ended = self._locally_ended(principal, session_id)
        if ended:
            return False
        self._touch_if_due(principal, session_id, ended)
        return True

    def _locally_ended(self, principal: Principal, session_id: str) -> bool | None:
        """A session of this process is served at once: whether another process has ended it (a DELETE
        there) is read in the background, and the next request here acts on it (None: not known yet)."""
        ended = self.store.known_ended(principal.tenant_id, session_id)
        if ended is None and not self._database_failing():
            self._refresh(principal.tenant_id, session_id)
        return ended

    def _touch_if_due(self, principal: Principal, session_id: str, ended: bool | None) -> None:
        """`ended` False: a binding is known and live (an unknown one is read, not touched)."""
        if ended is False and self.store.due_for_touch(principal.tenant_id, session_id):
            self._spawn(self.store.touch(principal.tenant_id, session_id))

    def _database_failing(self) -> bool:
        return time.monotonic() < self._failing_until

    def _failed(self, exc: BaseException, what: str) -> None:
        if not self._database_failing():
            log.warning("session binding %s failed (%s)", what, type(exc).__name__)
        self._failing_until = time.monotonic() + DB_BACKOFF

    def _may_adopt(self, binding: Binding, principal: Principal, scope: Scope) -> bool:
        return (not binding.ended and binding.idle_seconds < self.idle_timeout
                and binding.user_id == principal.user_id
                and binding.owner_hash == owner_hash(principal, fastmcp_private.requestor_identity(scope)))

    async def _opening(self, inner: ASGIApp, principal: Principal, scope: Scope, receive: Receive,
                       send: Send) -> None:
        """An `initialize`: store the binding before the session id is sent to the client."""
        body = bytearray()

        async def tee() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def hold_start(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = header(message, b"mcp-session-id")
                if session_id is not None:
                    await self._record(principal, scope, session_id, bytes(body))
            await send(message)

        await inner(scope, tee, hold_start)

    async def _record(self, principal: Principal, scope: Scope, session_id: str, body: bytes) -> None:
        try:
            message = json.loads(body)
            params = message.get("params") if isinstance(message, dict) else None
            if not isinstance(params, dict) or message.get("method") != "initialize":
                return
            if self._database_failing():
                return  # served by this process only; the back-off is not extended by skipping
            await asyncio.wait_for(self.store.record(
                principal, session_id, owner_hash(principal, fastmcp_private.requestor_identity(scope)),
                fastmcp_private.negotiated_version(params), params), DB_TIMEOUT)
        except Exception as exc:  # the session still works on this process; others answer 404 for it
            self._failed(exc, "record (the session is served by this process only)")

    def _on_deleted(self, principal: Principal, session_id: str, send: Send) -> Send:
        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                try:
                    await asyncio.wait_for(self.store.end(principal.tenant_id, session_id, "client_disconnect"),
                                           DB_TIMEOUT)
                except Exception as exc:
                    self._failed(exc, "end (other processes keep the session until it idles out)")
            await send(message)
        return watch

    # -- the analytics session of a DELETEd protocol session ------------------------------------

    def session_deleted(self, scope: Scope, session_id: str) -> None:
        """End the analytics session once, after the grace that lets other processes flush its calls."""
        principal = authenticated_principal(cast("dict[str, Any]", scope))
        if principal is None:
            return
        key = ClientInfo(None, None, None, "streamable-http", session_id[:200]).key_for(principal)

        async def end_now() -> None:
            if not self.sessions.end(key, "client_disconnect"):  # not open here: end it wherever it was opened
                async with self.store.db.as_system("ingest") as conn:
                    await conn.execute(
                        "UPDATE gateway.mcp_sessions SET status = 'disconnected', disconnected_at = now(),"
                        " total_duration = greatest(extract(epoch FROM now() - connected_at), 0),"
                        " disconnect_reason = 'client_disconnect'"
                        " WHERE session_key = %s AND tenant_id = %s AND status <> 'disconnected'",
                        (key, principal.tenant_id))

        async def later() -> None:
            await asyncio.sleep(self.end_grace)
            await end_now()

        task = asyncio.create_task(later(), name="mcp-gateway-session-end")
        self._pending[task] = end_now
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._pending.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("ending an analytics session failed (%s)", type(task.exception()).__name__)

    def _refresh(self, tenant_id: str, session_id: str) -> None:
        """Read a local session's binding in the background, once at a time per session."""
        key = (tenant_id, session_id)
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                await asyncio.wait_for(self.store.lookup(tenant_id, session_id), DB_TIMEOUT)
            except Exception as exc:
                self._failed(exc, "lookup")
            finally:
                self._refreshing.discard(key)
        self._spawn(refresh())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:
                log.debug("session touch failed (%s)", type(exc).__name__)
        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def session_reaped(self, tenant_id: str, session_id: str) -> None:
        """The session cap ended this protocol session here: no process adopts it again."""
        self.store.ended_here(tenant_id, session_id)
        self._spawn(self.store.end(tenant_id, session_id, "timeout"))

    async def stop(self) -> None:
        """At shutdown: the ends still waiting out their grace are done now (before the writer drains)."""
        pending = list(self._pending.items())
        for task, _ in pending:
            task.cancel()
        for task, end_now in pending:
            try:
                await task
            except asyncio.CancelledError:
                pass
            try:
                await end_now()
            except Exception as exc:
                log.warning("ending an analytics session at shutdown failed (%s)", type(exc).__name__)

