"""One question, one place: which principal does this bearer token stand for?

`Authenticator.authenticate(token)` returns a Principal, raises TokenRejected with a short, loggable
reason, or raises StoreUnavailable when only the token store (the database) could decide and it did not
answer in time (not a refusal: HTTP answers 503, not 401). It never raises anything else and never logs
the token (only a hash prefix).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from auth.cache import TTLCache
from auth.claims import principal_from_claims
from auth.errors import AuthConfigError, StoreUnavailable, TokenRejected
from auth.introspection import Introspector
from auth.jwks import JwksKeys
from auth.jwt_verify import ASYMMETRIC_ALGS, HMAC_ALGS, decode, inspect_header, looks_like_jwt
from auth.local_tokens import LocalTokenVerifier
from auth.pat import PatVerifier, looks_like_pat
from auth.principal import Principal
from auth.settings import AuthSettings
from auth.store import TokenStore

log = logging.getLogger("auth")

# RFC 6750 b64token: what a bearer credential may consist of at all.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")



def token_fingerprint(token: str) -> str:
    """Safe to log: 8 hex characters of the SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class Authenticator:
    def __init__(self, settings: AuthSettings, *, token_store: TokenStore | None = None,
                 http_client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 local_tokens: LocalTokenVerifier | None = None) -> None:
        self.settings = settings
        self.local_tokens = local_tokens  # the gateway's own OAuth access tokens
        self._clock = clock
        self._own_http = http_client is None
        self._http = http_client
        self.pats = PatVerifier(
            token_store, flush_interval=settings.last_used_flush_interval, outage_grace=settings.pat_outage_grace,
            fresh_for=settings.pat_cache_ttl, store_timeout=settings.store_timeout,
            retry_after=settings.unavailable_retry_after, max_known=settings.cache_max_entries, clock=clock,
        ) if token_store else None
        self.jwks = (
            JwksKeys(self._client, jwks_url=settings.jwks_url, oidc_issuer=settings.oidc_issuer,
                     cache_ttl=settings.jwks_cache_ttl, min_refresh_interval=settings.jwks_min_refresh_interval)
            if settings.jwks_url or settings.oidc_issuer else None
        )
        self.introspector = (
            Introspector(self._client, url=settings.introspection_url,
                         client_id=settings.introspection_client_id or "",
                         client_secret=settings.introspection_client_secret.get_secret_value()
                         if settings.introspection_client_secret else "",
                         cache_ttl=settings.introspection_cache_ttl, negative_ttl=settings.negative_cache_ttl,
                         max_entries=settings.cache_max_entries)
            if settings.introspection_url else None
        )
        if not (settings.jwt_secret or self.jwks or self.introspector or self.pats or self.local_tokens):
            raise AuthConfigError("no token source configured: set MCP_GATEWAY_JWT_SECRET, "
                                  "MCP_GATEWAY_OIDC_ISSUER, MCP_GATEWAY_JWKS_URL or MCP_GATEWAY_INTROSPECTION_URL")
        # token hash -> the principal, or the reason of a refusal that depends only on the token
        self._results: TTLCache[Principal | str] = TTLCache(settings.cache_max_entries, clock)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.http_timeout, follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        if self.pats:
            await self.pats.aclose()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def authenticate(self, token: str) -> Principal:
        if len(token) > self.settings.max_token_bytes:  # before anything else, hashing included
            raise TokenRejected("token too long")
        if not token or not _B64TOKEN.fullmatch(token):
            raise TokenRejected("token is empty or has characters a bearer token cannot have")
        key = hashlib.sha256(token.encode()).digest()
        cached = self._results.get(key)
        if isinstance(cached, str):
            raise TokenRejected(cached)  # a fresh exception: a shared one would grow its traceback
        if cached is not None and (cached.expires_at is None or cached.expires_at > datetime.now(UTC)):
            return cached
        try:
            principal, ttl = await self._verify(token)
        except TokenRejected as exc:
            if exc.reason in _CACHEABLE_REFUSALS:
                self._results.put(key, exc.reason, self.settings.negative_cache_ttl)
            raise
        except StoreUnavailable:
            raise  # not a verdict on the token: the caller answers 503, not 401
        except Exception as exc:  # a bug or a hostile corner case must still be a refusal, not a 5xx
            log.error("token %s: unexpected %s during verification", token_fingerprint(token), type(exc).__name__)
            raise TokenRejected("token could not be verified") from None
        if principal.expires_at is not None:
            ttl = min(ttl, (principal.expires_at - datetime.now(UTC)).total_seconds())
        self._results.put(key, principal, ttl)
        return principal

    def known_good(self, token: str) -> bool:
        """Whether `authenticate(token)` would answer at once, from memory, with a principal: no lookup, no
        refusal. Lets a caller take a shorter road for tokens already judged (gateway.mcp.front_door)."""
        if len(token) > self.settings.max_token_bytes or not token:
            return False
        if looks_like_pat(token):
            return self.pats is not None and self.pats.fresh(token)
        cached = self._results.get(hashlib.sha256(token.encode()).digest())
        return isinstance(cached, Principal) and (cached.expires_at is None or cached.expires_at > datetime.now(UTC))

    async def _verify(self, token: str) -> tuple[Principal, float]:
        s = self.settings
        if looks_like_pat(token):
            if self.pats is None:
                raise TokenRejected("personal access tokens are not enabled")
            return await self.pats.verify(token), 0.0  # PatVerifier keeps its own cache (staleness, outages)
        if looks_like_jwt(token):
            header = inspect_header(token, s)
            if self.local_tokens is not None and self.local_tokens.owns(token, header):
                # revocation must bite within 5 s: cache no longer than a personal token
                return await self.local_tokens.verify(token, header), s.pat_cache_ttl
            if header.alg in HMAC_ALGS:
                if s.jwt_secret is None:
                    raise TokenRejected("HMAC-signed tokens are not accepted")
                claims = decode(token, s.jwt_secret.get_secret_value().encode(), algorithms=[header.alg],
                                settings=s, issuer=s.jwt_issuer)  # RFC 7518 §3.2: HS384/512 need 48/64 bytes
                return principal_from_claims(claims, kind="jwt_hs", settings=s), s.verify_cache_ttl
            if header.alg in ASYMMETRIC_ALGS and self.jwks is not None:
                key = await self.jwks.key_for(header.kid, header.alg)
                claims = decode(token, key, algorithms=[header.alg], settings=s,
                                issuer=s.oidc_issuer or s.jwt_issuer)
                return principal_from_claims(claims, kind="jwt_jwks", settings=s), s.verify_cache_ttl
            if self.introspector is None:
                raise TokenRejected("JWT algorithm not accepted")
        if self.introspector is None:
            raise TokenRejected("unrecognised token")
        claims = _check_introspected(await self.introspector.introspect(token), s)
        return principal_from_claims(claims, kind="introspection", settings=s), s.introspection_cache_ttl


# Refusals that depend only on the token (not on an IdP or database being reachable).
_CACHEABLE_REFUSALS = frozenset({
    "unknown personal access token", "revoked personal access token", "expired personal access token",
    "token is not active",
})


def _check_introspected(claims: dict[str, Any], s: AuthSettings) -> dict[str, Any]:
    """An active answer still has to be within its time window and for us (RFC 7662 §4 fields)."""
    now = time.time()
    for name in ("exp", "nbf", "iat"):
        if name in claims and not isinstance(claims[name], (int, float)):
            raise TokenRejected(f"introspection {name} is not a number")
    if "exp" in claims and claims["exp"] <= now - s.leeway_seconds:
        raise TokenRejected("token expired")
    for name in ("nbf", "iat"):
        if name in claims and claims[name] > now + s.leeway_seconds:
            raise TokenRejected("token not yet valid")
    if s.jwt_audience and "aud" in claims:
        aud = claims["aud"]
        auds = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not auds & set(s.jwt_audience):
            raise TokenRejected("wrong audience")
    if "sub" not in claims and isinstance(claims.get("username"), str):
        claims = {**claims, "sub": claims["username"]}
    return claims
