"""FastMCP wiring: a TokenVerifier over the Authenticator, RFC 9728 metadata, the 401 challenge.

Usage (see docs/auth.md):

    gateway_auth = GatewayAuth(AuthSettings(), token_store=store, provisioner=store)
    mcp = FastMCP("gateway", auth=gateway_auth.provider)
    gateway_auth.install_routes(mcp)          # adds /.well-known/oauth-protected-resource
    app = mcp.http_app(path="/mcp")           # FastMCP adds /.well-known/oauth-protected-resource/mcp
    api = gateway_auth.protect(api_app)       # /api/*: same verifier, same challenge
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from fastmcp.server.auth import AccessToken, RemoteAuthProvider, TokenVerifier
from fastmcp.server.auth.middleware import RequireAuthMiddleware
from fastmcp.server.dependencies import get_access_token
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl, ValidationError
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.authenticator import Authenticator, token_fingerprint
from auth.errors import AuthConfigError, StoreUnavailable, TokenRejected
from auth.principal import Principal
from auth.settings import AuthSettings
from auth.store import TokenStore, UserProvisioner
from auth.unavailable import StoreUnavailableResponse

log = logging.getLogger("auth")

PRINCIPAL_CLAIM = "mcp_gateway_principal"

# Said in every 401 for a token that was sent but refused (RFC 6750 error_description: printable
# ASCII without '"' or '\\'). FastMCP's default tells clients to "automatically re-register", which only
# OAuth clients can do; a person with a personal access token needs to be told what to do instead.
INVALID_TOKEN_DESCRIPTION = (
    "The bearer token is invalid, expired or revoked. A personal access token (mcpgw_...) is not renewed "
    "by your client: ask your gateway operator for a new one (mcp-gateway token create) and put it in the "
    "Authorization header of your client config. A token from your identity provider: sign in again.")
SCOPE_KEY = "mcp_gateway_auth"


def access_token_for(token: str, principal: Principal, leeway: float = 0.0) -> AccessToken:
    """client_id/subject are the principal, so the SDK binds a stateful session to it (not to a token).

    The SDK re-checks `expires_at` without leeway; IdP tokens get ours added so both agree.
    """
    if principal.token_kind == "pat":
        leeway = 0.0
    return AccessToken(
        token=token,
        client_id=principal.key,
        scopes=list(principal.scopes),
        expires_at=int(principal.expires_at.timestamp() + leeway) if principal.expires_at else None,
        subject=principal.user_id,
        claims={PRINCIPAL_CLAIM: principal.model_dump(mode="json")},
    )


def principal_from_access_token(access_token: Any) -> Principal | None:
    claims = getattr(access_token, "claims", None) or {}
    data = claims.get(PRINCIPAL_CLAIM)
    if data is None:
        return None
    try:
        return Principal.model_validate(data)
    except ValidationError:
        return None


def current_principal() -> Principal | None:
    """The verified caller of the current MCP request (None without one, e.g. in-memory transport)."""
    return principal_from_access_token(get_access_token())


class GatewayTokenVerifier(TokenVerifier):
    """FastMCP's view of the Authenticator. Never raises: a refusal is None (FastMCP answers 401)."""

    def __init__(self, authenticator: Authenticator, *, base_url: str) -> None:
        super().__init__(base_url=base_url)
        self.authenticator = authenticator
        self.on_refused: list[Callable[[str], None]] = []  # called with the reason (metrics); must not raise

    async def verify_token(self, token: str) -> AccessToken | None:
        token = token.strip(" \t")
        try:
            principal = await self.authenticator.authenticate(token)
        except TokenRejected as exc:
            shown = "(oversized)" if len(token) > self.authenticator.settings.max_token_bytes \
                else token_fingerprint(token)
            log.info("bearer token %s refused: %s", shown, exc.reason)
            for hook in self.on_refused:
                try:
                    hook(exc.reason)
                except Exception:  # pragma: no cover - a hook never turns a 401 into a 500
                    log.exception("on_refused hook failed")
            return None
        except StoreUnavailable:
            raise  # answered 503 by StoreUnavailableResponse, around the authentication middleware
        except Exception as exc:  # pragma: no cover - Authenticator already folds these into refusals
            log.error("bearer token verification failed: %s", type(exc).__name__)
            return None
        return access_token_for(token, principal, self.authenticator.settings.leeway_seconds)


def describe_invalid_token(send: Send) -> Send:
    """Wrap an ASGI `send`: a 401 `invalid_token` says what a person should do (header and JSON body)."""
    rewriting = False

    async def rewrite(message: Message) -> None:
        nonlocal rewriting
        if message["type"] == "http.response.start" and message["status"] == 401:
            headers = list(message.get("headers", []))
            for i, (name, value) in enumerate(headers):
                if name.lower() == b"www-authenticate" and b'error="invalid_token"' in value:
                    rewriting = True
                    headers[i] = (name, _DESCRIPTION.sub(
                        f'error_description="{INVALID_TOKEN_DESCRIPTION}"', value.decode("latin-1"), count=1
                    ).encode("latin-1"))
            if rewriting:
                body = json.dumps({"error": "invalid_token", "error_description": INVALID_TOKEN_DESCRIPTION}).encode()
                headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**message, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        if rewriting:
            return  # the original body: replaced above
        await send(message)

    return rewrite


