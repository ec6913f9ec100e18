"""authlib's OAuth 2.1 machinery wired to the PostgreSQL store.

authlib's grants are synchronous and framework-neutral: each request is handled in a worker
thread (`anyio.to_thread`), and the grants reach the async store through
`anyio.from_thread.run`. What authlib decides: request parsing and validation, client
authentication (none, client_secret_basic/post, private_key_jwt per RFC 7523), PKCE
(RFC 7636), the token response, RFC 7009 revocation, RFC 7591 registration, RFC 9207 `iss`.
What this module adds: S256 only, RFC 8707 `resource`, single-use codes and refresh-token
rotation with reuse detection decided in the database, and the access token (an RFC 9068
JWT signed with the gateway's ES256 key by PyJWT).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio.from_thread
import jwt
from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    JsonPayload,
    JsonRequest,
    OAuth2Error,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7591 import (
    ClientMetadataClaims,
    ClientRegistrationEndpoint,
    InvalidClientMetadataError,
    InvalidRedirectURIError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from joserfc.jwk import KeySet

from auth.local_tokens import ACCESS_TOKEN_TYPE, FAMILY_CLAIM, LOCAL_ALG, ROLE_CLAIM, TENANT_CLAIM
from gateway.oauth.cimd import CimdError, CimdFetcher, is_cimd_client_id
from gateway.oauth.clients import OAuthClient, redirect_uri_problem
from gateway.oauth.keys import SigningKeys
from gateway.oauth.store import ClientRow, CodeRow, OAuthStore, RefreshRow, digest, new_secret

T = TypeVar("T")
AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]


def _sync(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Call the async store from authlib's worker thread."""
    return anyio.from_thread.run(fn, *args)


