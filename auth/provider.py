"""FastMCP wiring: a TokenVerifier over the Authenticator, RFC 9728 metadata, the 401 challenge.

Usage (see docs/auth.md):

    gateway_auth = GatewayAuth(AuthSettings(), token_store=store)
    mcp = FastMCP("gateway", auth=gateway_auth.provider)
    gateway_auth.install_routes(mcp)          # adds /.well-known/oauth-protected-resource
    app = mcp.http_app(path="/mcp")           # FastMCP adds /.well-known/oauth-protected-resource/mcp
    api = gateway_auth.protect(api_app)       # /api/*: same verifier, same challenge
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
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
from auth.local_tokens import LocalTokenVerifier
from auth.principal import Principal
from auth.settings import AuthSettings
from auth.shared_tokens import SharedAccessToken, SharedAccessTokens
from auth.store import TokenStore
from auth.unavailable import StoreUnavailableResponse
from fastmcp_private import add_http_routes

log = logging.getLogger("auth")

PRINCIPAL_CLAIM = "mcp_gateway_principal"
SCOPE_KEY = "mcp_gateway_auth"


def access_token_for(token: str, principal: Principal, leeway: float = 0.0) -> SharedAccessToken:
    """client_id/subject are the principal, so the SDK binds a stateful session to it (not to a token).

    The SDK re-checks `expires_at` without leeway; IdP tokens get ours added so both agree.
    """
    if principal.token_kind in ("pat", "oauth"):
        leeway = 0.0
    access = SharedAccessToken(
        token=token,
        client_id=principal.key,
        scopes=list(principal.scopes),
        expires_at=int(principal.expires_at.timestamp() + leeway) if principal.expires_at else None,
        subject=principal.user_id,
        claims={PRINCIPAL_CLAIM: principal.model_dump(mode="json")},
    )
    access._principal = principal
    return access


def principal_from_access_token(access_token: Any) -> Principal | None:
    if isinstance(access_token, SharedAccessToken):
        principal = access_token.principal
        if principal is not None:
            return principal  # made by access_token_for: the claim below is this principal
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


class Refusal:
    """Why this request's token was refused; filled in by the verifier, read when the 401 is sent."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None


_refusal: ContextVar[Refusal | None] = ContextVar("mcp_gateway_refusal", default=None)


@contextmanager
def noting_refusal() -> Iterator[Refusal]:
    """Within this block, the verifier notes why it refused a token (nested blocks share the outer note)."""
    outer = _refusal.get()
    if outer is not None:
        yield outer
        return
    note = Refusal()
    reset = _refusal.set(note)
    try:
        yield note
    finally:
        _refusal.reset(reset)


_DESCRIPTION = re.compile(r'error_description="[^"]*"')

# Said after the reason in every 401 for a token that was sent but refused. FastMCP's default tells
# clients to "automatically re-register", which only OAuth clients can do; a person with a personal
# access token needs to be told what to do instead.
WHAT_TO_DO = ("A personal access token (mcpgw_...) is not renewed by your client: get a new one "
              "(mcp-gateway token create) and put it in your client config. A token from your identity "
              "provider: sign in again.")


def safe_description(reason: str | None) -> str:
    """`error_description` for a refused token: the reason, then what to do. A quoted-string value
    (RFC 6750): printable ASCII, no quote or backslash."""
    text = f"{reason[:160]}. {WHAT_TO_DO}" if reason else f"The bearer token was refused. {WHAT_TO_DO}"
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "'" for ch in text)


def describe_challenge(www_authenticate: str, reason: str | None) -> str:
    """The challenge with `error_description` set to the reason and what to do."""
    return _DESCRIPTION.sub(lambda _: f'error_description="{safe_description(reason)}"', www_authenticate, 1)


