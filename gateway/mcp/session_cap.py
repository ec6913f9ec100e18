"""A cap on the protocol sessions one principal holds open (MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL).

The MCP SDK allows 10,000 sessions per process, for everyone together: one member opening them all
locked every other tenant out (503). This ASGI middleware, mounted inside FastMCP's HTTP apps (after
authentication, before the SDK), counts per principal:

- handshake-era Streamable HTTP sessions (`initialize` without `Mcp-Session-Id`, answered < 400 with a
  new `Mcp-Session-Id`), and
- legacy SSE connections (`GET /sse`: the session lives exactly as long as that stream).

2026-07-28 requests carry no session and are not counted.

A request that would open one more session than the cap gets HTTP 429, `Retry-After`, and a JSON-RPC
error telling the client to reuse or close (DELETE) sessions. Before refusing, the principal's own
session idle longest is ended if it has been idle (no request in flight, no open stream) for at least
`reap_after` seconds: a capped principal pays with its own forgotten sessions, never with anyone
else's. A reaped session answers 404 from then on (clients start a new one) and its analytics session
ends as `timeout`.

Which sessions are still open is the SDK session manager's knowledge, not ours: it forgets a session on
DELETE, on its idle timeout, on a transport failure and at shutdown, with no hook for any of them. So a
Streamable HTTP session counts while the manager holds its id (`fastmcp_private.open_session_ids`: private
in mcp 2.3, pinned by tests/test_fastmcp_private.py). Should the manager ever be out of reach, the count
falls back to our own view: a session counts until it has been idle for the SDK's idle timeout. Entries of
ended sessions are dropped when the principal's sessions are counted and in a sweep every minute, so
nothing grows without bound. Counts are per process: N replicas allow N x the cap per principal.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import fastmcp_private
from auth import Principal
from auth.provider import principal_from_access_token
from gateway.asgi import SSE_SESSION_ID, ResponseStatus, header
from gateway.tracking.middleware import ClientInfo

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("mcp_gateway.sessions")

Kind = Literal["mcp", "sse"]
TOO_MANY_SESSIONS = -32000  # JSON-RPC server error; `data.error` says which
SWEEP_EVERY = 60.0


@dataclass(slots=True)
class _Open:
    kind: Kind
    last_active: float
    in_flight: int = 0
    stop: Callable[[], None] | None = None  # ends a legacy SSE stream (its session)


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    victim: tuple[str, _Open] | None = None  # a session to end first, to make room
    open: int = 0
    retry_after: int = 0


class SessionCap:
    """Per-principal count of open protocol sessions, and the admission decision."""

    def __init__(self, limit: int, reap_after: float, idle_timeout: float, *,
                 on_reaped: Callable[[Principal, Kind, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.reap_after = reap_after
        self.idle_timeout = idle_timeout
        self.on_reaped = on_reaped
        self._clock = clock
        self._open: dict[str, dict[str, _Open]] = {}   # principal key -> protocol session id -> state
        self._opening: dict[str, int] = {}             # principal key -> admitted, not answered yet
        self._holder: Any = None                       # FastMCP's ASGI app that holds the session manager
        self._warned = False
        self._next_sweep = clock() + SWEEP_EVERY

    def middleware(self, kind: Kind) -> Middleware:
        """For `mcp.http_app(middleware=[...])`: runs after FastMCP's authentication, before the SDK."""
        return Middleware(SessionCapMiddleware, cap=self, kind=kind)

    # -- what is open -------------------------------------------------------------------------------

    def bind(self, app: Any) -> None:
        """Find the SDK session manager's holder in FastMCP's Streamable HTTP app (once)."""
        if self._holder is None and app is not None:
            self._holder = fastmcp_private.find_session_holder(app)

    def _manager(self) -> Any:
        return getattr(self._holder, "session_manager", None)

    def _sdk_sessions(self) -> Collection[str] | None:
        sessions = fastmcp_private.open_session_ids(self._manager())
        if sessions is not None:
            return sessions
        if self._holder is not None and not self._warned:
            self._warned = True
            log.warning("session cap: the SDK session manager's session table is not readable;"
                        " counting sessions as open until idle for the idle timeout")
        return None

    def _alive(self, session_id: str, state: _Open, sdk: Collection[str] | None, now: float) -> bool:
        if state.kind == "sse":
            return True  # removed when its stream ends
        if sdk is not None:
            return session_id in sdk
        return state.in_flight > 0 or now - state.last_active < self.idle_timeout

    def live(self, key: str, now: float | None = None) -> dict[str, _Open]:
        """The principal's open sessions, pruned of those that ended."""
        sessions = self._open.get(key)
        if not sessions:
            return {}
        now = self._clock() if now is None else now
        sdk = self._sdk_sessions()
        for session_id in [s for s, state in sessions.items() if not self._alive(s, state, sdk, now)]:
            del sessions[session_id]
        if not sessions:
            del self._open[key]
        return sessions

    def count(self, key: str) -> int:
        return len(self.live(key)) + self._opening.get(key, 0)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY
        for key in list(self._open):
            self.live(key, now)

    def __len__(self) -> int:
        return sum(len(s) for s in self._open.values())

    # -- admission ----------------------------------------------------------------------------------

    def admit(self, principal: Principal) -> Admission:
        """Admit one more session (counted as opening until `opened`/`not_opened`), making room by
        reaping the principal's longest-idle session if needed. Synchronous: no race between checks."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key = principal.key
        live = self.live(key, now)
        count = len(live) + self._opening.get(key, 0)
        victim: tuple[str, _Open] | None = None
        if count >= self.limit:
            idle = [(state.last_active, session_id) for session_id, state in live.items()
                    if state.in_flight == 0 and now - state.last_active >= self.reap_after]
            if not idle:
                waits = [state.last_active + self.reap_after - now for state in live.values() if state.in_flight == 0]
                retry = min(waits) if waits else self.reap_after
                return Admission(False, open=count, retry_after=max(1, math.ceil(retry)))
            _, session_id = min(idle)
            victim = (session_id, live.pop(session_id))
        self._opening[key] = self._opening.get(key, 0) + 1
        return Admission(True, victim=victim, open=count)

    def opened(self, principal: Principal, session_id: str | None, kind: Kind,
               stop: Callable[[], None] | None = None) -> None:
        """The opening request was answered: `session_id` is open now (None: nothing was opened)."""
        key = principal.key
        left = self._opening.get(key, 1) - 1
        if left > 0:
            self._opening[key] = left
        else:
            self._opening.pop(key, None)
        if session_id is not None:
            self._open.setdefault(key, {})[session_id] = _Open(kind, self._clock(), stop=stop)

    def begin(self, key: str, session_id: str) -> _Open | None:
        """A request for an open session of principal `key` starts: not idle while it is in flight."""
        state = self._open.get(key, {}).get(session_id)
        if state is not None:
            state.in_flight += 1
        return state

    def end(self, key: str, session_id: str, state: _Open | None, gone: bool) -> None:
        """That request ended; `gone` when it ended the session (DELETE) or found it ended (404)."""
        if state is not None:
            state.in_flight -= 1
            state.last_active = self._clock()
        if gone:
            self.forget(key, session_id)

    def forget(self, key: str, session_id: str) -> None:
        sessions = self._open.get(key)
        if sessions is not None:
            sessions.pop(session_id, None)
            if not sessions:
                del self._open[key]

    async def reap(self, principal: Principal, session_id: str, state: _Open) -> None:
        """End a capped principal's idle session to make room for a new one."""
        log.info("session cap: ending idle %s session of %s to admit a new one", state.kind, principal.key)
        if self.on_reaped is not None:
            try:
                self.on_reaped(principal, state.kind, session_id)
            except Exception:  # tracking must never block admission
                log.exception("session cap: on_reaped failed")
        if state.kind == "sse":
            if state.stop is not None:
                state.stop()
            return
        # The SDK's own end of a session: its server task then discards it, and its id answers 404.
        await fastmcp_private.terminate_session(self._manager(), session_id)


