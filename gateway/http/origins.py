"""Origin and Host checks: a web page on another site must not drive the gateway through a browser.

The MCP Streamable HTTP transport requires servers to validate `Origin`: with DNS rebinding, a page
on attacker.example whose name later resolves to the gateway's address is, to the browser, the
gateway's own origin, so only the Origin header tells the request apart. Non-browser clients send no
Origin and pass; browsers send one on every cross-origin request and every POST/PUT/DELETE.

- `OriginMiddleware` (shaped like Starlette's TrustedHostMiddleware) guards /mcp, /sse, /messages/
  and /api: a request carrying an Origin that is not allowed gets 403 with a one-line JSON reason (a
  JSON-RPC error without id on the MCP paths, as the transport specification suggests) before
  anything else runs. Other paths (OAuth endpoints, metadata, the dashboard's static page) are not
  guarded: browsers legitimately reach them from other origins or by navigation.
- Allowed origins: the public URL's origin (the gateway's own pages, e.g. the dashboard), plus the
  other loopback spellings of it when the public URL names a loopback or unspecified address
  (`mcp-gateway dev` is opened as http://localhost:8051 and http://127.0.0.1:8051 alike; no other
  site can be those), plus MCP_GATEWAY_ALLOWED_ORIGINS.
- Origins are compared normalised: scheme and host lower-cased, the default port dropped
  (http://h:80 == http://h), one trailing slash ignored. Anything that is not scheme://host[:port]
  (a path, user info, whitespace, non-ASCII) is not an origin: refused when sent, an error when
  configured.
- `null` (sandboxed frames, file: pages, some redirects) is never allowed, not even when listed:
  any page can make its requests carry it. `*`, alone, allows every other origin — for a gateway that
  serves browser-based clients from anywhere (bearer tokens still apply to every request).
- Optional Host allow-list (MCP_GATEWAY_ALLOWED_HOSTS): Starlette's TrustedHostMiddleware, 400 on a
  mismatch, every path (health probes must send an allowed Host).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("mcp_gateway")

ANY_ORIGIN = "*"
GUARDED_PATHS = ("/mcp", "/sse", "/messages", "/api")
_MCP_PATHS = ("/mcp", "/sse", "/messages")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_UNSPECIFIED = ("0.0.0.0", "[::]")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_HOST = re.compile(r"^([a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])$")
_HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])$")


def normalize_origin(value: str) -> str | None:
    """`scheme://host[:port]` in canonical form, or None when `value` is not an origin."""
    text = value.strip(" ")
    text = text.removesuffix("/")
    if not text or len(text) > 2048 or any(not (0x21 <= ord(c) <= 0x7E) for c in text):
        return None  # whitespace, control characters, non-ASCII: never part of an origin a browser sends
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or not parts.netloc:
        return None
    scheme = parts.scheme.lower()
    if ":" in host:
        host = f"[{host}]"
    if not _SCHEME.match(scheme) or not _HOST.match(host):
        return None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def check_origins(values: Iterable[str]) -> list[str]:
    """Validate a configured allow-list (ValueError names the bad entry); returns it normalised."""
    out: list[str] = []
    for value in values:
        if value == ANY_ORIGIN:
            out.append(ANY_ORIGIN)
            continue
        if value.strip().lower() == "null":
            raise ValueError("'null' cannot be allowed: any sandboxed page or file: URL sends it")
        origin = normalize_origin(value)
        if origin is None:
            raise ValueError(f"{value!r} is not an origin (scheme://host[:port], no path)")
        out.append(origin)
    if ANY_ORIGIN in out and len(out) > 1:
        raise ValueError("'*' allows every origin: give it alone")
    return out


def check_hosts(values: Iterable[str]) -> list[str]:
    """Validate a Host allow-list for TrustedHostMiddleware: host names, IP addresses, `*.domain`."""
    out: list[str] = []
    for value in values:
        host = value.strip().lower()
        if not _HOST_PATTERN.match(host):
            raise ValueError(f"{value!r} is not a host name (no scheme or port; wildcards as *.example.com)")
        out.append(host)
    return out


def default_origins(public_url: str) -> list[str]:
    """The public URL's origin; on a loopback/unspecified address, every loopback spelling of it."""
    parts = urlsplit(public_url)
    origin = normalize_origin(f"{parts.scheme}://{parts.netloc}")
    if origin is None:
        return []
    scheme, _, rest = origin.partition("://")
    host, port = (rest.rsplit(":", 1) if not rest.endswith("]") and ":" in rest else (rest, ""))
    if host not in _LOOPBACK + _UNSPECIFIED:
        return [origin]
    suffix = f":{port}" if port else ""
    return [f"{scheme}://{loopback}{suffix}" for loopback in _LOOPBACK]


def _guarded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in GUARDED_PATHS)


class OriginMiddleware:
    """403 for a request to a guarded path whose Origin header is not allowed (no Origin: passes)."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allow_any = ANY_ORIGIN in allowed_origins
        self.allowed = frozenset(o for o in (normalize_origin(a) for a in allowed_origins) if o)

    def allows(self, origin: str) -> bool:
        normalized = normalize_origin(origin)
        if normalized is None:  # includes `null`
            return False
        return self.allow_any or normalized in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _guarded(scope["path"]):
            for key, value in scope.get("headers", ()):
                if key == b"origin" and not self.allows(value.decode("latin-1")):
                    await self._refuse(scope, send, value.decode("latin-1"))
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, origin: str) -> None:
        shown = origin if len(origin) <= 100 else origin[:100] + "..."
        reason = (f"Origin {shown!r} is not allowed here (cross-site browser requests are refused; "
                  "see MCP_GATEWAY_ALLOWED_ORIGINS)")
        body: dict[str, object]
        if any(scope["path"] == p or scope["path"].startswith(p + "/") for p in _MCP_PATHS):
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": f"Forbidden: {reason}"}}
        else:
            body = {"error": "forbidden_origin", "detail": reason}
        payload = json.dumps(body).encode()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"vary", b"Origin")]})
        await send({"type": "http.response.body", "body": payload})


def guard_http(app: ASGIApp, *, public_url: str, allowed_origins: Sequence[str] | None,
               allowed_hosts: Sequence[str] | None) -> ASGIApp:
    """`app` behind the Origin check (and the Host check when a Host allow-list is configured)."""
    # The gateway's own origin is always allowed: its dashboard is served from there.
    origins = default_origins(public_url) + (check_origins(allowed_origins) if allowed_origins else [])
    if ANY_ORIGIN in origins:
        log.warning("MCP_GATEWAY_ALLOWED_ORIGINS=*: web pages on any site may send requests to /mcp and /api "
                    "(bearer tokens still apply)")
    guarded: ASGIApp = OriginMiddleware(app, origins)
    if allowed_hosts:
        guarded = TrustedHostMiddleware(guarded, allowed_hosts=check_hosts(allowed_hosts), www_redirect=False)
    return guarded
