"""Optional bearer protection of /metrics (MCP_GATEWAY_METRICS_TOKEN).

Metrics name tools, upstreams and error rates: fine for an operator's scraper, not for the internet.
With a token set, a scrape must send `Authorization: Bearer <token>`; the token is compared exactly
as configured (no trimming, no case folding), in constant time (digests of equal length, so neither
content nor length leaks through timing), and never logged or echoed. Without one, /metrics is open
(restrict it at the proxy, or bind the gateway to a private address).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def bearer_matches(authorization: bytes | None, expected: bytes) -> bool:
    """True when the raw Authorization header value is exactly `Bearer <expected>` (scheme case-insensitive)."""
    if authorization is None:
        return False
    scheme, _, given = authorization.partition(b" ")
    ok = hmac.compare_digest(_digest(given), _digest(expected))  # always computed: no early exit on scheme
    return ok and scheme.lower() == b"bearer"


def protect_metrics(endpoint: Endpoint, token: SecretStr | None) -> Endpoint:
    """`endpoint`, refusing scrapes without the configured bearer token (unchanged when there is none)."""
    if token is None:
        return endpoint
    expected = token.get_secret_value().encode()

    async def guarded(request: Request) -> Response:
        header = next((v for k, v in request.scope.get("headers", ()) if k == b"authorization"), None)
        if not bearer_matches(header, expected):
            return JSONResponse({"error": "invalid_token", "detail": "/metrics requires the metrics bearer token"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return await endpoint(request)

    return guarded
