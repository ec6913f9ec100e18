"""A minimal HTTP/1.1 client for the direct upstream tool call: one POST on a kept-alive connection.

httpx builds a request object, runs the auth flow, event hooks, the connection pool and h11 for every
request: about a millisecond of CPU, most of what a proxied call costs the gateway. This keeps only the
h11 part (the protocol: framing, validation, keep-alive rules), driven as httpcore drives it, over asyncio
streams: the request goes out as one write. It is used only where it sends what httpx would (see
`RawPost.usable`): plain `http://`, no proxy in the environment, and a bearer credential it can write
itself (none, the shared token, or the caller's own `UserBearer`, whose refusals it reports the same way).
Anything else keeps the httpx client. Failures raise the httpx exception types, with httpx's messages
where the gateway shows them, so the caller classifies them as before.
"""

from __future__ import annotations

import asyncio
import select
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx2
from fastmcp.client.auth.bearer import BearerAuth

from gateway.credentials.clients import UserBearer

_MAX_IDLE = 32  # kept-alive connections per session; more concurrent calls open more, the surplus is closed
_MAX_OPEN = 100  # connections per session at once (httpx's pool limit); further calls wait for one
_READ_SIZE = 65536  # bytes asked of the socket per read (httpcore's)
_MAX_HEAD = 1 << 20  # the largest answer head (or chunk-size line) accepted before the answer is refused
_END = h11.EndOfMessage()  # h11 only reads its events, so one instance serves every request
_ILLEGAL_HEADER = "Illegal header value in the upstream request"


class _Connection:
    """One kept-alive connection: its streams and the h11 state of its request/response cycle."""

    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)

    async def next_event(self) -> Any:
        """h11's next event, reading from the socket as it needs; a socket error propagates as it is."""
        state = self.h11
        while True:
            event = state.next_event()
            if event is not h11.NEED_DATA:
                return event
            state.receive_data(await self.reader.read(_READ_SIZE))  # b"": the server closed, h11 judges when


class RawResponse:
    """The answer's status and headers; its body is read from the connection by `chunks()` / `read()`."""

    __slots__ = ("connection", "done", "headers", "reusable", "status")

    def __init__(self, status: int, headers: dict[str, str], connection: _Connection, reusable: bool) -> None:
        self.status = status
        self.headers = headers  # lower-case names; a repeated header's values joined by ", "
        self.connection = connection
        self.done = False  # the body was read to its end
        self.reusable = reusable  # the connection can carry another request once the body is read

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (de-chunked)."""
        connection = self.connection
        while True:
            try:
                event = await connection.next_event()
            except h11.RemoteProtocolError as exc:  # incl. the connection closed before the body's end
                self.reusable = False
                raise httpx2.RemoteProtocolError(f"upstream answer cut short ({exc})") from exc
            except ConnectionError as exc:
                self.reusable = False
                raise httpx2.RemoteProtocolError(f"upstream answer cut short ({exc.__class__.__name__})") from exc
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self.done = True
                return
            else:  # never from h11 mid-body; refused rather than read as the end
                self.reusable = False
                raise httpx2.RemoteProtocolError(f"upstream answer cut short ({type(event).__name__})")

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

    def _request(self, headers: dict[str, str], body: bytes) -> h11.Request:
        """The request head, checked by h11 before anything is sent (CR, LF or NUL in a header: refused)."""
        merged = dict(self._base)
        merged.update((k.lower(), v) for k, v in headers.items())
        authorization = self._authorization()
        if authorization is not None:
            merged["authorization"] = authorization
        merged["content-length"] = str(len(body))
        try:
            fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]
            return h11.Request(method=b"POST", target=self.target.encode("latin-1"), headers=fields)
        except (h11.LocalProtocolError, UnicodeEncodeError):
            # h11's message quotes the value, which may be a token: not repeated, not chained
            raise httpx2.LocalProtocolError(_ILLEGAL_HEADER) from None

    async def post(self, headers: dict[str, str], body: bytes) -> RawResponse:
        request = self._request(headers, body)
        await self._open.acquire()
        try:
            connection = self._take() or await self._connect()
        except BaseException:
            self._open.release()
            raise
        try:
            state = connection.h11
            try:
                connection.writer.write(state.send(request) + state.send(h11.Data(data=body)) + state.send(_END))
            except h11.LocalProtocolError as exc:
                raise httpx2.LocalProtocolError(str(exc)) from exc
            response = await self._head(connection)
        except BaseException:
            self._drop(connection)
            raise
        if isinstance(self.auth, UserBearer):
            self.auth.observe(response.status)
        return response

    async def _head(self, connection: _Connection) -> RawResponse:
        """The answer's head; informational (1xx) answers before it are skipped, as httpx does."""
        state = connection.h11
        while True:
            try:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    data = await connection.reader.read(_READ_SIZE)
                    if not data and state.their_state is h11.SEND_RESPONSE:
                        raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
                    state.receive_data(data)
                    continue
            except ConnectionError as exc:
                raise httpx2.RemoteProtocolError("Server disconnected without sending a response.") from exc
            except h11.RemoteProtocolError as exc:
                raise httpx2.RemoteProtocolError(f"invalid HTTP answer from the upstream ({exc})") from exc
            if type(event) is h11.Response:
                break
            # an InformationalResponse (a 101 we did not ask for is h11's RemoteProtocolError, above)
        fields: dict[str, str] = {}
        for name, value in event.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        # h11 keeps the connection unless the answer says `connection: close` or is HTTP/1.0 (our side is then
        # MUST_CLOSE); a body delimited by the connection's end (no length, not chunked) ends it too.
        framed = "content-length" in fields or "transfer-encoding" in fields or event.status_code in (204, 304)
        return RawResponse(event.status_code, fields, connection, framed and state.our_state is h11.DONE)

    def release(self, response: RawResponse) -> None:
        """Back to the idle list when both sides finished their message and may go on (as httpcore decides),
        else closed."""
        connection = response.connection
        state = connection.h11
        if self.client.is_closed:
            self.close()
        if (response.done and response.reusable and state.our_state is h11.DONE and state.their_state is h11.DONE
                and not state.trailing_data[0] and not self.closed and len(self._idle) < _MAX_IDLE):
            state.start_next_cycle()
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
            reader, writer = await asyncio.open_connection(self.host, self.port)
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
