"""A proxied `tools/call` to a streamable-HTTP upstream, posted directly on the upstream's open session.

The SDK client sends every request through a chain of memory streams, a dispatcher, a writer task and a
task per POST; for the one request the gateway makes per proxied call that costs several times the
gateway's own work on a call. Here the call is one POST with the session's own httpx client (its
connection pool, headers and auth, the per-user credential among them), and its answer is read as the
SDK reads it:

- what goes out is what the SDK session would send: the request built from the same models, stamped by the
  session itself (protocol version header, and in the 2026-07-28 era the `_meta` envelope and the
  Mcp-Method / Mcp-Name / Mcp-Param-* headers), the session id, a progress token, trace context;
- what comes back becomes what the SDK would produce: the result validated by the session's own parser and
  output-schema check; HTTP statuses and JSON-RPC errors become the same `MCPError`s (so
  gateway.mcp.upstreams classifies, retries a stale session and updates health exactly as before).

Everything else stays with the SDK `Client`: connecting (initialize / discover), listings, resources,
prompts, stdio and SSE upstreams, and any call this path does not take on (`NotDirect`, raised before
anything is sent): a handshake-era session whose POSTs are answered with SSE streams (the server may send
requests mid-call), a multi-round-trip continuation, a redirect. An SSE answer that arrives anyway (in the
2026-07-28 era a server streams only when it has progress to send) is read to its response; notifications are
only logged, as the SDK client's default handlers do; a server request is answered as the SDK client answers
one it has no handler for.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx2
import mcp_types
from fastmcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import mcp_param_headers
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError as PydanticValidationError

from fastmcp_private import call_tool_result, mcp_http_client, stamp_request
from gateway.mcp.upstream_http import RawPost

log = logging.getLogger("mcp_gateway.upstreams")

# Ids of our own requests: far above what the SDK's dispatcher allocates on the same session (it counts from 0),
# so the two never collide on one session.
_ids = itertools.count(1 << 40)
_ACCEPT = "application/json, text/event-stream"
_background: set[asyncio.Task[None]] = set()
# What the SDK client answers a server request when it has no handler for it (mcp/client/session.py defaults).
_NOT_SUPPORTED = {"sampling/createMessage": "Sampling not supported", "elicitation/create": "Elicitation not supported",
                  "roots/list": "List roots not supported"}


class NotDirect(Exception):
    """This call is not one the direct path takes; nothing was sent, the SDK client makes it."""


class StreamedSession(NotDirect):
    """The session's POSTs are answered with SSE streams (a handshake-era session of an SSE-mode server)."""


class SessionHttp:
    """The httpx client factory of one streamable-HTTP transport: builds each session's client as the SDK would
    without a factory, and remembers the newest one, whether the upstream answers POSTs with JSON, and (where
    it sends the same) a `RawPost` for the session's direct calls.

    A transport's sessions are opened one at a time (the upstream's connect lock; a per-user client is connected
    once), so the newest client is the open session's.
    """

    def __init__(self, url: str, *, raw: bool = True) -> None:
        self.url = url
        self.client: httpx2.AsyncClient | None = None
        self.raw: RawPost | None = None
        self.json_answers = False
        self._use_raw = raw

    def __call__(self, headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                 auth: httpx2.Auth | None = None, **_: Any) -> httpx2.AsyncClient:
        client: httpx2.AsyncClient = mcp_http_client(headers, timeout, auth)
        client.event_hooks["response"].append(self._watch)
        if self.raw is not None:
            self.raw.close()
        self.raw = RawPost(self.url, client, auth) if self._use_raw and RawPost.usable(self.url, auth) else None
        self.client = client
        self.json_answers = False
        return client

    async def _watch(self, response: httpx2.Response) -> None:
        # initialize / server/discover are POSTs too: the session's first answer says how the server answers.
        if response.request.method == "POST" and response.status_code == 200:
            self.json_answers = response.headers.get("content-type", "").startswith("application/json")


class _Answer:
    """An HTTP answer, from httpx or RawPost, as `_answer` reads it."""

    def __init__(self, status: int, headers: Mapping[str, str], chunks: Callable[[], AsyncIterator[bytes]],
                 read: Callable[[], Awaitable[bytes]]) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks
        self.read = read


