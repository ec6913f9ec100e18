"""A minimal HTTP/1.1 client for the direct upstream tool call: one POST on a kept-alive connection.

httpx builds a request object, runs the auth flow, event hooks, the connection pool and h11 for every
request: about a millisecond of CPU, most of what a proxied call costs the gateway. This sends the request
as one write and reads the answer with asyncio streams. It is used only where it sends what httpx would
(see `RawPost.usable`): plain `http://`, no proxy in the environment, and a bearer credential it can
write itself (none, the shared token, or the caller's own `UserBearer`, whose refusals it reports the same
way). Anything else keeps the httpx client. Failures raise the httpx exception types, with httpx's messages
where the gateway shows them, so the caller classifies them as before.
"""

from __future__ import annotations

import asyncio
import re
import select
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from fastmcp.client.auth.bearer import BearerAuth

from gateway.credentials.clients import UserBearer

_MAX_IDLE = 32  # kept-alive connections per session; more concurrent calls open more, the surplus is closed
_MAX_OPEN = 100  # connections per session at once (httpx's pool limit); further calls wait for one
_UNSAFE = re.compile(r"[\r\n\0]")


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    connection: _Connection
    chunked: bool
    length: int | None
    done: bool = False  # the body was read to its end
    reusable: bool = True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (de-chunked)."""
        reader = self.connection.reader
        try:
            if self.chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                            pass
                        break
                    data = await reader.readexactly(size)
                    await reader.readexactly(2)
                    yield data
            elif self.length is not None:
                if self.length:
                    yield await reader.readexactly(self.length)
            else:  # delimited by the connection's end
                self.reusable = False
                while data := await reader.read(65536):
                    yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError) as exc:
            self.reusable = False
            raise httpx2.RemoteProtocolError(f"upstream answer cut short ({exc.__class__.__name__})") from exc
        self.done = True

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class RawPost:
    """POSTs to one upstream URL on kept-alive connections of its own (one instance per upstream session)."""

    def __init__(self, url: str, client: httpx2.AsyncClient, auth: Any) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.auth = auth
        self.client = client  # the session's httpx client: when it is closed, the session has ended
        # The client's own headers (the configured ones, user-agent, ...) as httpx sends them; no compression.
        base = {k.lower(): v for k, v in client.headers.items() if k.lower() != "accept-encoding"}
        base.setdefault("host", parts.netloc.rsplit("@", 1)[-1])  # a configured Host wins, as with httpx
        self._base = base
        self._idle: list[_Connection] = []
        self._open = asyncio.Semaphore(_MAX_OPEN)
        self.closed = False

    @staticmethod
    def usable(url: str, auth: Any) -> bool:
        """Whether this sends what the session's httpx client would."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.username or parts.password or not parts.hostname:
            return False
        proxies = urllib.request.getproxies()
        if proxies.get("http") or proxies.get("all"):
            return False
        return auth is None or type(auth) in (BearerAuth, UserBearer)

    def _authorization(self) -> str | None:
        auth = self.auth
        if auth is None:
            return None
        if isinstance(auth, UserBearer):
            return auth.header()
        return f"Bearer {auth.token.get_secret_value()}"

    async def post(self, headers: dict[str, str], body: bytes) -> RawResponse:
        merged = dict(self._base)
        merged.update((k.lower(), v) for k, v in headers.items())
        authorization = self._authorization()
        if authorization is not None:
            merged["authorization"] = authorization
        merged["content-length"] = str(len(body))
        if _UNSAFE.search("".join(merged) + "".join(merged.values())):  # CR, LF or NUL: refused, as h11 does
            raise httpx2.LocalProtocolError("Illegal header value in the upstream request")
        fields = "".join(f"{k}: {v}\r\n" for k, v in merged.items())
        try:
            request = f"POST {self.target} HTTP/1.1\r\n{fields}\r\n".encode("latin-1") + body
        except UnicodeEncodeError as exc:
            raise httpx2.LocalProtocolError("Illegal header value in the upstream request") from exc
        await self._open.acquire()
        try:
            connection = self._take() or await self._connect()
        except BaseException:
            self._open.release()
            raise
        try:
            connection.writer.write(request)
            raw_head = await connection.reader.readuntil(b"\r\n\r\n")
            while raw_head[9:10] == b"1" and raw_head[9:12] != b"101":  # 1xx before the answer: skipped, as h11 does
                raw_head = await connection.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as exc:
            self._drop(connection)
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.") from exc
        except BaseException:
            self._drop(connection)
            raise
        try:
            response = _parse_head(raw_head, connection)
        except ValueError as exc:
            self._drop(connection)
            raise httpx2.RemoteProtocolError(f"invalid HTTP answer from the upstream ({exc})") from exc
        if isinstance(self.auth, UserBearer):
            self.auth.observe(response.status)
        return response

    def release(self, response: RawResponse) -> None:
        """Back to the idle list when the answer was read to its end, else closed."""
        connection = response.connection
        if self.client.is_closed:
            self.close()
        if response.done and response.reusable and not self.closed and len(self._idle) < _MAX_IDLE:
            self._idle.append(connection)
            self._open.release()
        else:
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.writer.close()
        self._open.release()

    def _take(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            # Closed by the server while idle (its keep-alive ran out, it restarted): not reused. An idle socket
            # with something to read has been closed even if the event loop has not seen it yet (httpcore's check).
            if connection.reader.at_eof() or connection.writer.is_closing() or _readable(connection):
                connection.writer.close()
                continue
            return connection
        return None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        except OSError as exc:
            raise httpx2.ConnectError("All connection attempts failed") from exc
        return _Connection(reader, writer)

    def close(self) -> None:
        self.closed = True
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()


def _readable(connection: _Connection) -> bool:
    sock = connection.writer.get_extra_info("socket")
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _parse_head(raw: bytes, connection: _Connection) -> RawResponse:
    lines = raw.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise ValueError(f"status line {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"header line {line[:40]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = None if chunked or "content-length" not in headers else int(headers["content-length"])
    code = int(status)
    if code < 200:
        raise ValueError(f"status {code}")  # a protocol switch: not an answer this client reads
    if code in (204, 304):
        length = 0
    reusable = headers.get("connection", "").lower() != "close"
    return RawResponse(code, headers, connection, chunked, length, reusable=reusable)
