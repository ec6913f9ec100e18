"""Tracking: every governed request becomes one row, on one code path.

Governed requests ("calls") are `tools/call`, `resources/read`, `prompts/get` and
`completion/complete`: each is one `mcp_requests` row with its `method`, and `tool_name`
holds what was addressed (tool name, resource URI, prompt name, completion reference).
Discovery and housekeeping (`initialize`, `server/discover`, `ping`, the `*/list` methods,
`logging/setLevel`, notifications) are not calls and are not recorded.

`TrackingMiddleware` sees every call the gateway serves (its own tools,
mounted servers, upstreams), including those that never reach a tool body: unknown
tool, invalid arguments, denied. `track_tool_execution` decorates a user's own tool;
under the gateway it defers to the middleware (so nothing is recorded twice), and in a
server of its own it records through the same `Tracker.record_call`.

Analytics sessions are opened lazily at the first tracked call under a key made of:
- a handshake-era protocol session (Mcp-Session-Id, bound to its principal by the SDK)
  or a legacy SSE connection: tenant, user, `mcp`/`sse`, the protocol session id;
- sessionless traffic (2026-07-28 era): tenant, user, `client`, client name, version,
  continuing while gaps stay under the idle timeout.
Keys always include the authenticated principal: a forged session id can at most open a
session for the forger, never add to someone else's. The parts are JSON-encoded (so tenant
`a/b` + user `c` and tenant `a` + user `b/c` stay apart, whatever `/` or `|` they hold) and
hashed: the database keeps a SHA-256, never the identifiers or a live session id, in its index.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastmcp.server.middleware import Middleware, MiddlewareContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from auth import Principal
from auth.claimtext import MAX_CLIENT_NAME, MAX_CLIENT_VERSION, display_text, storable
from gateway.errors import AccessDenied
from gateway.logs import CallLine
from gateway.tracking.records import CallStatus, ToolCalled
from gateway.tracking.sessions import AnalyticsSessions
from gateway.tracking.writer import TrackingWriter, utcnow

log = logging.getLogger("mcp_gateway.calls")
_call_line = CallLine(log)

ERROR_MESSAGE_MAX = 500
_SECRETISH = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"
    r"|\bmcpgw_[A-Za-z0-9]+"
    r"|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|((?:password|secret|token|api[_-]?key)\s*[=:]\s*)\S+"
)

# Set while the middleware tracks a call, so the decorator knows not to record again.
_tracked_by_middleware: contextvars.ContextVar[bool] = contextvars.ContextVar("mcp_gateway_tracked", default=False)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    name: str | None
    version: str | None
    protocol_version: str | None
    transport: str | None
    protocol_session_id: str | None  # validated handshake-era / SSE session id, else None

    def key_for(self, principal: Principal) -> str:
        """The analytics session key: hex SHA-256 of an unambiguous encoding of its parts."""
        if self.protocol_session_id:
            kind = "sse" if self.transport == "sse" else "mcp"
            return session_key(principal.tenant_id, principal.user_id, kind, self.protocol_session_id)
        return session_key(principal.tenant_id, principal.user_id, "client", self.name, self.version)


@functools.lru_cache(maxsize=4096)  # asked on every call, for a handful of open sessions
def session_key(*parts: str | None) -> str:
    """JSON keeps every part whole (any `/`, `|`, quote or lone surrogate; None is not "-")."""
    encoded = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


# The log line's session id: str() of a UUID runs Python code; a call's session is one of a few open ones.
_session_text = functools.lru_cache(maxsize=4096)(str)


def redact(message: str) -> str:
    """Bounded, storable, and without anything shaped like a credential."""
    cleaned = _SECRETISH.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", message)
    return storable(cleaned[:ERROR_MESSAGE_MAX])


class Tracker:
    """Times a call, classifies its outcome, and submits the record. Never raises its own errors."""

    def __init__(self, writer: TrackingWriter, sessions: AnalyticsSessions) -> None:
        self.writer = writer
        self.sessions = sessions
        self.on_recorded: list[Callable[[ToolCalled], None]] = []  # metrics, quotas
        self.credential_modes: dict[str, str] = {}  # upstream name -> its credentials mode (set by upstreams)

    async def record_call(
        self,
        principal: Principal,
        client: ClientInfo,
        tool_name: str | None,
        arguments: Any,
        call: Callable[[], Awaitable[Any]],
        method: str = "tools/call",
    ) -> Any:
        started = time.perf_counter()
        status: CallStatus = "success"
        error: str | None = None
        result: Any = None
        token = _tracked_by_middleware.set(True)
        try:
            result = await call()
            if getattr(result, "is_error", False):
                status, error = "error", redact(_result_text(result) or "tool returned an error")
            return result
        except AccessDenied as exc:
            status, error = "denied", redact(exc.reason)
            if exc.result is not None:
                return exc.result
            if exc.public is not None:
                raise exc.public from None
            raise
        except BaseException as exc:
            status, error = "error", redact(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _tracked_by_middleware.reset(token)
            duration_ms = (time.perf_counter() - started) * 1000.0
            try:
                self._submit(principal, client, tool_name, arguments, result, status, error, duration_ms, method)
            except Exception:  # tracking must never break a call
                log.exception("tracking failed for tool %s", tool_name)

    def _submit(self, principal: Principal, client: ClientInfo, tool_name: str | None, arguments: Any,
                result: Any, status: CallStatus, error: str | None, duration_ms: float,
                method: str = "tools/call") -> None:
        session_id, key = self.sessions.session_for(principal, client)
        record = ToolCalled(
            id=uuid.uuid4(), session_id=session_id, session_key=key, tenant_id=principal.tenant_id,
            user_id=principal.user_id, tool_name=tool_name, status=status, error_message=error,
            duration_ms=duration_ms, at=utcnow(), client_type=client.name, arguments=arguments,
            result_text=_result_text(result) if status == "success" else error, method=method,
            credential_mode=self.credential_modes.get(tool_name.split("_", 1)[0]) if tool_name else None)
        self.writer.submit(record)
        # One structured line per call; never tokens, never argument values.
        _call_line("tool call", {"event": "tool_call", "method": method, "tenant": principal.tenant_id,
                                 "user": principal.user_id, "session": _session_text(session_id),
                                 "tool": tool_name, "status": status, "duration_ms": round(duration_ms, 3)})
        for hook in self.on_recorded:
            hook(record)


def _result_text(result: Any) -> str | None:
    """The text a result puts into the model's context (content blocks, else structured content;
    a resource's contents; a prompt's messages). Binary resource contents are not counted."""
    if result is None:
        return None
    parts: list[str] = []
    blocks = getattr(result, "content", None)
    if blocks is None and isinstance(getattr(result, "messages", None), list):  # a rendered prompt
        blocks = [getattr(message, "content", None) for message in result.messages]
    if blocks is None and isinstance(getattr(result, "contents", None), list):  # a resource read
        blocks = [c.content for c in result.contents if isinstance(getattr(c, "content", None), str)]
    if blocks is None:  # completion/complete: the offered values
        plain = _plain(result)
        completion = _plain(plain.get("completion")) if isinstance(plain, dict) else None
        if isinstance(completion, dict):
            blocks = [str(v) for v in completion.get("values") or []]
    for block in blocks or []:
        if isinstance(block, str):
            parts.append(block)
            continue
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            dump = getattr(block, "model_dump_json", None)
            parts.append(dump() if dump else str(block))
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        parts.append(json.dumps(result.structured_content, default=str))
    return "\n".join(parts) if parts else None


def client_info(fastmcp_context: Any) -> ClientInfo:
    """Client name/version, protocol and the validated protocol session id of the current request."""
    name = version = protocol = transport = session_header = None
    if fastmcp_context is not None:
        transport = fastmcp_context.transport
        try:
            session = fastmcp_context.session
            protocol = session.protocol_version
            params = session.client_params
            if params is not None and params.client_info is not None:
                name, version = params.client_info.name, params.client_info.version
        except RuntimeError:
            pass
        request_context = fastmcp_context.request_context
        request = getattr(request_context, "request", None) if request_context is not None else None
        if request is not None and protocol not in MODERN_PROTOCOL_VERSIONS:
            if transport == "sse":
                session_header = request.query_params.get("session_id")
            else:
                # Stateful mode: the SDK answered 404 unless this id exists and belongs to this principal.
                session_header = request.headers.get("mcp-session-id")
    raw = (name, version, protocol, transport, session_header)
    if all(value is None or (type(value) is str and len(value) <= _CACHED_TEXT) for value in raw):
        return _cleaned_client_info(*raw)
    # Anything else (a long name a client made up, a value of another type) is cleaned without the cache,
    # so that what the cache holds stays small whatever clients send.
    return _cleaned_client_info.__wrapped__(*raw)


_CACHED_TEXT = 256  # longest raw value kept as a cache key: 4,096 keys of at most five such values


@functools.lru_cache(maxsize=4096)  # the same few values on every call of a session: cleaned once
def _cleaned_client_info(name: Any, version: Any, protocol: Any, transport: Any, session_header: Any) -> ClientInfo:
    # The client names itself as it likes: display text, cleaned and bounded.
    return ClientInfo(name=display_text(name, MAX_CLIENT_NAME), version=display_text(version, MAX_CLIENT_VERSION),
                      protocol_version=_short(protocol), transport=transport,
                      protocol_session_id=_short(session_header))


def _short(value: str | None, limit: int = 200) -> str | None:
    return storable(value[:limit]) if isinstance(value, str) and value else None


class TrackingMiddleware(Middleware):
    """FastMCP middleware: the single place tool calls are recorded."""

    def __init__(self, tracker: Tracker, principal_of: Callable[[], Principal | None]) -> None:
        self.tracker = tracker
        self.principal_of = principal_of

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._record(context, call_next, "tools/call", getattr(message, "name", None),
                                  getattr(message, "arguments", None))

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        uri = getattr(context.message, "uri", None)
        return await self._record(context, call_next, "resources/read", None if uri is None else str(uri), None)

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._record(context, call_next, "prompts/get", getattr(message, "name", None),
                                  getattr(message, "arguments", None))

    async def on_request(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        if context.method != COMPLETE:  # the other methods have typed hooks, or are not calls
            return await call_next(context)
        ref, argument = completion_target(context.message)
        return await self._record(context, call_next, COMPLETE, ref, argument)

    async def _record(self, context: MiddlewareContext[Any], call_next: Any, method: str, name: str | None,
                      arguments: Any) -> Any:
        principal = self.principal_of()
        if principal is None:  # no authenticated caller (e.g. in-memory transport): nothing to attribute
            return await call_next(context)
        return await self.tracker.record_call(
            principal, client_info(context.fastmcp_context), storable(name[:500]) if name else name,
            arguments, lambda: call_next(context), method=method)


COMPLETE = "completion/complete"


def completion_target(message: Any) -> tuple[str | None, Any]:
    """(the prompt name or resource template URI a completion is for, the argument being completed)."""
    params = _plain(message)  # the outer middleware pass sees the raw params mapping
    ref = _plain(params.get("ref")) if isinstance(params, dict) else {}
    name = ref.get("name") or ref.get("uri") if isinstance(ref, dict) else None
    argument = params.get("argument") if isinstance(params, dict) else None
    return (None if name is None else str(name)), _plain(argument)


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(by_alias=True, exclude_none=True) if dump else value


# -- the decorator for users' own tools ------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])
_standalone: dict[str, Any] = {}


def configure_standalone_tracking(tracker: Tracker | None, principal_of: Callable[[], Principal | None]) -> None:
    """For a FastMCP server run without the gateway: where decorated tools record to (None: nowhere)."""
    _standalone["tracker"] = tracker
    _standalone["principal_of"] = principal_of


def track_tool_execution(func: F | None = None, *, name: str | None = None) -> Any:
    """Track a tool. Under the gateway the middleware already records it: this adds nothing.

    Usage: `@mcp.tool` above `@track_tool_execution` (or `@track_tool_execution(name="x")`).
    """

    def decorate(fn: F) -> F:
        tool_name = name or fn.__name__
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                tracker = _standalone.get("tracker")
                principal = _standalone["principal_of"]() if tracker else None
                if _tracked_by_middleware.get() or tracker is None or principal is None:
                    return await fn(*args, **kwargs)
                return await tracker.record_call(principal, client_info(_current_context()), tool_name, kwargs,
                                                 lambda: fn(*args, **kwargs))
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        async def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            tracker = _standalone.get("tracker")
            principal = _standalone["principal_of"]() if tracker else None
            if _tracked_by_middleware.get() or tracker is None or principal is None:
                return fn(*args, **kwargs)

            async def run() -> Any:
                return fn(*args, **kwargs)

            return await tracker.record_call(principal, client_info(_current_context()), tool_name, kwargs, run)
        return sync_wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _current_context() -> Any:
    try:
        from fastmcp.server.dependencies import get_context

        return get_context()
    except Exception:
        return None
