"""Sign-in delegated to the team's OIDC provider (MCP_GATEWAY_OIDC_ISSUER with the gateway's own
client MCP_GATEWAY_OIDC_CLIENT_ID/_CLIENT_SECRET): authorization code flow with PKCE, state
and nonce; the ID token is verified against the IdP's JWKS and mapped to a principal with the
same tenant/role rules as bearer JWTs (auth.claims)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from auth.claims import claim, principal_from_claims
from auth.errors import TokenRejected
from auth.jwks import JwksKeys, KeySourceError, fetch_json
from auth.jwt_verify import ASYMMETRIC_ALGS
from auth.principal import Principal
from auth.settings import AuthSettings
from gateway.oauth.store import new_secret


class IdpError(Exception):
    """Sign-in at the IdP failed; the message is one line, safe to show."""


class OidcLogin:
    def __init__(self, settings: AuthSettings, *, redirect_uri: str, http: httpx.AsyncClient,
                 keys: JwksKeys) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret.get_secret_value()
        self.redirect_uri = redirect_uri
        self.http = http
        self.keys = keys
        self._discovery: dict[str, Any] | None = None

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            try:
                document = await fetch_json(self.http, self.issuer + "/.well-known/openid-configuration")
            except KeySourceError as exc:
                raise IdpError(f"identity provider unavailable: {exc}") from None
            if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise IdpError("identity provider discovery document does not name the configured issuer")
            self._discovery = document
        return self._discovery

    async def start(self) -> tuple[str, str, str, str]:
        """(URL to send the browser to, state, nonce, PKCE verifier)."""
        endpoint = (await self.discovery()).get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise IdpError("identity provider has no authorization_endpoint")
        state, nonce, verifier = new_secret(), new_secret(), new_secret(48)
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                           "scope": "openid email profile", "state": state, "nonce": nonce,
                           "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state, nonce, verifier

    async def finish(self, code: str, *, nonce: str, verifier: str) -> Principal:
        endpoint = (await self.discovery()).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise IdpError("identity provider has no token_endpoint")
        try:
            response = await self.http.post(
                endpoint, auth=(self.client_id, self.client_secret),
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                      "code_verifier": verifier})
        except httpx.HTTPError as exc:
            raise IdpError(f"identity provider token request failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise IdpError(f"identity provider refused the code (HTTP {response.status_code})")
        try:
            id_token = response.json().get("id_token")
        except ValueError:
            id_token = None
        if not isinstance(id_token, str):
            raise IdpError("identity provider returned no ID token")
        claims = self._tenant_by_email_domain(await self._verify_id_token(id_token, nonce))
        try:
            return principal_from_claims(claims, kind="jwt_jwks", settings=self.settings)
        except TokenRejected as exc:
            raise IdpError(f"signed in, but {exc.reason}") from None

    def _tenant_by_email_domain(self, claims: dict[str, Any]) -> dict[str, Any]:
        """No tenant claim: the tenant mapped to the (verified) email's domain, if one is configured."""
        if claim(claims, self.settings.tenant_claim) is not None or not self.settings.oauth_email_domain_tenants:
            return claims
        email = claims.get(self.settings.email_claim)
        if not isinstance(email, str) or "@" not in email or claims.get("email_verified") is False:
            return claims
        domain = email.rsplit("@", 1)[1].strip().lower()
        for pair in self.settings.oauth_email_domain_tenants:
            mapped_domain, _, tenant = pair.partition("=")
            if mapped_domain.strip().lower() == domain:
                return {**claims, self.settings.tenant_claim: tenant.strip()}
        return claims

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
            alg = header.get("alg")
            if alg not in ASYMMETRIC_ALGS:
                raise IdpError("ID token algorithm not accepted")
            key = await self.keys.key_for(header.get("kid"), alg)
            claims = jwt.decode(id_token, key=key, algorithms=[alg], audience=self.client_id, issuer=self.issuer,
                                leeway=self.settings.leeway_seconds,
                                options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        except IdpError:
            raise
        except (jwt.PyJWTError, KeySourceError, TokenRejected) as exc:
            raise IdpError(f"ID token refused: {type(exc).__name__}") from None
        if claims.get("nonce") != nonce:
            raise IdpError("ID token nonce does not match this sign-in")
        return claims