class RefusalReasons:
    """ASGI middleware: a 401 for a refused bearer token names the reason in `error_description`
    (header and JSON body), e.g. "token subject contains a NUL character", then what a person should do
    about it. Reasons are short fixed
    phrases made by auth, never the token or a claim value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _refusal.get() is not None:  # nested: the outer one rewrites
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def describing(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 401:
                held = message  # the body decides the content-length
                return
            if held is not None and message["type"] == "http.response.body":
                start, held = held, None
                await _send_described(send, start, message, note.reason)
                return
            await send(message)

        with noting_refusal() as note:
            await self.app(scope, receive, describing)


async def _send_described(send: Send, start: Message, body: Message, reason: str | None) -> None:
    headers = list(start.get("headers", []))
    challenge = next((v.decode("latin-1") for k, v in headers if k.lower() == b"www-authenticate"), "")
    if 'error="invalid_token"' not in challenge or body.get("more_body"):
        await send(start)
        await send(body)
        return
    description = safe_description(reason)
    payload = json.dumps({"error": "invalid_token", "error_description": description}).encode()
    rewritten = []
    for key, value in headers:
        if key.lower() == b"www-authenticate":
            value = describe_challenge(challenge, reason).encode("latin-1")
        elif key.lower() == b"content-length":
            value = str(len(payload)).encode()
        rewritten.append((key, value))
    await send({**start, "headers": rewritten})
    await send({**body, "body": payload})


class _GatewayRemoteAuth(RemoteAuthProvider):
    """RemoteAuthProvider whose 401s say why a token was refused."""

    def get_middleware(self) -> list[Any]:
        return [Middleware(StoreUnavailableResponse), Middleware(RefusalReasons), *super().get_middleware()]


class GatewayTokenVerifier(TokenVerifier):
    """FastMCP's view of the Authenticator. Never raises: a refusal is None (FastMCP answers 401)."""

    def __init__(self, authenticator: Authenticator, *, base_url: str) -> None:
        super().__init__(base_url=base_url)
        self.authenticator = authenticator
        self.on_refused: list[Callable[[str], None]] = []  # called with the reason (metrics); must not raise
        # every request with the same token gets the same AccessToken (open sessions keep some alive)
        self.issued = SharedAccessTokens(authenticator.settings.cache_max_entries)

    def known_good(self, token: str) -> bool:
        """`verify_token(token)` would answer at once with an access token (see Authenticator.known_good)."""
        return self.authenticator.known_good(token.strip(" \t"))

    async def verify_token(self, token: str) -> AccessToken | None:
        token = token.strip(" \t")
        try:
            principal = await self.authenticator.authenticate(token)
        except TokenRejected as exc:
            shown = "(oversized)" if len(token) > self.authenticator.settings.max_token_bytes \
                else token_fingerprint(token)
            log.info("bearer token %s refused: %s", shown, exc.reason)
            note = _refusal.get()
            if note is not None:
                note.reason = exc.reason
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
        return self.issued.get(token, principal, self.authenticator.settings.leeway_seconds, access_token_for)


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

    def __init__(self, settings: AuthSettings, *, token_store: TokenStore | None = None, mcp_path: str = "/mcp",
                 authenticator: Authenticator | None = None, local_tokens: LocalTokenVerifier | None = None,
                 authorization_server: str | None = None) -> None:
        """`local_tokens` + `authorization_server`: the gateway is its own OAuth authorization
        server (RFC 9728 metadata names it, its access tokens verify beside every other kind)."""
        self.settings = settings
        self.authenticator = authenticator or Authenticator(settings, token_store=token_store,
                                                            local_tokens=local_tokens)
        self.public_url = settings.public_url.rstrip("/")
        self.mcp_path = "/" + mcp_path.strip("/")
        # Strings, not AnyHttpUrl: the RFC 9728 model keeps "https://idp" without a trailing slash.
        self.authorization_servers: list[Any] = list(settings.authorization_servers or [])
        for server in self.authorization_servers:
            _url(server, "MCP_GATEWAY_AUTHORIZATION_SERVERS")
        if not self.authorization_servers:
            self.authorization_servers = [authorization_server or default_authorization_server(settings,
                                                                                               self.public_url)]
        self.verifier = GatewayTokenVerifier(self.authenticator, base_url=self.public_url)
        self.provider = _GatewayRemoteAuth(
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
        add_http_routes(mcp, self.metadata_routes())

    # --- /api -------------------------------------------------------------------------------------
    def protect(self, app: ASGIApp) -> ASGIApp:
        """Require a valid bearer token for `app`: FastMCP's own middleware stack with our verifier.

        Inside, `require_principal(request)` (auth.starlette) returns the caller.
        """
        guarded = RequireAuthMiddleware(app, [], self.resource_metadata_url, [])
        inner = StoreUnavailableResponse(RefusalReasons(
            AuthenticationMiddleware(AuthContextMiddleware(guarded), backend=BearerAuthBackend(self.verifier))))

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


def authenticated_principal(scope: MutableMapping[str, Any]) -> Principal | None:
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return principal_from_access_token(user.access_token)
    return None
