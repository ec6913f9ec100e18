"""The direct call's own HTTP/1.1 POST (gateway.mcp.upstream_http) against httpx, answer by answer.

A scripted server on loopback gives each canned answer; RawPost and an httpx client post the same request to
it and must read the same status, headers and body, or both fail with an httpx transport error. Also: a
connection the server closed while idle is not reused, the request carries what httpx would send, and the
SSE reader yields the same events however the stream is cut into chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.credentials.clients import UserBearer
from gateway.mcp.upstream_call import _events
from gateway.mcp.upstream_http import RawPost

BODY = '{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false,"x":"Grüße ✓"}}'.encode()


def _chunked(data: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


ANSWERS: dict[str, tuple[bytes, bool]] = {  # name: (raw answer, server closes after it)
    "content-length": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                       % (len(BODY), BODY), False),
    "chunked": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                + _chunked(BODY, 7), False),
    "until-close": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n" + BODY, True),
    "sse": (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + _chunked(b"event: message\r\ndata: {\"a\": 1}\r\n\r\ndata: " + BODY + b"\r\n\r\n", 5), False),
    "after-100": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY), False),
    "404": (b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nNot Found", False),
    "202": (b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n", False),
    "cut-short": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n" + BODY, True),
    "no-answer": (b"", True),
    "http-1.0": (b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(BODY), BODY), False),
    "bad-chunk": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", True),
    "chunked-cut": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                    + _chunked(BODY, 7)[:-20], True),
    "head-cut": (b"HTTP/1.1 200 OK\r\ncontent-type: appli", True),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True),
}


class Scripted:
    """Answers every request on a connection with the current answer; records what it received."""

    def __init__(self) -> None:
        self.answer = ANSWERS["content-length"]
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                raw, close = self.answer
                writer.write(raw)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mcp"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _raw(raw: RawPost, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
    try:
        response = await raw.post(headers, body)
        try:
            return response.status, response.headers.get("content-type"), await response.read()
        finally:
            raw.release(response)
    except httpx2.TransportError:
        return ("failed",)


async def _httpx(client: httpx2.AsyncClient, url: str, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
    try:
        response = await client.post(url, content=body, headers=headers)
        return response.status_code, response.headers.get("content-type"), response.content
    except httpx2.TransportError:
        return ("failed",)


HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json",
           "mcp-protocol-version": "2025-11-25", "mcp-session-id": "abc"}


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_raw_post_reads_each_answer_as_httpx_does(name: str) -> None:
    scripted = Scripted()
    scripted.answer = ANSWERS[name]
    async with scripted as url, httpx2.AsyncClient(headers={"X-Team": "tests"}) as client:
        raw = RawPost(url, client, UserBearer("tok-1"))
        ours = await _raw(raw, HEADERS, b'{"jsonrpc":"2.0"}')
        theirs = await _httpx(client, url, HEADERS | {"authorization": "Bearer tok-1"}, b'{"jsonrpc":"2.0"}')
        assert ours == theirs
        # the same request line and headers as httpx (no compression asked for, so bodies are plain)
        sent_raw, sent_httpx = scripted.requests[0], scripted.requests[-1]
        assert _header_set(sent_raw) == _header_set(sent_httpx) - {("accept-encoding", "gzip, deflate")}
        raw.close()


def _header_set(request: bytes) -> set[tuple[str, str]]:
    lines = request.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0] == "POST /mcp HTTP/1.1"
    return {(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])}


async def test_connections_are_reused_and_a_closed_idle_one_is_not() -> None:
    scripted = Scripted()
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, None)
        for _ in range(3):
            assert (await _raw(raw, HEADERS, b"{}"))[0] == 200
        assert scripted.connections == 1
        scripted.answer = ANSWERS["until-close"]  # the server ends the connection after this answer
        assert (await _raw(raw, HEADERS, b"{}"))[0] == 200
        scripted.answer = ANSWERS["content-length"]
        assert (await _raw(raw, HEADERS, b"{}"))[0] == 200
        assert scripted.connections == 2
        raw.close()


async def test_answer_headers_are_read_as_httpx_reads_them() -> None:
    """Lower-case names, trimmed values, a repeated header's values joined by ", " (as httpx's `headers.get`)."""
    scripted = Scripted()
    scripted.answer = (b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \r\nSet-Cookie: a=1\r\n"
                       b"X-Multi: one\r\nset-cookie: b=2\r\nX-Multi: two, three\r\ncontent-length: 2\r\n\r\n{}", False)
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, None)
        response = await raw.post(HEADERS, b"{}")
        assert await response.read() == b"{}"
        raw.release(response)
        theirs = await client.post(url, content=b"{}", headers=HEADERS)
        assert response.headers == {key: theirs.headers[key] for key in theirs.headers}
        assert response.headers["set-cookie"] == "a=1, b=2"
        raw.close()


async def test_an_http_1_0_answer_ends_its_connection() -> None:
    """HTTP/1.0 without keep-alive: the connection is not reused, even if the server leaves it open."""
    scripted = Scripted()
    scripted.answer = ANSWERS["http-1.0"]
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, None)
        for _ in range(2):
            response = await raw.post(HEADERS, b"{}")
            assert await response.read() == BODY
            assert not response.reusable
            raw.release(response)
        assert scripted.connections == 2
        raw.close()


async def test_a_refused_user_token_is_noted_as_httpx_notes_it() -> None:
    scripted = Scripted()
    scripted.answer = (b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n", False)
    async with scripted as url, httpx2.AsyncClient() as client:
        auth = UserBearer("tok-2")
        raw = RawPost(url, client, auth)
        assert (await _raw(raw, HEADERS, b"{}"))[0] == 401
        assert auth.refused_at > 0
        raw.close()


def test_raw_posts_only_where_they_send_what_httpx_would(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RawPost.usable("http://127.0.0.1:8000/mcp", None)
    assert RawPost.usable("http://up.example/mcp", UserBearer("t"))
    assert not RawPost.usable("https://up.example/mcp", None)  # TLS: httpx
    assert not RawPost.usable("http://user:pw@up.example/mcp", None)
    assert not RawPost.usable("http://up.example/mcp", httpx2.BasicAuth("a", "b"))  # an auth flow of its own
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not RawPost.usable("http://up.example/mcp", None)


async def _cut(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    last = 0
    for cut in sorted(set(cuts)):
        yield data[last:cut]
        last = cut
    yield data[last:]


SSE = ("event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n"
       ": a comment\n\ndata: line one\ndata: Grüße ✓\n\nid: 7\nevent: other\ndata: x\r\n\r\n").encode()


async def _all(chunks: AsyncIterator[bytes]) -> list[tuple[str, str]]:
    return [event async for event in _events(chunks)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SSE)), max_size=12))
def test_sse_events_do_not_depend_on_how_the_stream_is_cut(cuts: list[int]) -> None:
    events = asyncio.run(_all(_cut(SSE, cuts)))
    assert events == [("message", '{"jsonrpc":"2.0","method":"notifications/progress"}'),
                      ("message", "line one\nGrüße ✓"), ("other", "x")]


async def test_a_header_that_would_split_the_request_is_refused_before_sending() -> None:
    scripted = Scripted()
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, UserBearer("tok\r\nX-Injected: 1"))
        assert await _raw(raw, HEADERS, b"{}") == ("failed",)
        raw = RawPost(url, client, None)
        assert await _raw(raw, HEADERS | {"mcp-name": "a\nb"}, b"{}") == ("failed",)
        assert scripted.requests == []  # nothing went out
        raw.close()


async def test_failed_answers_give_their_connection_slot_back() -> None:
    """Every way an answer fails returns its slot: after more failures than there are slots, calls still go out."""
    scripted = Scripted()
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, None)
        for n in range(120):
            scripted.answer = ANSWERS[("cut-short", "no-answer", "not-http", "404")[n % 4]]
            await asyncio.wait_for(_raw(raw, HEADERS, b"{}"), 5)
        scripted.answer = ANSWERS["content-length"]
        assert (await asyncio.wait_for(_raw(raw, HEADERS, b"{}"), 5))[0] == 200
        raw.close()


async def test_a_connection_the_server_dropped_without_saying_so_is_not_reused() -> None:
    """The answer says keep-alive, the server closes anyway: the next call opens a new connection, not a
    failure (checked straight after the answer, before the event loop may have seen the close)."""
    scripted = Scripted()
    length, _ = ANSWERS["content-length"]
    scripted.answer = (length, True)
    async with scripted as url, httpx2.AsyncClient() as client:
        raw = RawPost(url, client, None)
        for _ in range(5):
            assert (await _raw(raw, HEADERS, b"{}"))[0] == 200
        assert scripted.connections == 5
        raw.close()
