"""Session-end watching: a pure ASGI wrapper that tells tracking when a protocol session is gone.

FastMCP has no public "session ended" hook, and a client's HTTP DELETE never reaches its middleware,
so the end of a protocol session is read off the HTTP exchange itself:
- Streamable HTTP (`transport="mcp"`): a successful DELETE with `Mcp-Session-Id` ends that session
  (`client_disconnect`); an exception out of the app ends it as `error:<Type>`.
- Legacy SSE (`transport="sse"`): the `GET /sse` stream announces its session id in its first
  event (`/messages/?session_id=...`); the stream closing ends it (`client_disconnect`), an
  exception as `error:<Type>`.
The analytics key always begins with the authenticated principal (see gateway.tracking.middleware), so a
forged session id can at most end the forger's own session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.provider import authenticated_principal
from gateway.asgi import SSE_SESSION_ID, ResponseStatus, header
from gateway.tracking.middleware import ClientInfo

SessionEnd = Callable[[str, str], object]  # (analytics session key, disconnect reason)


class SessionEndWatcher:
    """Wraps a FastMCP transport app; calls `on_end(key, reason)` when a protocol session ends."""

    def __init__(self, app: ASGIApp, on_end: SessionEnd, transport: Literal["mcp", "sse"], *,
                 on_deleted: Callable[[Scope, str], None] | None = None) -> None:
        self.app = app
        self.on_end = on_end
        self.on_deleted = on_deleted  # a DELETE that succeeded: decided elsewhere (session sharing)
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self.transport == "sse":
            await self._sse(scope, receive, send)
        else:
            await self._mcp(scope, receive, send)

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_header = header(scope, b"mcp-session-id")
        if session_header is None:
            await self.app(scope, receive, send)
            return
        watch = ResponseStatus(send)
        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            self.ended(scope, session_header, f"error:{type(exc).__name__}")
            raise
        if scope["method"] == "DELETE" and 200 <= watch.status < 300:
            if self.on_deleted is not None:  # another process may hold the analytics session: it decides
                self.on_deleted(scope, session_header)
            else:
                self.ended(scope, session_header, "client_disconnect")

    async def _sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id: str | None = None

        async def watch(message: Message) -> None:
            nonlocal session_id
            if session_id is None and message["type"] == "http.response.body":
                found = SSE_SESSION_ID.search(message.get("body", b""))
                if found:
                    session_id = found.group(1).decode()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if session_id:
                self.ended(scope, session_id, f"error:{type(exc).__name__}")
            raise
        if session_id:
            self.ended(scope, session_id, "client_disconnect")

    def ended(self, scope: Scope, protocol_session_id: str, reason: str) -> None:
        principal = authenticated_principal(scope)
        if principal is None:
            return
        transport = "sse" if self.transport == "sse" else "streamable-http"
        client = ClientInfo(None, None, None, transport, protocol_session_id[:200])
        self.on_end(client.key_for(principal), reason)

