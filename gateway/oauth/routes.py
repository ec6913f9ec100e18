"""HTTP endpoints of the authorization server.

    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata (also /.well-known/openid-configuration)
    GET  /oauth/authorize   validate, remember the request (cookie), send the browser to sign-in
    GET  /oauth/login       personal-token form, or a redirect to the IdP
    POST /oauth/login       personal-token sign-in
    GET  /oauth/callback    the IdP's answer
    GET  /oauth/consent     consent page (skipped for a remembered client)
    POST /oauth/consent     allow / deny -> redirect to the client with code or error (+ iss, RFC 9207)
    POST /oauth/token       authorization_code, refresh_token
    POST /oauth/revoke      RFC 7009
    POST /oauth/register    RFC 7591 (rate-limited; MCP_GATEWAY_OAUTH_DCR)
    GET  /oauth/jwks        the gateway's public signing keys

The pending request lives in the database; the browser holds only its random id in an
HttpOnly, SameSite=Lax cookie, and every form carries a CSRF token checked against it. The
only redirects out of the gateway go to a redirect URI validated against the client.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
from anyio import to_thread
from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from auth.errors import TokenRejected
from auth.principal import Principal
from auth.provider import GatewayAuth
from gateway.oauth import pages
from gateway.oauth.cimd import CimdError, is_cimd_client_id
from gateway.oauth.clients import OAuthClient
from gateway.oauth.idp import IdpError, OidcLogin
from gateway.oauth.server import FormRequest, GrantUser, InvalidTargetError, JsonBodyRequest, OAuthService
from gateway.oauth.server import Response as AuthlibResponse
from gateway.oauth.store import digest, principal_snapshot

log = logging.getLogger("mcp_gateway.oauth")

COOKIE = "mcpgw_oauth"
PENDING_TTL = 600
MAX_FORM_BYTES = 64 * 1024
# Parameters of an authorization request we keep while the user signs in.
AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                    "code_challenge_method", "resource")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(response: AuthlibResponse) -> Response:
    headers = dict(response.headers)
    headers.update(NO_STORE)
    headers.pop("Content-Type", None)
    return JSONResponse(response.body, status_code=response.status, headers=headers)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=NO_STORE)


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=pages.SECURITY_HEADERS)


class OAuthRoutes:
    def __init__(self, oauth: OAuthService, gateway_auth: GatewayAuth, *, idp: OidcLogin | None,
                 dcr_per_hour: int, secure_cookies: bool) -> None:
        self.oauth = oauth
        self.gateway_auth = gateway_auth
        self.idp = idp
        self.dcr_per_hour = dcr_per_hour
        self.secure_cookies = secure_cookies

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/oauth-authorization-server", _guard(self.metadata)),
            Route("/.well-known/openid-configuration", _guard(self.metadata)),
            Route("/oauth/jwks", _guard(self.jwks)),
            Route("/oauth/authorize", _guard(self.authorize), methods=["GET"]),
            Route("/oauth/login", _guard(self.login), methods=["GET", "POST"]),
            Route("/oauth/callback", _guard(self.callback), methods=["GET"]),
            Route("/oauth/consent", _guard(self.consent), methods=["GET", "POST"]),
            Route("/oauth/token", _guard(self.token), methods=["POST"]),
            Route("/oauth/revoke", _guard(self.revoke), methods=["POST"]),
            Route("/oauth/register", _guard(self.register), methods=["POST"]),
        ]

    # ------------------------------------------------------------------ metadata and keys
    async def metadata(self, request: Request) -> JSONResponse:
        return JSONResponse(self.oauth.metadata(), headers={"Cache-Control": "public, max-age=300"})

    async def jwks(self, request: Request) -> JSONResponse:
        return JSONResponse(await self.oauth.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    # ------------------------------------------------------------------ token, revoke, register
    async def _form(self, request: Request) -> tuple[dict[str, str], dict[str, list[str]]] | JSONResponse:
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return _oauth_error(400, "invalid_request", "send application/x-www-form-urlencoded")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _oauth_error(413, "invalid_request", "request body too large")
        form = await request.form()
        values: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                values.setdefault(key, []).append(value)
        for key, items in values.items():
            if len(items) > 1:
                return _oauth_error(400, "invalid_request", f"parameter {key!r} given more than once")
        return {k: v[0] for k, v in values.items()}, values

    async def token(self, request: Request) -> Response:
        parsed = await self._form(request)
        if isinstance(parsed, Response):
            return parsed
        data, datalist = parsed
        req = FormRequest("POST", self.oauth.token_endpoint, data, request.headers, datalist)
        return _json(await to_thread.run_sync(self.oauth.token_response, req))

    async def revoke(self, request: Request) -> Response:
        parsed = await self._form(request)
        if isinstance(parsed, Response):
            return parsed
        data, datalist = parsed
        req = FormRequest("POST", self.oauth.revocation_endpoint, data, request.headers, datalist)
        response = await to_thread.run_sync(self.oauth.revocation_response, req)
        return _json(response) if response.status != 200 else Response(status_code=200, headers=NO_STORE)

    async def register(self, request: Request) -> Response:
        if not self.oauth.dcr_enabled:
            return _oauth_error(404, "invalid_request", "dynamic client registration is switched off here")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _oauth_error(413, "invalid_client_metadata", "registration request too large")
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return _oauth_error(400, "invalid_client_metadata", "body is not JSON")
        if not isinstance(data, dict):
            return _oauth_error(400, "invalid_client_metadata", "body is not a JSON object")
        address = request.client.host if request.client else "unknown"
        if await self.oauth.store.registrations_since(address, 3600) >= self.dcr_per_hour:
            return _oauth_error(429, "invalid_request", "too many client registrations from this address")
        req = JsonBodyRequest(self.oauth.registration_endpoint, data, request.headers, address)
        return _json(await to_thread.run_sync(self.oauth.registration_response, req))

    # ------------------------------------------------------------------ authorize
    async def authorize(self, request: Request) -> Response:
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in AUTHORIZE_PARAMS:
                if key in params:
                    return pages.error_page("invalid_request", f"parameter {key!r} given more than once")
                params[key] = value
        client_id = params.get("client_id", "")
        if is_cimd_client_id(client_id):
            try:
                await self.oauth.cimd.client(client_id)
            except CimdError as exc:
                return pages.error_page("invalid_client", str(exc))
        req = FormRequest("GET", self.oauth.authorize_endpoint, params, request.headers)
        try:
            await to_thread.run_sync(self.oauth.validate_authorization, req)
            if self.oauth.normalize_resource(params.get("resource")) is None:
                raise InvalidTargetError("resource must be this gateway's MCP URL",
                                         redirect_uri=params.get("redirect_uri"))
        except OAuth2Error as error:
            return self._authorize_error(error, params)
        request_id, _csrf = await self.oauth.store.create_pending(params, PENDING_TTL)
        response = _redirect("/oauth/login")
        response.set_cookie(COOKIE, request_id, max_age=PENDING_TTL, path="/oauth", httponly=True,
                            samesite="lax", secure=self.secure_cookies)
        return response

    def _authorize_error(self, error: OAuth2Error, params: dict[str, str]) -> Response:
        # authlib sets redirect_uri only once the client and the redirect URI were validated
        if error.redirect_uri:
            return _redirect(self.oauth.error_redirect(error.redirect_uri, error, params.get("state")))
        return pages.error_page(error.error or "invalid_request", error.description or "invalid authorization request")

    # ------------------------------------------------------------------ pending request helpers
    async def _pending(self, request: Request) -> tuple[str, Any] | None:
        request_id = request.cookies.get(COOKIE)
        if not request_id or len(request_id) > 200:
            return None
        pending = await self.oauth.store.get_pending(request_id)
        return (request_id, pending) if pending else None

    async def _csrf_ok(self, request: Request, pending: Any) -> tuple[bool, dict[str, str]]:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        token = values.get("csrf", "")
        return bool(token) and hmac.compare_digest(digest(token), pending.csrf_hash), values

    async def _client_name(self, pending: Any) -> str:
        row = await self.oauth.find_client(pending.params.get("client_id", ""))
        return OAuthClient(row).display_name if row else pending.params.get("client_id", "")

    async def _fresh_csrf(self, request_id: str) -> str:
        """A CSRF token for this page view (the previous one stops working)."""
        return await self.oauth.store.rotate_csrf(request_id)

    # ------------------------------------------------------------------ sign-in
    async def login(self, request: Request) -> Response:
        found = await self._pending(request)
        if found is None:
            return pages.error_page("invalid_request", "no authorization request in progress (or it expired)")
        request_id, pending = found
        if pending.principal is not None:
            return _redirect("/oauth/consent")
        if request.method == "GET":
            if self.idp is not None:
                try:
                    url, state, nonce, verifier = await self.idp.start()
                except IdpError as exc:
                    return pages.error_page("temporarily_unavailable", str(exc), 503)
                await self.oauth.store.set_pending_idp(request_id, state, nonce, verifier)
                return RedirectResponse(url, status_code=303, headers=pages.SECURITY_HEADERS)
            return pages.login_page(await self._fresh_csrf(request_id), await self._client_name(pending))
        ok, form = await self._csrf_ok(request, pending)
        if not ok:
            return pages.error_page("invalid_request", "the form expired or was not sent from this page", 403)
        if self.idp is not None:
            return pages.error_page("invalid_request", "sign in through the identity provider", 400)
        token = form.get("token", "").strip()
        principal: Principal | None = None
        reason = "enter a personal access token"
        if token:
            try:
                principal = await self.gateway_auth.authenticator.authenticate(token)
            except TokenRejected as exc:
                reason = f"that token was refused: {exc.reason}"
            else:
                if principal.token_kind != "pat":
                    principal, reason = None, "only personal access tokens sign in here"
        if principal is None:
            return pages.login_page(await self._fresh_csrf(request_id), await self._client_name(pending),
                                    error=reason, status=401)
        await self.oauth.store.set_pending_principal(request_id, principal)
        return _redirect("/oauth/consent")

    async def callback(self, request: Request) -> Response:
        found = await self._pending(request)
        if found is None or self.idp is None:
            return pages.error_page("invalid_request", "no sign-in in progress (or it expired)")
        request_id, pending = found
        state = request.query_params.get("state", "")
        if not state or pending.idp_state_hash is None or not hmac.compare_digest(digest(state),
                                                                                     pending.idp_state_hash):
            return pages.error_page("invalid_request", "state does not match this sign-in", 403)
        if request.query_params.get("error"):
            return pages.error_page("access_denied", "the identity provider did not sign you in", 403)
        code = request.query_params.get("code", "")
        try:
            principal = await self.idp.finish(code, nonce=pending.idp_nonce or "", verifier=pending.idp_verifier or "")
        except IdpError as exc:
            return pages.error_page("access_denied", str(exc), 403)
        await self.oauth.store.set_pending_principal(request_id, principal)
        return _redirect("/oauth/consent")

    # ------------------------------------------------------------------ consent
    async def consent(self, request: Request) -> Response:
        found = await self._pending(request)
        if found is None:
            return pages.error_page("invalid_request", "no authorization request in progress (or it expired)")
        request_id, pending = found
        if pending.principal is None:
            return _redirect("/oauth/login")
        principal = Principal.model_validate(pending.principal)
        params = pending.params
        row = await self.oauth.find_client(params.get("client_id", ""))
        if row is None:
            return pages.error_page("invalid_client", "the client is no longer known")
        client = OAuthClient(row)
        scope = client.get_allowed_scope(params.get("scope"))
        if request.method == "GET":
            if await self.oauth.store.remembered_grant(principal, client.client_id, scope):
                return await self._finish(request_id, params, principal, scope, approve=True, remember=True)
            return pages.consent_page(await self._fresh_csrf(request_id), client_name=client.display_name,
                                      client_id=client.client_id, client_uri=row.client_uri,
                                      redirect_host=_origin(params.get("redirect_uri", "")), scope=scope,
                                      user=principal.email or principal.user_id, tenant=principal.tenant_id)
        ok, form = await self._csrf_ok(request, pending)
        if not ok:
            return pages.error_page("invalid_request", "the form expired or was not sent from this page", 403)
        return await self._finish(request_id, params, principal, scope, approve=form.get("decision") == "approve",
                                  remember=form.get("remember") == "1")

    async def _finish(self, request_id: str, params: dict[str, str], principal: Principal, scope: str, *,
                      approve: bool, remember: bool) -> Response:
        if not await self.oauth.store.consume_pending(request_id):
            return pages.error_page("invalid_request", "this authorization request was already answered")
        user: GrantUser | None = None
        if approve:
            grant_id = await self.oauth.store.upsert_grant(principal, params["client_id"], scope, remember)
            resource = self.oauth.normalize_resource(params.get("resource")) or self.oauth.resource
            user = GrantUser(principal_snapshot(principal), grant_id, resource)
        req = FormRequest("GET", self.oauth.authorize_endpoint, params, {})
        try:
            response = await to_thread.run_sync(self.oauth.authorization_response, req, user)
        except OAuth2Error as error:
            redirect = self._authorize_error(error, params)
        else:
            redirect = _redirect(response.location) if response.location else \
                pages.error_page("server_error", "no redirect produced", 500)
        redirect.delete_cookie(COOKIE, path="/oauth")
        return redirect


def _guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A bug or an unreachable database is logged (never a token) and answered as an OAuth
    server_error / temporarily_unavailable, not a bare traceback."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            log.exception("OAuth %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
            return _oauth_error(503 if isinstance(exc, psycopg.OperationalError) else 500,
                                "temporarily_unavailable" if isinstance(exc, psycopg.OperationalError)
                                else "server_error", "the authorization server could not answer")

    return guarded


def _origin(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