class SessionCapMiddleware:
    """Pure ASGI: admits or refuses session-opening requests, watches sessions' requests."""

    def __init__(self, app: ASGIApp, cap: SessionCap, kind: Kind) -> None:
        self.app = app
        self.cap = cap
        self.kind = kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._concerns_sessions(scope):
            await self.app(scope, receive, send)  # e.g. 2026-07-28 traffic: no session to count
            return
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):  # no session opens without a principal: FastMCP answers 401
            await self.app(scope, receive, send)
            return
        # The key the SDK binds a session to (auth.provider.access_token_for: client_id = principal key).
        key = user.access_token.client_id
        if self.kind == "sse":
            posted_to = _query_param(scope, b"session_id") if scope["method"] == "POST" else None
            if posted_to is not None:  # /messages/?session_id=...: activity of an open SSE session
                await self._in_session(key, posted_to, scope, receive, send)
            else:
                await self._sse(user, scope, receive, send)
            return
        self.cap.bind(scope.get("app"))
        session_id = header(scope, b"mcp-session-id")
        if session_id is not None:
            await self._in_session(key, session_id, scope, receive, send)
        else:
            await self._opening(user, scope, receive, send)

    def _concerns_sessions(self, scope: Scope) -> bool:
        if self.kind == "sse":
            return True
        if header(scope, b"mcp-session-id") is not None:
            return True
        version = header(scope, b"mcp-protocol-version")
        # What the SDK would open a session for: a POST without id, in the handshake era.
        return scope["method"] == "POST" and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS)

    async def _opening(self, user: AuthenticatedUser, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self._admit(user, scope, receive, send)
        if principal is None:
            return
        status, new_id = 0, None

        async def watch(message: Message) -> None:
            nonlocal status, new_id
            if message["type"] == "http.response.start":
                status = message["status"]
                new_id = header(message, b"mcp-session-id")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.cap.opened(principal, new_id if 0 < status < 400 else None, "mcp")

    async def _in_session(self, key: str, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.cap.begin(key, session_id)
        watch = ResponseStatus(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            gone = watch.status == 404 or (scope["method"] == "DELETE" and 200 <= watch.status < 300)
            self.cap.end(key, session_id, state, gone)

    async def _sse(self, user: AuthenticatedUser, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.rstrip("/").endswith("/sse"):
            await self.app(scope, receive, send)
            return
        principal = await self._admit(user, scope, receive, send)
        if principal is None:
            return
        session_id: str | None = None
        started = finished = False

        async def watch(message: Message) -> None:
            nonlocal session_id, started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                finished = not message.get("more_body", False)
                if session_id is None:
                    found = SSE_SESSION_ID.search(message.get("body", b""))
                    if found:
                        session_id = found.group(1).decode()
                        self.cap.opened(principal, session_id, "sse", stop=cancel.cancel)
            await send(message)

        try:
            with anyio.CancelScope() as cancel:  # cancelled when the session is reaped
                await self.app(scope, receive, watch)
            if cancel.cancelled_caught and started and not finished:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if session_id is None:
                self.cap.opened(principal, None, "sse")
            else:
                self.cap.forget(principal.key, session_id)  # the stream is the session: it ended

    async def _admit(self, user: AuthenticatedUser, scope: Scope, receive: Receive, send: Send) -> Principal | None:
        """The principal, admitted to open one more session (counted as opening); None if refused."""
        principal = principal_from_access_token(user.access_token)
        if principal is None:  # not one of our tokens: the SDK decides, nothing to count it under
            await self.app(scope, receive, send)
            return None
        admission = self.cap.admit(principal)
        if not admission.admitted:
            await _too_many(self.cap.limit, admission)(scope, receive, send)
            return None
        if admission.victim is not None:
            await self.cap.reap(principal, *admission.victim)
        return principal


def _too_many(limit: int, admission: Admission) -> Response:
    retry = admission.retry_after
    message = (f"Too many open sessions: this user already holds {admission.open} of {limit} MCP sessions and none"
               f" has been idle long enough to be closed for you. Reuse an open session, or close the ones you no"
               f" longer need (HTTP DELETE with their Mcp-Session-Id); retry in {retry} s.")
    body = {"jsonrpc": "2.0", "id": None,
            "error": {"code": TOO_MANY_SESSIONS, "message": message,
                      "data": {"error": "too_many_sessions", "limit": limit, "open": admission.open,
                               "retry_after_seconds": retry}}}
    return Response(json.dumps(body), status_code=429, media_type="application/json",
                    headers={"Retry-After": str(retry)})


def _query_param(scope: Scope, name: bytes) -> str | None:
    for part in scope.get("query_string", b"").split(b"&"):
        key, _, value = part.partition(b"=")
        if key == name and value:
            return value.decode("latin-1")[:64]
    return None


def session_cap_from(settings: Settings, on_session_end: Callable[[str, str], object],
                     on_protocol_session_reaped: Callable[[str, str], None] | None = None) -> SessionCap:
    """The cap for this app; a reaped session's analytics session ends as `timeout`, and a reaped
    Streamable HTTP session is ended for every process (`on_protocol_session_reaped(tenant, id)`)."""

    def reaped(principal: Principal, kind: Kind, session_id: str) -> None:
        client = ClientInfo(None, None, None, "sse" if kind == "sse" else "streamable-http", session_id[:200])
        on_session_end(client.key_for(principal), "timeout")
        if kind == "mcp" and on_protocol_session_reaped is not None:
            on_protocol_session_reaped(principal.tenant_id, session_id)

    return SessionCap(settings.max_sessions_per_principal, settings.session_reap_after,
                      settings.session_idle_timeout, on_reaped=reaped)
