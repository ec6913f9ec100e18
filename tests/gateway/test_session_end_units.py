"""SessionEndWatcher as a plain ASGI wrapper, in process: which exchanges end which analytics session."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.types import Message, Receive, Scope, Send

from auth import Principal
from auth.provider import access_token_for
from gateway.tracking.middleware import ClientInfo
from gateway.tracking.session_end import SessionEndWatcher

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat")


def key(transport: str, protocol_session_id: str) -> str:
    """The analytics session key the tracker uses for Alice's protocol session (a hash of its parts)."""
    return ClientInfo(None, None, None, transport, protocol_session_id).key_for(ALICE)
SSE_ID = "0123456789abcdef0123456789abcdef"


def app_answering(status: int, body: bytes = b"", *, raise_after: Exception | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["user"] = AuthenticatedUser(access_token_for("t", ALICE))  # what the auth middleware sets
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})
        if raise_after is not None:
            raise raise_after

    return app


async def call(watcher: SessionEndWatcher, method: str, headers: list[tuple[bytes, bytes]]) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    await watcher({"type": "http", "method": method, "path": "/mcp", "headers": headers}, receive, send)


async def test_a_successful_delete_ends_the_session() -> None:
    ended: list[tuple[str, str]] = []
    watcher = SessionEndWatcher(app_answering(200), lambda key, reason: ended.append((key, reason)), "mcp")
    await call(watcher, "POST", [(b"mcp-session-id", b"abc")])
    assert ended == []
    await call(watcher, "DELETE", [(b"mcp-session-id", b"abc")])
    assert ended == [(key("streamable-http", "abc"), "client_disconnect")]


async def test_a_refused_delete_or_one_without_a_session_ends_nothing() -> None:
    ended: list[tuple[str, str]] = []
    await call(SessionEndWatcher(app_answering(404), lambda k, r: ended.append((k, r)), "mcp"), "DELETE",
               [(b"mcp-session-id", b"abc")])
    await call(SessionEndWatcher(app_answering(200), lambda k, r: ended.append((k, r)), "mcp"), "DELETE", [])
    assert ended == []


async def test_a_transport_error_ends_the_session_with_its_type() -> None:
    ended: list[tuple[str, str]] = []
    watcher = SessionEndWatcher(app_answering(200, raise_after=ConnectionResetError()),
                                lambda key, reason: ended.append((key, reason)), "mcp")
    with pytest.raises(ConnectionResetError):
        await call(watcher, "POST", [(b"mcp-session-id", b"abc")])
    assert ended == [(key("streamable-http", "abc"), "error:ConnectionResetError")]


async def test_an_sse_stream_ends_its_announced_session() -> None:
    ended: list[tuple[str, str]] = []
    body = f"event: endpoint\r\ndata: /messages/?session_id={SSE_ID}\r\n\r\n".encode()
    watcher = SessionEndWatcher(app_answering(200, body), lambda key, reason: ended.append((key, reason)), "sse")
    await call(watcher, "GET", [])
    assert ended == [(key("sse", SSE_ID), "client_disconnect")]


async def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing(*_: Any) -> Any:
        return {}

    await SessionEndWatcher(app, lambda k, r: None, "mcp")({"type": "lifespan"}, nothing, nothing)
    assert seen == ["lifespan"]
