"""The front door: a `POST /mcp` the fast path will answer, for a caller already known, taken straight to it.

Every MCP request normally passes FastMCP's whole HTTP stack before the fast path sees it: Starlette's
error and exception layers, FastMCP's request context, the Host/Origin guard, authentication, the
auth-required route, the SDK's session manager, and the gateway's session cap and session sharing. For
the request that is almost all traffic — a `tools/call` or `tools/list` whose bearer token was verified
moments ago, on a session of this process or sessionless — that is a fifth of the CPU a call costs.

The front door does the same steps, in the same order, each with the same object the stack uses:
FastMCP's own Host/Origin guard (built from the app's own middleware entry), the app's own
authentication backend (only for a token `known_good` says is already judged: no lookup, no refusal is
ever made here), the auth-required route's scope check, FastMCP's request context, the session cap's
begin/end and session sharing's local check; then the fast path answers. Anything else — another
method or path, an unknown, stale or refused token, a session another process holds or has ended, a
request the fast path would not answer — goes the whole way, with the body replayed, and is answered
exactly as before. The differential test (tests/gateway/test_fastpath.py) holds both roads to the same
answers and rows.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

import fastmcp_private
from auth.provider import GatewayTokenVerifier, principal_from_access_token
from gateway.asgi import read_body, replaying
from gateway.mcp.fastpath import Answer, FastPath, RequestHeaders
from gateway.mcp.session_cap import SessionCap
from gateway.mcp.session_sharing import SessionSharing
from gateway.tracking.session_end import SessionEndWatcher

log = logging.getLogger("mcp_gateway.front_door")


class FrontDoor:
    """ASGI app for `/mcp`: serves what it can (see the module docstring), hands the rest to `full`."""

    name = "front_door"

    def __init__(self, fast_path: FastPath, verifier: GatewayTokenVerifier, session_cap: SessionCap,
                 session_sharing: SessionSharing, *, required_scopes: list[str] | None) -> None:
        self.fast_path = fast_path
        self.verifier = verifier
        self.session_cap = session_cap
        self.session_sharing = session_sharing
        self.required_scopes = list(required_scopes or ())
        self.served = 0
        self._full: ASGIApp | None = None
        self._http_app: Any = None
        self._backend: Any = None
        self._entry: ASGIApp | None = None

    def attach(self, http_app: Any, full: SessionEndWatcher) -> None:
        """Once FastMCP's http app exists and the fast path is attached; `full` is the whole way in."""
        self._full = self.session_end = full
        if not self.fast_path.active:
            return
        self._http_app = http_app
        self._backend, guard = fastmcp_private.auth_middleware_parts(http_app)
        # FastMCP runs its Host/Origin guard before authentication; so does the front door, the same guard.
        self._entry = guard.cls(self._authenticate, *guard.args, **guard.kwargs) if guard else self._authenticate

    async def ready(self) -> dict[str, Any]:
        return {"enabled": self._entry is not None, "served": self.served}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._full is not None, "FrontDoor.attach() runs in the app's lifespan"
        if self._entry is None or scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/mcp":
            await self._full(scope, receive, send)
            return
        await self._entry(scope, receive, send)

    async def _authenticate(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._full is not None
        headers = RequestHeaders(scope)
        token = _bearer(headers.authorization)
        if (token is None or not self.verifier.known_good(token) or not headers.plain_json_post()
                or not self._within_body_limit(headers.content_length)):
            await self._full(scope, receive, send)  # answered, refused or looked up the whole way
            return
        body = await read_body(receive)
        replay = replaying(body, receive)
        # Asked again now the body is in (time passed): with nothing awaited between this test and the
        # backend's verdict, that verdict comes from memory.
        verdict = await self._backend.authenticate(HTTPConnection(scope)) if self.verifier.known_good(token) else None
        if verdict is None or any(s not in verdict[0].scopes for s in self.required_scopes):
            await self._full(scope, replay, send)
            return
        scope["auth"], scope["user"] = verdict
        await self._serve(scope, headers, body, replay, send)

    def _within_body_limit(self, content_length: str | None) -> bool:
        """Only a body of declared size within the SDK's own limit is read here (the server holds a request
        to its Content-Length); a larger or undeclared one meets the SDK's limit the whole way (413)."""
        size = _declared_size(content_length)
        return size is not None and size <= self.fast_path.manager.max_request_body_size

    async def _serve(self, scope: Scope, headers: RequestHeaders, body: bytes, receive: Receive,
                     send: Send) -> None:
        assert self._full is not None
        user: AuthenticatedUser = scope["user"]
        session_id = headers.session_id
        # As inside FastMCP's stack: the request context and the caller's identity are set while the fast
        # path decides (a tool lookup may read them) and answers.
        with fastmcp_private.http_request_scope(self._http_app, scope, user):
            answer = await self.fast_path.prepare(scope, headers, body)
            if answer is not None and session_id is not None:
                principal = principal_from_access_token(user.access_token)
                if principal is None or not self.session_sharing.serves_locally(principal, session_id):
                    answer = None
            if answer is not None:
                self.served += 1
                if session_id is None:
                    await self.fast_path.answer(answer, receive, send)
                else:
                    await self._in_session(user, session_id, answer, scope, receive, send)
                return
        await self._full(scope, receive, send)

    async def _in_session(self, user: AuthenticatedUser, session_id: str, answer: Answer, scope: Scope,
                          receive: Receive, send: Send) -> None:
        """The session cap's and the session-end watcher's part in a request for an open session."""
        key = user.access_token.client_id
        state = self.session_cap.begin(key, session_id)
        try:
            await self.fast_path.answer(answer, receive, send)
        except Exception as exc:
            self.session_end.ended(scope, session_id, f"error:{type(exc).__name__}")
            raise
        finally:
            self.session_cap.end(key, session_id, state, gone=False)


def _declared_size(content_length: str | None) -> int | None:
    if content_length is None or not (content_length.isascii() and content_length.isdigit()):
        return None
    return int(content_length)


def _bearer(authorization: str | None) -> str | None:
    """The token of a bearer Authorization header, as the SDK's BearerAuthBackend reads it."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:]
