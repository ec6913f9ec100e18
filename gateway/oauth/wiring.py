"""Builds the authorization server from settings: `build_oauth` before GatewayAuth (which needs
its token verifier), `OAuthComponents.routes` once GatewayAuth exists (sign-in verifies
personal tokens with it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from authlib.common.security import is_secure_transport
from starlette.routing import Route

from auth.jwks import JwksKeys
from auth.local_tokens import LocalTokenVerifier
from auth.provider import GatewayAuth
from auth.settings import AuthSettings
from gateway.oauth.cimd import CimdFetcher
from gateway.oauth.config import OAuthClientConfig
from gateway.oauth.grants import GrantsApi
from gateway.oauth.idp import OidcLogin
from gateway.oauth.keys import SigningKeys
from gateway.oauth.routes import OAuthRoutes
from gateway.oauth.server import OAuthService
from gateway.oauth.store import ClientRow, OAuthStore
from gateway.store.db import Database

log = logging.getLogger("mcp_gateway.oauth")


@dataclass
class OAuthComponents:
    """A Component (gateway/wiring.py): loads pre-registered clients and signing keys at start."""

    name = "oauth"  # its key in the /ready body
    settings: AuthSettings
    service: OAuthService
    local_tokens: LocalTokenVerifier
    clients: tuple[OAuthClientConfig, ...] = ()
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def auth_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for GatewayAuth: our tokens verify, RFC 9728 names us."""
        return {"local_tokens": self.local_tokens, "authorization_server": self.service.issuer}

    def routes(self, gateway_auth: GatewayAuth) -> list[Route]:
        s = self.settings
        idp = None
        if s.oidc_client_id:
            self._http = httpx.AsyncClient(timeout=s.http_timeout, follow_redirects=False)
            keys = gateway_auth.authenticator.jwks or JwksKeys(lambda: self._http, oidc_issuer=s.oidc_issuer)  # type: ignore[arg-type, return-value]
            idp = OidcLogin(s, redirect_uri=self.service.issuer + "/oauth/callback", http=self._http, keys=keys)
        grants = GrantsApi(self.service.store.db, self.service.store, gateway_auth)
        return [*OAuthRoutes(self.service, gateway_auth, idp=idp, dcr_per_hour=s.oauth_dcr_per_hour,
                             secure_cookies=self.service.issuer.startswith("https://")).routes(),
                *grants.routes()]

    async def start(self) -> None:
        try:
            for client in self.clients:  # pre-registered in the config file: kept current on every start
                await self.service.store.save_client(client.row())
            await self.service.store.save_client(dashboard_client(self.service.issuer))
            await self.service.keys.ensure()
        except Exception as exc:  # database away: the first token request creates/loads the key
            log.warning("OAuth signing keys not loaded at start: %s", type(exc).__name__)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def ready(self) -> dict[str, Any]:
        return {"issuer": self.service.issuer}


DASHBOARD_CLIENT_ID = "mcp-gateway-dashboard"


def dashboard_client(issuer: str) -> ClientRow:
    """/dashboard signs in through the same flow as any client: a public client (PKCE)."""
    return ClientRow(client_id=DASHBOARD_CLIENT_ID, kind="config", client_name="mcp-gateway dashboard",
                     client_uri=issuer + "/dashboard", redirect_uris=(issuer + "/dashboard",),
                     grant_types=("authorization_code",), token_endpoint_auth_method="none")


def build_oauth(settings: AuthSettings, db: Database, clients: Sequence[OAuthClientConfig] = (),
                mcp_path: str = "/mcp") -> OAuthComponents | None:
    """None when MCP_GATEWAY_OAUTH_SERVER is off."""
    if not settings.oauth_server:
        return None
    issuer = settings.public_url.rstrip("/")
    if not is_secure_transport(issuer):
        # OAuth 2.1 needs TLS except on loopback: rather no authorization server than one leaking codes
        log.warning("OAuth authorization server off: MCP_GATEWAY_PUBLIC_URL %s is neither https nor loopback", issuer)
        return None
    resource = issuer + mcp_path
    store = OAuthStore(db)
    keys = SigningKeys(db, store, rotation=timedelta(days=settings.oauth_key_rotation_days),
                       token_ttl=settings.oauth_access_token_ttl)
    cimd = CimdFetcher(allowed_hosts=settings.oauth_cimd_allowed_hosts, ca_file=settings.oauth_cimd_ca_file)
    service = OAuthService(store=store, keys=keys, cimd=cimd, issuer=issuer, resource=resource,
                           access_token_ttl=settings.oauth_access_token_ttl,
                           refresh_token_ttl=settings.oauth_refresh_token_ttl,
                           refresh_grace=settings.oauth_refresh_grace, code_ttl=settings.oauth_code_ttl,
                           dcr_enabled=settings.oauth_dcr)
    verifier = LocalTokenVerifier(keys, issuer=issuer, audience=resource)
    return OAuthComponents(settings, service, verifier, tuple(clients))

