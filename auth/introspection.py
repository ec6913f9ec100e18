"""RFC 7662 token introspection for opaque IdP tokens (client_secret_basic), results cached briefly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from auth.cache import TTLCache
from auth.errors import TokenRejected

log = logging.getLogger("auth.introspection")

MAX_RESPONSE_BYTES = 256 * 1024


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before base64."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Introspector:
    def __init__(self, client: Callable[[], httpx.AsyncClient], *, url: str, client_id: str,
                 client_secret: str, cache_ttl: float = 60.0, negative_ttl: float = 2.0,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._url = url
        self._authorization = basic_credentials(client_id, client_secret)
        self._cache_ttl = min(cache_ttl, 60.0)
        self._negative_ttl = negative_ttl
        self._clock = clock
        # hash -> claims of an active token, or None for inactive
        self._cache: TTLCache[dict[str, Any] | None] = TTLCache(max_entries, clock)
        self._inflight: dict[bytes, asyncio.Future[dict[str, Any] | None]] = {}
        self.calls = 0

    async def introspect(self, token: str) -> dict[str, Any]:
        """The active token's claims, or TokenRejected. Concurrent lookups of one token share a call."""
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is None and key not in self._inflight:
            future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            try:
                result = await self._call(token)
                future.set_result(result)
            except TokenRejected as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters may be none
                raise
            finally:
                del self._inflight[key]
            self._store(key, result)
        elif hit is None:
            result = await asyncio.shield(self._inflight[key])
        else:
            result = hit
        if result is None:
            raise TokenRejected("token is not active")
        return result

    def _store(self, key: bytes, result: dict[str, Any] | None) -> None:
        if result is None:
            self._cache.put(key, None, self._negative_ttl)
            return
        ttl = self._cache_ttl
        exp = result.get("exp")
        if isinstance(exp, (int, float)):
            ttl = min(ttl, exp - time.time())
        self._cache.put(key, result, ttl)

    async def _call(self, token: str) -> dict[str, Any] | None:
        self.calls += 1
        try:
            response = await self._client().post(
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.warning("introspection request failed: %s", type(exc).__name__)
            raise TokenRejected("introspection unavailable") from None
        if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
            log.warning("introspection endpoint answered %d", response.status_code)
            raise TokenRejected("introspection unavailable")
        try:
            body = response.json()
        except ValueError:
            log.warning("introspection endpoint answered non-JSON")
            raise TokenRejected("introspection unavailable") from None
        if not isinstance(body, dict):
            raise TokenRejected("introspection unavailable")
        return body if body.get("active") is True else None
