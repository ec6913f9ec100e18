"""The /api side: the same verifier and the same 401 challenge as the MCP endpoint.

Either wrap the API app with `GatewayAuth.protect(app)` (then `require_principal` just reads
the verified caller), or call `require_principal` alone in a handler: it then verifies the
Authorization header itself and raises `Unauthorized` with FastMCP's exact WWW-Authenticate.
"""

from __future__ import annotations

import json

from fastmcp.server.auth.middleware import RequireAuthMiddleware
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Message

from auth.errors import StoreUnavailable
from auth.principal import Principal
from auth.provider import (
    SCOPE_KEY,
    GatewayAuth,
    authenticated_principal,
    describe_challenge,
    noting_refusal,
    safe_description,
)
from auth.unavailable import UNAVAILABLE_DESCRIPTION
from fastmcp_private import send_auth_error, send_missing_auth

STATE_KEY = "mcp_gateway_auth"


class Unauthorized(HTTPException):
    """401 with the WWW-Authenticate header the MCP endpoint would send."""

    def __init__(self, headers: dict[str, str], detail: str) -> None:
        super().__init__(status_code=401, detail=detail, headers=headers)


async def challenge_headers(gateway_auth: GatewayAuth, *, token_presented: bool,
                            reason: str | None = None) -> tuple[dict[str, str], str]:
    """Run FastMCP's RequireAuthMiddleware responder and keep what it sends: one challenge builder."""
    middleware = RequireAuthMiddleware(None, [], gateway_auth.resource_metadata_url, [])
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    if token_presented:
        await send_auth_error(middleware, capture, 401, "invalid_token", "Authentication required")
    else:
        await send_missing_auth(middleware, capture)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"] if k.lower() == b"www-authenticate"}
    if token_presented:
        headers = {k: describe_challenge(v, reason) for k, v in headers.items()}
        return headers, json.dumps({"error": "invalid_token", "error_description": safe_description(reason)})
    return headers, sent[1].get("body", b"").decode() or "Authentication required"


class TemporarilyUnavailable(HTTPException):
    """503 + Retry-After: the token could not be checked (database slow or away), it was not refused."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(status_code=503, detail=UNAVAILABLE_DESCRIPTION, headers={"Retry-After": str(retry_after)})


def gateway_auth_of(conn: HTTPConnection) -> GatewayAuth:
    """The GatewayAuth of this request: set in the scope by `GatewayAuth.protect`, else
    `app.state.mcp_gateway_auth` of the (innermost) Starlette app."""
    found = conn.scope.get(SCOPE_KEY)
    if found is None and conn.scope.get("app") is not None:
        found = getattr(conn.app.state, STATE_KEY, None)
    if not isinstance(found, GatewayAuth):
        raise RuntimeError(f"no GatewayAuth: wrap the app with GatewayAuth.protect or set app.state.{STATE_KEY}")
    return found


async def require_principal(conn: HTTPConnection, gateway_auth: GatewayAuth | None = None) -> Principal:
    """The verified caller, or `Unauthorized` (401 + WWW-Authenticate identical to /mcp)."""
    principal = authenticated_principal(conn.scope)
    if principal is not None:
        return principal
    gateway_auth = gateway_auth or gateway_auth_of(conn)
    header = conn.headers.get("authorization")
    with noting_refusal() as note:
        try:
            principal = await gateway_auth.principal_for_header(header)
        except StoreUnavailable as exc:
            raise TemporarilyUnavailable(exc.retry_after) from None
    if principal is not None:
        return principal
    presented = header is not None and header[:7].lower() == "bearer "
    headers, body = await challenge_headers(gateway_auth, token_presented=presented, reason=note.reason)
    raise Unauthorized(headers, body)