async def call_tool(client: Client, http: SessionHttp, name: str, arguments: dict[str, Any],
                    meta: dict[str, Any] | None, header_map: Mapping[tuple[str, ...], str]
                    ) -> mcp_types.CallToolResult | mcp_types.InputRequiredResult:
    """`tools/call` on the client's open session, as `ClientSession.call_tool` would make it (see module doc).

    Raises NotDirect before sending anything it does not take on; otherwise what the SDK path raises:
    `MCPError` for JSON-RPC errors and HTTP error statuses, httpx errors, pydantic's ValidationError,
    RuntimeError for a result that breaks the tool's output schema.
    """
    session = client.session
    transport = client.transport
    sender = http.client
    if sender is None or sender.is_closed:
        raise NotDirect
    modern = session.protocol_version in MODERN_PROTOCOL_VERSIONS
    if not modern and not http.json_answers:  # (a 2026-07-28 server sends no requests mid-call: streams are read)
        raise StreamedSession
    url: str = transport.url  # type: ignore[attr-defined]
    session_id = transport.get_session_id()
    request_id = next(_ids)
    data = mcp_types.CallToolRequest(params=mcp_types.CallToolRequestParams(
        name=name, arguments=arguments, _meta=meta)).model_dump(by_alias=True, mode="json", exclude_none=True)
    stamped = stamp_request(session, data)
    params: dict[str, Any] = data["params"]
    out_meta = dict(params.get("_meta") or {})  # trace context: injected by the caller, as ProxyTool does
    out_meta["progressToken"] = request_id  # the SDK always asks for progress (its handler logs it)
    params["_meta"] = out_meta
    headers = {"accept": _ACCEPT, "content-type": "application/json"}
    if session_id:
        headers["mcp-session-id"] = session_id
    headers.update(stamped)
    if header_map and modern:
        headers.update(mcp_param_headers(header_map, arguments))
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params},
                      ensure_ascii=False, separators=(",", ":")).encode()
    lost: httpx2.TransportError | None = None
    try:
        raw = http.raw
        if raw is not None:
            response = await raw.post(headers, body)
            try:
                answer = _Answer(response.status, response.headers, response.chunks, response.read)
                result = await _answer(answer, request_id, session_id, sender, url, headers)
            finally:
                raw.release(response)
        else:
            sent = await sender.send(sender.build_request("POST", url, content=body, headers=headers), stream=True)
            try:
                answer = _Answer(sent.status_code, sent.headers, sent.aiter_bytes, sent.aread)
                result = await _answer(answer, request_id, session_id, sender, url, headers)
            finally:
                await sent.aclose()
    except anyio.get_cancelled_exc_class():
        if not modern:  # 2026-07-28: closing the stream is the cancellation
            _cancel_later(sender, url, headers, request_id)
        raise
    except (httpx2.TimeoutException, httpx2.ConnectError):
        raise  # the upstream's timeout; not connected, so certainly not run (the caller retries once)
    except httpx2.TransportError as exc:
        lost = exc
    if lost is not None:
        # Lost mid-request (it may have run): as the SDK's POST task dying, whose dispatcher then fails the
        # request as "Connection closed". Raised outside the handler: nothing in its chain says "not delivered".
        log.debug("upstream POST failed: %s", lost)
        raise MCPError(mcp_types.CONNECTION_CLOSED, "Connection closed")
    parsed = call_tool_result(session, result)
    if isinstance(parsed, mcp_types.CallToolResult) and not parsed.is_error:
        await session.validate_tool_result(name, parsed)
    if not isinstance(parsed, mcp_types.CallToolResult | mcp_types.InputRequiredResult):  # a claimed result
        raise NotDirect  # never: the gateway's clients register no result claims
    return parsed


