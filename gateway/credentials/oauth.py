"""The gateway as an OAuth client of a per_user_oauth upstream's authorization server.

Discovery: the upstream's RFC 9728 protected-resource metadata names its authorization
server (unless `oauth.issuer` is configured); RFC 8414 metadata of that server gives the
authorization and token endpoints. Tokens never appear in errors or logs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.config import UpstreamConfig
from gateway.credentials.store import Secret


class OAuthError(Exception):
    """One line, without any token."""


@dataclass(frozen=True)
class ServerMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str


_metadata_cache: dict[str, tuple[float, ServerMetadata]] = {}


async def _get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        raise OAuthError(f"{url} is unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def discover(config: UpstreamConfig) -> ServerMetadata:
    """The authorization server's endpoints (cached for 10 minutes)."""
    cached = _metadata_cache.get(config.name)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    assert config.url is not None and config.oauth is not None
    async with httpx.AsyncClient(timeout=config.timeout) as http:
        issuer = config.oauth.issuer
        if issuer is None:
            parts = urlsplit(config.url)
            base = f"{parts.scheme}://{parts.netloc}"
            doc = (await _get_json(http, f"{base}/.well-known/oauth-protected-resource{parts.path}")
                   or await _get_json(http, f"{base}/.well-known/oauth-protected-resource"))
            servers = (doc or {}).get("authorization_servers") or []
            if not servers or not isinstance(servers[0], str):
                raise OAuthError(f"upstream {config.name!r} publishes no authorization server (RFC 9728);"
                                 " set oauth.issuer")
            issuer = servers[0]
        parts = urlsplit(issuer)
        base, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
        doc = (await _get_json(http, f"{base}/.well-known/oauth-authorization-server{path}")
               or await _get_json(http, f"{base}/.well-known/openid-configuration{path}")
               or await _get_json(http, f"{issuer.rstrip('/')}/.well-known/openid-configuration"))
    if not doc or not isinstance(doc.get("token_endpoint"), str) \
            or not isinstance(doc.get("authorization_endpoint"), str):
        raise OAuthError(f"no RFC 8414 metadata with authorization and token endpoints at {issuer}")
    meta = ServerMetadata(issuer, doc["authorization_endpoint"], doc["token_endpoint"])
    _metadata_cache[config.name] = (time.monotonic() + 600, meta)
    return meta


def _client_auth(config: UpstreamConfig, form: dict[str, str]) -> httpx.BasicAuth | None:
    assert config.oauth is not None and config.oauth.client_id is not None
    secret = os.environ.get(config.oauth.client_secret_env, "") if config.oauth.client_secret_env else ""
    if secret:
        return httpx.BasicAuth(config.oauth.client_id, secret)
    form["client_id"] = config.oauth.client_id  # a public client
    return None


async def token_request(config: UpstreamConfig, form: dict[str, str]) -> Secret:
    meta = await discover(config)
    auth = _client_auth(config, form)
    try:
        async with httpx.AsyncClient(timeout=config.timeout) as http:
            response = await http.post(meta.token_endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
    except httpx.HTTPError as exc:
        raise OAuthError(f"the token endpoint is unreachable ({type(exc).__name__})") from None
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    if response.status_code != 200 or not isinstance(doc.get("access_token"), str):
        error = doc["error"] if isinstance(doc.get("error"), str) else ""
        raise OAuthError(f"the token endpoint answered HTTP {response.status_code} {error[:60]}".strip())
    expires_in = doc.get("expires_in")
    expires_at = time.time() + float(expires_in) if isinstance(expires_in, int | float) else None
    refresh = doc.get("refresh_token") if isinstance(doc.get("refresh_token"), str) else None
    return Secret(doc["access_token"], refresh or form.get("refresh_token"), expires_at, time.time())


async def refresh_token(config: UpstreamConfig, refresh: str) -> Secret:
    form = {"grant_type": "refresh_token", "refresh_token": refresh}
    if config.oauth and config.oauth.scopes:
        form["scope"] = " ".join(config.oauth.scopes)
    return await token_request(config, form)
