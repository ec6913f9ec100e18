"""503 + Retry-After when a token can only be judged by a database that does not answer in time.

A 401 would tell the client its credentials are bad (OAuth clients drop them, people go and ask for a
new token); an unreachable, hung or exhausted database says nothing about the token. So a
`StoreUnavailable` raised while authenticating becomes 503 with Retry-After and a one-line body.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.errors import StoreUnavailable

UNAVAILABLE_DESCRIPTION = ("The gateway cannot check this token right now: its database is slow or unreachable. "
                           "Your token was not refused; retry after the number of seconds in Retry-After.")


def unavailable_body() -> bytes:
    return json.dumps({"error": "temporarily_unavailable", "error_description": UNAVAILABLE_DESCRIPTION}).encode()


class StoreUnavailableResponse:
    """ASGI middleware: `StoreUnavailable` from the app inside -> 503 + Retry-After (if nothing was sent yet)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except StoreUnavailable as exc:
            if started:
                raise
            body = unavailable_body()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(exc.retry_after).encode()), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body, "more_body": False})