async def _answer(response: _Answer, request_id: int, session_id: str | None, sender: httpx2.AsyncClient,
                  url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The result of our request from its HTTP answer, or the MCPError the SDK would raise for it."""
    status = response.status
    if status == 202:
        raise MCPError(mcp_types.INVALID_REQUEST, "server answered a request with 202 Accepted")
    if status in (301, 302, 303, 307, 308) and "location" in response.headers:
        raise NotDirect  # answered with a redirect, not run: the SDK follows it (same origin) or refuses it
    content_type = response.headers.get("content-type", "").lower()
    if status >= 400:
        if content_type.startswith("application/json"):
            try:
                parsed = mcp_types.jsonrpc_message_adapter.validate_json(await response.read(), by_name=False)
                if isinstance(parsed, mcp_types.JSONRPCError):
                    raise MCPError.from_error_data(parsed.error)
            except (httpx2.StreamError, PydanticValidationError):
                pass
        if status == 404:
            if session_id is None:
                raise MCPError(mcp_types.METHOD_NOT_FOUND, "Not Found")
            raise MCPError(mcp_types.INVALID_REQUEST, "Session terminated")
        raise MCPError(mcp_types.INTERNAL_ERROR, "Server returned an error response")
    if content_type.startswith("application/json"):
        try:
            message = mcp_types.jsonrpc_message_adapter.validate_json(await response.read(), by_name=False)
        except (httpx2.StreamError, PydanticValidationError) as exc:
            raise MCPError(mcp_types.PARSE_ERROR, f"Failed to parse JSON response: {exc}") from None
    elif content_type.startswith("text/event-stream"):
        message = await _from_stream(response, request_id, sender, url, headers)
    else:
        raise MCPError(mcp_types.INVALID_REQUEST, f"Unexpected content type: {content_type}")
    if isinstance(message, mcp_types.JSONRPCError):
        raise MCPError.from_error_data(message.error)
    if not isinstance(message, mcp_types.JSONRPCResponse):
        raise MCPError(mcp_types.PARSE_ERROR, "Failed to parse JSON response: not a response")
    if message.id != request_id:
        raise MCPError(mcp_types.PARSE_ERROR, f"Failed to parse JSON response: the answer is to {message.id!r}")
    return dict(message.result)


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event (the fields the MCP transports use)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    event, data = "", list[str]()
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            line = line.removesuffix("\r")
            if not line:
                if data or event:
                    yield event or "message", "\n".join(data)
                event, data = "", []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


async def _from_stream(response: _Answer, request_id: int, sender: httpx2.AsyncClient, url: str,
                       headers: dict[str, str]) -> mcp_types.JSONRPCMessage:
    """Our response out of an SSE answer; notifications are dropped (the SDK client only logs them), server
    requests are answered as the SDK client answers them without handlers."""
    async for event, data in _events(response.chunks()):
        if event != "message" or not data:
            continue
        try:
            message = mcp_types.jsonrpc_message_adapter.validate_json(data, by_name=False)
        except PydanticValidationError as exc:
            raise MCPError(mcp_types.PARSE_ERROR, f"Failed to parse SSE message: {exc}") from None
        if isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
            message.id = request_id  # as the SDK does: the stream belongs to our request
            return message
        if isinstance(message, mcp_types.JSONRPCRequest):
            await _decline(sender, url, headers, message)
        elif isinstance(message, mcp_types.JSONRPCNotification):
            log.debug("upstream notification during a call: %s", message.method)
    raise MCPError(mcp_types.CONNECTION_CLOSED, "SSE stream ended without a response")


async def _decline(sender: httpx2.AsyncClient, url: str, headers: dict[str, str],
                   request: mcp_types.JSONRPCRequest) -> None:
    if request.method == "ping":
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request.id, "result": {}}
    else:
        message = _NOT_SUPPORTED.get(request.method)
        code = mcp_types.INVALID_REQUEST if message else mcp_types.METHOD_NOT_FOUND
        answer = {"jsonrpc": "2.0", "id": request.id, "error": {"code": code, "message": message or "Method not found"}}
    try:
        await sender.post(url, json=answer, headers=_unrouted(headers))
    except httpx2.HTTPError as exc:
        log.debug("answering an upstream request failed: %s", exc)


def _cancel_later(sender: httpx2.AsyncClient, url: str, headers: dict[str, str], request_id: int) -> None:
    """The courtesy `notifications/cancelled` the SDK sends for an abandoned handshake-era request, in the
    background (the caller is being cancelled)."""

    async def send() -> None:
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": request_id, "reason": "caller cancelled"}}
        try:
            with anyio.fail_after(5):
                await sender.post(url, json=note, headers=_unrouted(headers))
        except Exception as exc:  # best effort, as the SDK's
            log.debug("courtesy cancel failed: %s", exc)

    task = asyncio.get_running_loop().create_task(send(), name="mcp-gateway-upstream-cancel")
    _background.add(task)
    task.add_done_callback(_background.discard)


def _unrouted(headers: dict[str, str]) -> dict[str, str]:
    """The call's headers for another message on its session: without the call's own routing headers."""
    return {k: v for k, v in headers.items() if k.lower() not in ("mcp-method", "mcp-name")}
