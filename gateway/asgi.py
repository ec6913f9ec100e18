"""Small pieces of plain ASGI that several middlewares share: one definition each."""

from __future__ import annotations

import re

from starlette.types import Message, Receive, Scope, Send


def header(scope: Scope | Message, name: bytes) -> str | None:
    """The first value of header `name` (lower case) of a request scope or a response-start message."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class ResponseStatus:
    """A `send` that passes every message on and remembers the response's status (0 until it starts)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


# The session id a legacy SSE stream announces in its first event (`/messages/?session_id=<32 hex>`).
SSE_SESSION_ID = re.compile(rb"session_id=([0-9a-fA-F]{32})")


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for whoever reads the request after the fast path: the body once, then the connection."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