@dataclass
class Response:
    """What authlib produced; the route turns it into a Starlette response."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:  # RFC 9207: authlib adds `iss` through this
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]


@dataclass
class GrantUser:
    """The signed-in user behind a code or refresh token."""

    principal: dict[str, Any]   # tenant_id, user_id, email, name, role
    grant_id: str
    resource: str
    family_id: str | None = None
    code: str | None = None


class AuthCode:
    def __init__(self, code: str, row: CodeRow) -> None:
        self.code = code
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = "S256"

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class RefreshCredential:
    def __init__(self, row: RefreshRow) -> None:
        self.row = row

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.row.client_id

    def get_scope(self) -> str:
        return self.row.scope


class FormRequest(OAuth2Request):
    """An OAuth2Request over form/query values already read by the async route."""

    def __init__(self, method: str, uri: str, data: Mapping[str, str], headers: Mapping[str, str],
                 datalist: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(method, uri, headers=headers)  # keep Starlette's case-insensitive Headers
        self.payload = BasicOAuth2Payload(dict(data))
        if datalist is not None:
            self.payload._datalist = {k: list(v) for k, v in datalist.items()}
        self._data = dict(data)

    @property
    def args(self) -> dict[str, str]:
        return self._data

    @property
    def form(self) -> dict[str, str]:
        return self._data


class _Json(JsonPayload):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class JsonBodyRequest(JsonRequest):
    def __init__(self, uri: str, data: dict[str, Any], headers: Mapping[str, str], registered_from: str) -> None:
        super().__init__("POST", uri, headers)
        self.payload = _Json(data)
        self.registered_from = registered_from


class S256Only(CodeChallenge):
    """PKCE is mandatory and S256 is the only method (OAuth 2.1, MCP authorization)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib's class attribute, read as a list
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("code_challenge is required (PKCE)", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this server issues tokens for."""

    error = "invalid_target"


class GatewayServer(AuthorizationServer):
    def __init__(self, oauth: OAuthService) -> None:
        super().__init__(scopes_supported=None)
        self.oauth = oauth

    def query_client(self, client_id: str) -> OAuthClient | None:
        row = _sync(self.oauth.find_client, client_id)
        return OAuthClient(row) if row else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # the generator stored the refresh token (it needed the family before signing)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> JsonRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        return Response(status, body, list(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def validate_requested_scope(self, scope: str | None) -> None:
        pass  # unknown scopes are dropped by the client model, not refused


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    server: GatewayServer

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: GrantUser = request.user
        data = request.payload.data
        row = CodeRow(tenant_id=user.principal["tenant_id"], user_id=user.principal["user_id"],
                      client_id=request.client.client_id, grant_id=user.grant_id,
                      redirect_uri=data["redirect_uri"], scope=request.scope or "", resource=user.resource,
                      code_challenge=data["code_challenge"], principal=user.principal)
        _sync(self.server.oauth.store.save_code, code, row, self.server.oauth.code_ttl)

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthCode | None:
        if not isinstance(code, str) or len(code) > 200:
            return None
        row = _sync(self.server.oauth.store.consume_code, code, client.client_id)
        if row is None:
            return None
        resource = self.request.payload.data.get("resource")
        if resource and not self.server.oauth.resource_matches(resource, row.resource):
            raise InvalidTargetError("resource does not match the authorization request")
        return AuthCode(code, row)

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        pass  # consumed atomically when it was looked up

    def authenticate_user(self, authorization_code: AuthCode) -> GrantUser:
        row = authorization_code.row
        return GrantUser(row.principal, row.grant_id, row.resource, code=authorization_code.code)


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: GatewayServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshCredential | None:
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            return None
        client = self.request.client
        row = _sync(self.server.oauth.store.use_refresh_token, refresh_token, client.client_id,
                    self.server.oauth.refresh_grace)
        if row is None:
            return None
        resource = self.request.payload.data.get("resource")
        if resource and not self.server.oauth.resource_matches(resource, row.resource):
            raise InvalidTargetError("resource does not match the grant")
        return RefreshCredential(row)

    def authenticate_user(self, refresh_token: RefreshCredential) -> GrantUser:
        row = refresh_token.row
        return GrantUser(row.principal, row.grant_id, row.resource, family_id=row.family_id)

    def revoke_old_credential(self, refresh_token: RefreshCredential) -> None:
        pass  # rotated when it was looked up


class PrivateKeyJwt(JWTBearerClientAssertion):
    """RFC 7523 client authentication, the method ChatGPT's CIMD documents name."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, oauth: OAuthService) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.oauth = oauth

    def get_audiences(self) -> list[str]:
        return [self.oauth.token_endpoint, self.oauth.issuer, self.oauth.issuer + "/"]

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        exp = claims.get("exp")
        expires = datetime.fromtimestamp(exp, UTC) if isinstance(exp, (int, float)) \
            else datetime.now(UTC) + timedelta(hours=1)
        return _sync(self.oauth.store.first_use_of_jti, str(claims["sub"]), str(jti), expires)

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        jwks = client.row.jwks
        if jwks is None and client.row.jwks_uri:
            jwks = _sync(self.oauth.cimd.jwks, client.row.jwks_uri)
        if not isinstance(jwks, dict):
            raise InvalidGrantError("client has no keys")
        return KeySet.import_key_set(jwks)  # type: ignore[arg-type]


class GatewayRevocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def __init__(self, server: GatewayServer) -> None:
        super().__init__(server)
        self.oauth = server.oauth

    def query_token(self, token_string: str, token_type_hint: str | None) -> RefreshCredential | None:
        if not isinstance(token_string, str) or len(token_string) > 16 * 1024:
            return None
        found = _sync(self.oauth.family_of_token, token_string)
        if found is None:
            return None
        family_id, client_id = found
        return _FamilyRef(family_id, client_id)  # type: ignore[return-value]

    def revoke_token(self, token: Any, request: Any) -> None:
        _sync(self.oauth.store.revoke_family, token.family_id, "client")


@dataclass
class _FamilyRef:
    family_id: str
    client_id: str

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.client_id


class GatewayRegistration(ClientRegistrationEndpoint):
    """RFC 7591, open (rate-limited by the route): public clients get no secret."""

    def __init__(self, server: GatewayServer) -> None:
        super().__init__(server, claims_classes=[ClientMetadataClaims])
        self.oauth = server.oauth

    def authenticate_token(self, request: Any) -> bool:
        return True

    def get_server_metadata(self) -> dict[str, Any]:
        return self.oauth.metadata()

    def resolve_public_key(self, request: Any) -> None:
        return None

    def generate_client_id(self, request: Any) -> str:
        return "dcr_" + new_secret(24)

    def generate_client_secret(self, request: Any) -> str | None:
        method = request.payload.data.get("token_endpoint_auth_method", "client_secret_basic")
        return new_secret(32) if method in ("client_secret_basic", "client_secret_post") else None

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info = super().generate_client_info(request)
        if info.get("client_secret") is None:  # a public client: no secret, no secret expiry (RFC 7591 §3.2.1)
            info.pop("client_secret", None)
            info.pop("client_secret_expires_at", None)
        return dict(info)

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        uris = request.payload.data.get("redirect_uris")
        if not isinstance(uris, list) or not uris or len(uris) > 20:
            raise _invalid_metadata("redirect_uris must be a list of 1 to 20 URIs")
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem:
                raise _invalid_redirect(problem)
        metadata = super().extract_client_metadata(request)
        method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in ("none", "client_secret_basic", "client_secret_post"):
            raise _invalid_metadata(f"token_endpoint_auth_method {method!r} is not supported for registration")
        grant_types = metadata.get("grant_types") or ["authorization_code"]
        if not set(grant_types) <= {"authorization_code", "refresh_token"} or "authorization_code" not in grant_types:
            raise _invalid_metadata("grant_types must be authorization_code (and refresh_token)")
        response_types = metadata.get("response_types") or ["code"]
        if response_types != ["code"]:
            raise _invalid_metadata("response_types must be [\"code\"]")
        name = metadata.get("client_name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise _invalid_metadata("client_name must be a string of at most 200 characters")
        return metadata

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> ClientRow:
        secret = client_info.get("client_secret")
        grant_types = list(client_metadata.get("grant_types") or ["authorization_code"])
        if "refresh_token" not in grant_types:
            grant_types.append("refresh_token")
        row = ClientRow(
            client_id=client_info["client_id"], kind="dcr", client_name=client_metadata.get("client_name"),
            client_uri=client_metadata.get("client_uri"), logo_uri=client_metadata.get("logo_uri"),
            redirect_uris=tuple(client_metadata["redirect_uris"]), grant_types=tuple(grant_types),
            token_endpoint_auth_method=client_metadata.get("token_endpoint_auth_method", "client_secret_basic"),
            secret_hash=digest(secret) if secret else None, scope=client_metadata.get("scope"))
        _sync(self.oauth.store.save_client, row, request.registered_from)
        return row


def _invalid_metadata(message: str) -> OAuth2Error:
    return InvalidClientMetadataError(message)


def _invalid_redirect(message: str) -> OAuth2Error:
    return InvalidRedirectURIError(message)


def _malformed() -> Response:
    body = {"error": "invalid_request", "error_description": "a parameter has characters it may not have"}
    return Response(400, body, [])


class OAuthService:
    """The authorization server: configuration, authlib server, token minting."""

    def __init__(self, *, store: OAuthStore, keys: SigningKeys, cimd: CimdFetcher, issuer: str, resource: str,
                 access_token_ttl: int, refresh_token_ttl: int, refresh_grace: float, code_ttl: int,
                 dcr_enabled: bool) -> None:
        self.store = store
        self.keys = keys
        self.cimd = cimd
        self.issuer = issuer.rstrip("/")
        self.resource = resource
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.refresh_grace = refresh_grace
        self.code_ttl = code_ttl
        self.dcr_enabled = dcr_enabled
        self.authorize_endpoint = self.issuer + "/oauth/authorize"
        self.token_endpoint = self.issuer + "/oauth/token"
        self.registration_endpoint = self.issuer + "/oauth/register"
        self.revocation_endpoint = self.issuer + "/oauth/revoke"
        self.jwks_uri = self.issuer + "/oauth/jwks"
        self.server = GatewayServer(self)
        self.server.register_grant(CodeGrant, [S256Only(required=True)])
        self.server.register_grant(RefreshGrant)
        self.server.register_client_auth_method(PrivateKeyJwt.CLIENT_AUTH_METHOD, PrivateKeyJwt(self))
        self.server.register_endpoint(GatewayRevocation(self.server))
        self.server.register_endpoint(GatewayRegistration(self.server))
        issuer_param = IssuerParameter()
        issuer_param.get_issuer = lambda: self.issuer  # type: ignore[method-assign]
        self.server.register_extension(issuer_param)
        self.server.register_token_generator("default", self._generate_token)

    # ------------------------------------------------------------------ metadata (RFC 8414)
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize_endpoint,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "PS256", "EdDSA"],
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "scopes_supported": ["mcp"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
            "resource_indicators_supported": True,
        }
        if self.dcr_enabled:
            meta["registration_endpoint"] = self.registration_endpoint
        return meta

    # ------------------------------------------------------------------ clients
    async def find_client(self, client_id: str) -> ClientRow | None:
        if not isinstance(client_id, str) or not client_id or len(client_id) > 2000:
            return None
        if is_cimd_client_id(client_id):
            try:
                document = await self.cimd.client(client_id)
            except CimdError:
                return None
            if await self.store.get_client(client_id) != document:  # grants reference it; keep it current
                await self.store.save_client(document)
            return document
        row = await self.store.get_client(client_id)
        return row if row is not None and row.kind != "cimd" else None  # a CIMD id is only ever its URL

    def resource_matches(self, requested: str, granted: str) -> bool:
        return self.normalize_resource(requested) == granted

    def normalize_resource(self, requested: str | None) -> str | None:
        """RFC 8707: this gateway's MCP URL (or its base URL) -> the audience; anything else -> None."""
        if not requested:
            return self.resource
        value = requested.rstrip("/")
        if value in (self.resource.rstrip("/"), self.issuer):
            return self.resource
        return None

    async def family_of_token(self, token: str) -> tuple[str, str] | None:
        """(family, client) of one of our refresh tokens or (signature-checked) access tokens."""
        if token.count(".") == 2:
            try:
                header = jwt.get_unverified_header(token)
                key = await self.keys.public_key(str(header.get("kid")))
                if key is None:
                    return None
                claims = jwt.decode(token, key=key, algorithms=[LOCAL_ALG], audience=self.resource,
                                    issuer=self.issuer, options={"verify_exp": False})
            except jwt.PyJWTError:
                return None
            family, client = claims.get(FAMILY_CLAIM), claims.get("client_id")
            return (family, client) if isinstance(family, str) and isinstance(client, str) else None
        return await self.store.family_of_refresh_token(token)

    # ------------------------------------------------------------------ tokens
    def _generate_token(self, *, grant_type: str, client: OAuthClient, user: GrantUser, scope: str | None,
                        expires_in: int | None, include_refresh_token: bool) -> dict[str, Any]:
        return _sync(self._mint, client, user, scope or "", include_refresh_token)

    async def _mint(self, client: OAuthClient, user: GrantUser, scope: str, include_refresh: bool) -> dict[str, Any]:
        p = user.principal
        if user.family_id is None:
            user.family_id = await self.store.create_family(
                code=user.code, tenant_id=p["tenant_id"], user_id=p["user_id"], client_id=client.client_id,
                grant_id=user.grant_id, scope=scope, resource=user.resource, role=p.get("role") or "member")
        key = await self.keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": p["user_id"], "aud": user.resource, "iat": now, "nbf": now,
            "exp": now + self.access_token_ttl, "jti": str(uuid.uuid4()), "client_id": client.client_id,
            "scope": scope, TENANT_CLAIM: p["tenant_id"], ROLE_CLAIM: p.get("role") or "member",
            FAMILY_CLAIM: user.family_id,
        }
        for name in ("email", "name"):
            if p.get(name):
                claims[name] = p[name]
        access = jwt.encode(claims, key.private_key, algorithm=LOCAL_ALG,
                            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})
        token: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                 "expires_in": self.access_token_ttl, "scope": scope}
        if include_refresh:
            refresh = new_secret(32)
            await self.store.save_refresh_token(refresh, user.family_id, p["tenant_id"], p["user_id"],
                                                self.refresh_token_ttl)
            token["refresh_token"] = refresh
        return token

    # ------------------------------------------------------------------ entry points (worker thread)
    # authlib refuses to build an error whose description would echo control characters from the
    # request (ValueError): that is still the client's mistake, answered as invalid_request.
    def token_response(self, request: FormRequest) -> Response:
        try:
            return self.server.create_token_response(request)
        except ValueError:
            return _malformed()

    def revocation_response(self, request: FormRequest) -> Response:
        try:
            return self.server.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME, request)
        except ValueError:
            return _malformed()

    def registration_response(self, request: JsonBodyRequest) -> Response:
        try:
            return self.server.create_endpoint_response(ClientRegistrationEndpoint.ENDPOINT_NAME, request)
        except ValueError:
            return _malformed()

    def validate_authorization(self, request: FormRequest) -> Any:
        """authlib's checks of an authorization request (client, redirect URI, response type, PKCE);
        raises OAuth2Error. Returns the grant."""
        try:
            return self.server.get_consent_grant(request)
        except ValueError:
            raise InvalidRequestError("a parameter has characters it may not have") from None

    def authorization_response(self, request: FormRequest, user: GrantUser | None) -> Response:
        try:
            grant = self.server.get_consent_grant(request, end_user=user)
        except ValueError:
            raise InvalidRequestError("a parameter has characters it may not have") from None
        return self.server.create_authorization_response(request, grant_user=user, grant=grant)

    def error_redirect(self, redirect_uri: str, error: OAuth2Error, state: str | None) -> str:
        params = [("error", error.error)]
        if error.description:
            params.append(("error_description", error.description))
        if state:
            params.append(("state", state))
        params.append(("iss", self.issuer))
        return add_params_to_uri(redirect_uri, params)
