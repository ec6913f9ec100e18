"""IdP signing keys: a JWKS fetched with httpx (async), cached, refreshed on unknown `kid` at a bounded rate.

Keys come from MCP_GATEWAY_JWKS_URL, or from `jwks_uri` in the OIDC discovery document of
MCP_GATEWAY_OIDC_ISSUER. A refresh replaces the whole set, so a removed key stops verifying.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from auth.errors import TokenRejected

log = logging.getLogger("auth.jwks")

MAX_DOCUMENT_BYTES = 1024 * 1024
FAILURE_BACKOFF = 5.0  # seconds between attempts while the IdP fails (capped by the min interval)
_ALGS_FOR_KEY: dict[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}


class KeySourceError(Exception):
    """The IdP's discovery document or key set could not be fetched or understood."""


def _usable_for(jwk: dict[str, Any], alg: str) -> bool:
    """Signature keys of a type that can do `alg`. Symmetric (`oct`) keys never qualify."""
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    if alg not in _ALGS_FOR_KEY.get((str(kty), crv), frozenset()):
        return False
    if jwk.get("use", "sig") != "sig":
        return False
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return False
    declared = jwk.get("alg")
    return declared is None or declared == alg


async def fetch_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise KeySourceError(f"GET {url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise KeySourceError(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        return json.loads(bytes(body))
    except httpx.HTTPError as exc:
        raise KeySourceError(f"GET {url} failed: {type(exc).__name__}") from None
    except ValueError:
        raise KeySourceError(f"GET {url}: not JSON") from None


class JwksKeys:
    """The current key set of one IdP."""

    def __init__(self, client: Callable[[], httpx.AsyncClient], *, jwks_url: str | None = None,
                 oidc_issuer: str | None = None, cache_ttl: float = 600.0, min_refresh_interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not jwks_url and not oidc_issuer:
            raise ValueError("JwksKeys needs jwks_url or oidc_issuer")
        self._client = client
        self._jwks_url = jwks_url
        self._oidc_issuer = oidc_issuer
        self._cache_ttl = cache_ttl
        self._min_interval = min_refresh_interval
        self._clock = clock
        self._keys: list[dict[str, Any]] = []
        self._fetched_at: float | None = None    # last successful fetch
        self._attempted_at: float | None = None  # last attempt, success or not
        self._lock = asyncio.Lock()
        self.fetches = 0                          # JWKS GETs so far (observability, tests)

    async def key_for(self, kid: str | None, alg: str) -> PyJWK:
        """The key that verifies a token with this header, refreshing the set once if `kid` is unknown."""
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at > self._cache_ttl:
            await self._refresh(reason="expired" if self._fetched_at else "initial")
        key = self._find(kid, alg)
        if key is None and kid is not None and self._may_refresh("unknown kid"):
            await self._refresh(reason="unknown kid")
            key = self._find(kid, alg)
        if key is None:
            if self._fetched_at is None:
                raise TokenRejected("IdP key set unavailable")
            raise TokenRejected("unknown signing key")
        return key

    def _may_refresh(self, reason: str) -> bool:
        """Unknown kids refresh at most once per min interval. An expired set refreshes when due
        (its TTL spaced the last success); after a failure, retries wait a short backoff."""
        if self._attempted_at is None:
            return True
        since = self._clock() - self._attempted_at
        if reason == "unknown kid":
            return since >= self._min_interval
        last_succeeded = self._fetched_at is not None and self._fetched_at >= self._attempted_at
        return last_succeeded or since >= min(self._min_interval, FAILURE_BACKOFF)

    def _find(self, kid: str | None, alg: str) -> PyJWK | None:
        candidates = [k for k in self._keys if _usable_for(k, alg) and (kid is None or k.get("kid") == kid)]
        if kid is None and len(candidates) != 1:
            return None  # without a kid, only an unambiguous key set is usable
        for jwk in candidates:
            try:
                return PyJWK(jwk, algorithm=alg)
            except (PyJWTError, ValueError, TypeError):
                continue
        return None

    async def _refresh(self, *, reason: str) -> None:
        started = self._clock()
        async with self._lock:
            if self._attempted_at is not None and self._attempted_at >= started:
                return  # another request refreshed while this one waited
            if not self._may_refresh(reason):
                return  # rate limit: a flood of unknown kids (or a down IdP) costs one GET per interval
            self._attempted_at = self._clock()
            try:
                url = await self._resolve_jwks_url()
                self.fetches += 1
                document = await fetch_json(self._client(), url)
                keys = document.get("keys") if isinstance(document, dict) else None
                if not isinstance(keys, list):
                    raise KeySourceError(f"{url}: no keys array")
                self._keys = [k for k in keys if isinstance(k, dict)]
                self._fetched_at = self._clock()
                log.info("JWKS refreshed (%s): %d keys", reason, len(self._keys))
            except KeySourceError as exc:
                # Keep serving the previous keys; the rate limit spaces out retries.
                log.warning("JWKS refresh failed (%s): %s", reason, exc)

    async def _resolve_jwks_url(self) -> str:
        if self._jwks_url:
            return self._jwks_url
        assert self._oidc_issuer is not None
        url = self._oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await fetch_json(self._client(), url)
        if not isinstance(document, dict):
            raise KeySourceError(f"{url}: not an object")
        if str(document.get("issuer", "")).rstrip("/") != self._oidc_issuer.rstrip("/"):
            raise KeySourceError(f"{url}: issuer does not match the configured issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise KeySourceError(f"{url}: no jwks_uri")
        self._jwks_url = jwks_uri  # discovery once; the key set itself is what rotates
        return jwks_uri
