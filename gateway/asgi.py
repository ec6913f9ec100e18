"""Small pieces of plain ASGI that several middlewares share: one definition each."""

from __future__ import annotations

import re

from starlette.types import Message, Scope, Send


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
