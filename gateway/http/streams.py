"""End a streamed response properly when the app stops streaming it.

A server-to-client stream (a GET on /mcp, a legacy /sse connection) lasts until the client
goes or the server stops. On shutdown the MCP transport cancels its streams and returns
without the final empty body; uvicorn then logs "ASGI callable returned without completing
response" at ERROR on every normal Ctrl-C. Sending the final chunk ourselves ends the stream
cleanly for the client (a proper end of the chunked body) and keeps the log honest.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def complete_streams(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = finished = False

        async def watch(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        await app(scope, receive, watch)
        if started and not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return wrapped