class InvalidTokenDescription:
    """ASGI middleware applying `describe_invalid_token` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, describe_invalid_token(send))


_DESCRIPTION = re.compile(r'error_description="[^"]*"')


class _GatewayAuthProvider(RemoteAuthProvider):
    """RemoteAuthProvider whose 401s on /mcp and /sse carry our invalid-token description."""

    def get_middleware(self) -> list[Any]:
        return [Middleware(StoreUnavailableResponse), *super().get_middleware(), Middleware(InvalidTokenDescription)]


def _url(value: str, what: str) -> AnyHttpUrl:
    try:
        return AnyHttpUrl(value)
    except ValidationError:
        raise AuthConfigError(f"{what} is not a valid URL: {value!r}") from None


def default_authorization_server(settings: AuthSettings, public_url: str) -> str:
    """The IdP when there is one (OIDC issuer; JWT issuer of a JWKS-only setup), else the gateway
    itself, which issues the personal access tokens (and HS tokens are minted by its operator)."""
    if settings.oidc_issuer:
        return settings.oidc_issuer
    if settings.jwks_url and settings.jwt_issuer and settings.jwt_issuer.startswith(("http://", "https://")):
        return settings.jwt_issuer
    return public_url


class GatewayAuth:
    """Everything the app wires in; one Authenticator, one verifier, one challenge for /mcp and /api."""

    def __init__(self, settings: AuthSettings, *, token_store: TokenStore | None = None,
                 provisioner: UserProvisioner | None = None, mcp_path: str = "/mcp",
                 authenticator: Authenticator | None = None) -> None:
        self.settings = settings
        self.authenticator = authenticator or Authenticator(settings, token_store=token_store,
                                                            provisioner=provisioner)
        self.public_url = settings.public_url.rstrip("/")
        self.mcp_path = "/" + mcp_path.strip("/")
        # Strings, not AnyHttpUrl: the RFC 9728 model keeps "https://idp" without a trailing slash.
        self.authorization_servers: list[Any] = list(settings.authorization_servers or [])
        for server in self.authorization_servers:
            _url(server, "MCP_GATEWAY_AUTHORIZATION_SERVERS")
        if not self.authorization_servers:
            self.authorization_servers = [default_authorization_server(settings, self.public_url)]
        self.verifier = GatewayTokenVerifier(self.authenticator, base_url=self.public_url)
        self.provider = _GatewayAuthProvider(
            token_verifier=self.verifier,
            authorization_servers=self.authorization_servers,
            base_url=_url(self.public_url, "MCP_GATEWAY_PUBLIC_URL"),
            resource_name="mcp-gateway",
        )
        self.resource_url = _url(self.public_url + self.mcp_path, "MCP_GATEWAY_PUBLIC_URL")
        self.resource_metadata_url = build_resource_metadata_url(self.resource_url)

    # --- RFC 9728 -------------------------------------------------------------------------------
    def metadata_routes(self) -> list[Route]:
        """`/.well-known/oauth-protected-resource` for the whole gateway (resource = public URL).

        FastMCP itself serves the path-specific `/.well-known/oauth-protected-resource/mcp`.
        """
        return create_protected_resource_routes(
            resource_url=self.public_url,  # type: ignore[arg-type]  # validated by the metadata model
            authorization_servers=self.authorization_servers,
            resource_name="mcp-gateway",
        )

    def install_routes(self, mcp: Any) -> None:
        """Register `metadata_routes()` on a FastMCP server, so `mcp.http_app()` serves them."""
        mcp._additional_http_routes.extend(self.metadata_routes())

    # --- /api -------------------------------------------------------------------------------------
    def protect(self, app: ASGIApp) -> ASGIApp:
        """Require a valid bearer token for `app`: FastMCP's own middleware stack with our verifier.

        Inside, `require_principal(request)` (auth.starlette) returns the caller.
        """
        guarded = InvalidTokenDescription(RequireAuthMiddleware(app, [], self.resource_metadata_url, []))
        inner = StoreUnavailableResponse(
            AuthenticationMiddleware(AuthContextMiddleware(guarded), backend=BearerAuthBackend(self.verifier)))

        async def with_auth_in_scope(scope: Scope, receive: Receive, send: Send) -> None:
            scope[SCOPE_KEY] = self  # lets require_principal find us from any nested app
            await inner(scope, receive, send)

        return with_auth_in_scope

    async def principal_for_header(self, authorization: str | None) -> Principal | None:
        """Verify an Authorization header value the way the MCP endpoint does."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        access = await self.verifier.verify_token(authorization[7:])
        return principal_from_access_token(access) if access else None

    async def aclose(self) -> None:
        await self.authenticator.aclose()


def authenticated_principal(scope: dict[str, Any]) -> Principal | None:
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return principal_from_access_token(user.access_token)
    return None
