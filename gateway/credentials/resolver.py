"""The caller's token for a per-user upstream, whatever the mode.

- per_user_token: the token the user stored (dashboard or PUT /api/credentials/{upstream}).
- per_user_oauth: the stored access token; refreshed (once) with the stored refresh token when
  it has expired or the upstream refused it. A failed refresh marks the link as needing re-link.
- token_exchange: the caller's own bearer token (from the IdP) exchanged at the IdP's token
  endpoint (RFC 8693) for one scoped to the upstream; cached per user until it expires.

Errors are CredentialError tool errors naming where the user links the account. No error
message or log line carries a token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from typing import Any

import httpx

from auth import Principal
from gateway.config import UpstreamConfig
from gateway.credentials.errors import (
    CredentialMissing,
    CredentialRejected,
    CredentialUnavailable,
)
from gateway.credentials.store import CredentialStore, Secret

log = logging.getLogger("mcp_gateway.credentials")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class CredentialResolver:
    def __init__(self, store: CredentialStore, public_url: str, *, max_cached: int = 1024) -> None:
        self.store = store
        self.link_url = f"{public_url.rstrip('/')}/dashboard#connections"
        self._exchanged: OrderedDict[tuple[str, str, str, bytes], Secret] = OrderedDict()
        self._max_cached = max_cached
        self._locks: dict[tuple[str, str, str, bytes], asyncio.Lock] = {}

    async def token(self, config: UpstreamConfig, principal: Principal, subject_token: str | None) -> str:
        if config.credentials == "token_exchange":
            return await self._exchange(config, principal, subject_token)
        found = await self.store.get(principal.tenant_id, principal.user_id, config.name)
        if found.state == "unlinked":
            raise CredentialMissing(config.name, self.link_url)
        if found.state == "needs_relink" or found.secret is None:
            raise CredentialRejected(config.name, self.link_url, "needs your account linked again")
        secret = found.secret
        if config.credentials == "per_user_oauth" and secret.expired():
            secret = await self.refresh(config, principal, secret)
        return secret.access_token

    async def refresh(self, config: UpstreamConfig, principal: Principal, secret: Secret | None = None,
                      refused: bytes | None = None) -> Secret:
        """Refresh a per_user_oauth link once; on failure mark it needs_relink and raise.

        One refresh per user at a time: parallel calls that all saw the token expire (or refused, with
        `refused` = fingerprint of the token the upstream refused) share the first one's result, so an
        authorization server that rotates refresh tokens strictly does not see the old one twice.
        """
        key = (principal.tenant_id, principal.user_id, config.name, b"refresh")
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._refresh_now(config, principal, secret, refused)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _refresh_now(self, config: UpstreamConfig, principal: Principal, secret: Secret | None,
                           refused: bytes | None) -> Secret:
        from gateway.credentials.clients import fingerprint
        from gateway.credentials.oauth import OAuthError, refresh_token

        found = await self.store.get(principal.tenant_id, principal.user_id, config.name)
        if found.secret is not None and not found.secret.expired() and (
                (refused is not None and fingerprint(found.secret.access_token) != refused)
                or (secret is not None and found.secret.access_token != secret.access_token)):
            return found.secret  # another call refreshed it meanwhile
        if found.state == "needs_relink":
            raise CredentialRejected(config.name, self.link_url, "needs your account linked again")
        secret = found.secret or secret
        if secret is None or not secret.refresh_token:
            await self.store.mark_needs_relink(principal.tenant_id, principal.user_id, config.name)
            raise CredentialRejected(config.name, self.link_url, "token expired and cannot be refreshed")
        try:
            fresh = await refresh_token(config, secret.refresh_token)
        except OAuthError as exc:
            log.warning("refreshing the %s token of %s/%s failed: %s", config.name, principal.tenant_id,
                        principal.user_id, exc, extra={"event": "credential_refresh_failed", "upstream": config.name})
            await self.store.mark_needs_relink(principal.tenant_id, principal.user_id, config.name)
            raise CredentialRejected(config.name, self.link_url, "token could not be refreshed") from None
        await self.store.put(principal.tenant_id, principal.user_id, config.name, "per_user_oauth", fresh)
        log.info("refreshed the %s token of %s/%s", config.name, principal.tenant_id, principal.user_id,
                 extra={"event": "credential_refreshed", "upstream": config.name})
        return fresh

    async def rejected(self, config: UpstreamConfig, principal: Principal) -> None:
        """The upstream answered 401/403 to this user's credential."""
        if config.credentials == "token_exchange":
            self.forget(principal, config.name)
            return
        await self.store.mark_needs_relink(principal.tenant_id, principal.user_id, config.name)
        log.warning("upstream %s refused the credential of %s/%s: marked needs_relink", config.name,
                    principal.tenant_id, principal.user_id,
                    extra={"event": "credential_rejected", "upstream": config.name})

    def forget(self, principal: Principal, upstream: str) -> None:
        self.forget_key(principal.tenant_id, principal.user_id, upstream)

    def forget_key(self, tenant_id: str, user_id: str, upstream: str) -> None:
        for key in [k for k in self._exchanged if k[:3] == (tenant_id, user_id, upstream)]:
            del self._exchanged[key]

    # -- RFC 8693 -------------------------------------------------------------------------------

    async def _exchange(self, config: UpstreamConfig, principal: Principal, subject_token: str | None) -> str:
        if not subject_token or principal.token_kind == "pat":
            raise CredentialUnavailable(
                f"upstream {config.name!r} acts as you through your identity provider's sign-in (token exchange);"
                " a personal access token cannot be exchanged. Connect with your identity provider's token instead.",
                self.link_url)
        key = (principal.tenant_id, principal.user_id, config.name, hashlib.sha256(subject_token.encode()).digest())
        cached = self._exchanged.get(key)
        if cached is not None and not cached.expired():
            self._exchanged.move_to_end(key)
            return cached.access_token
        # One exchange per user at a time: parallel first calls share its result.
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                cached = self._exchanged.get(key)
                if cached is not None and not cached.expired():
                    return cached.access_token
                return await self._exchange_now(config, key, subject_token)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _exchange_now(self, config: UpstreamConfig, key: tuple[str, str, str, bytes], subject_token: str) -> str:
        assert config.oauth is not None and config.oauth.token_endpoint is not None
        oauth, endpoint = config.oauth, config.oauth.token_endpoint
        form: dict[str, Any] = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
                                "subject_token_type": ACCESS_TOKEN_TYPE,
                                "requested_token_type": ACCESS_TOKEN_TYPE,
                                "resource": oauth.resource or config.url}
        if oauth.audience:
            form["audience"] = oauth.audience
        if oauth.scopes:
            form["scope"] = " ".join(oauth.scopes)
        auth = None
        if oauth.client_id:
            secret = os.environ.get(oauth.client_secret_env, "") if oauth.client_secret_env else ""
            auth = httpx.BasicAuth(oauth.client_id, secret) if secret else None
            if auth is None:
                form["client_id"] = oauth.client_id
        try:
            async with httpx.AsyncClient(timeout=config.timeout) as http:
                response = await http.post(endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise CredentialUnavailable(f"upstream {config.name!r}: the identity provider's token endpoint is"
                                        f" unreachable ({type(exc).__name__})", self.link_url) from None
        if response.status_code in (400, 401, 403):
            raise CredentialRejected(config.name, self.link_url,
                                     f"could not get a token for you (the identity provider answered HTTP"
                                     f" {response.status_code})")
        try:
            doc = response.json()
            token = doc["access_token"]
            expires_in = doc.get("expires_in")
            assert isinstance(token, str) and token
        except (ValueError, KeyError, TypeError, AssertionError):
            raise CredentialUnavailable(f"upstream {config.name!r}: the identity provider's token endpoint sent an"
                                        " invalid answer", self.link_url) from None
        now = time.time()
        secret_obj = Secret(token, None, now + float(expires_in) if expires_in else now + 300, now)
        self._exchanged[key] = secret_obj
        while len(self._exchanged) > self._max_cached:
            self._exchanged.popitem(last=False)
        return token
