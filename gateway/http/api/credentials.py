"""Per-user upstream credentials over REST: `GET /api/credentials`, `PUT/DELETE /api/credentials/{upstream}`.

- GET: the caller's own links, one entry per per-user upstream (upstream, mode, linked,
  needs_relink, timestamps); never a value. `?all=1`: every link the caller may see under
  row-level security (tenant admins: their tenant's, auditors: all), with user ids.
- PUT {"token": "..."}: link your own account of a `per_user_token` upstream (204). The token
  is encrypted before it reaches the database and is never echoed.
- DELETE: unlink your own (204). Tenant admins: `?user_id=U` revokes U's link in their tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.http.api.handlers import ApiError, Endpoint, _caller, _params, json_body, require_role
from gateway.http.api.models import Params, SafeId
from gateway.http.api.tokens import MAX_BODY

if TYPE_CHECKING:
    from gateway.credentials.install import Credentials
    from gateway.wiring import Services

UpstreamToken = Annotated[str, Field(min_length=1, max_length=8192, pattern=r"^[\x21-\x7e]+$",
                                     description="The token for the upstream (printable, no spaces)")]


class CredentialsParams(Params):
    all: bool = Field(False, description="Every link you may see (tenant admins: tenant; auditors: all)")
    user_id: SafeId | None = Field(None, description="With all=1: only this user's links")


class RevokeParams(Params):
    user_id: SafeId | None = Field(None, description="Tenant admins: revoke this user's link (default: yours)")


class CredentialLink(BaseModel):
    model_config = ConfigDict(extra="ignore")

    upstream: str
    mode: str
    linked: bool
    needs_relink: bool
    tenant_id: str | None = None
    user_id: str | None = None
    linked_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    link_with: str = Field(description="token (paste one) | oauth (sign in at the upstream) | automatic")


class CredentialList(BaseModel):
    credentials: list[CredentialLink]
    count: int


class OAuthStart(BaseModel):
    authorization_url: str


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: UpstreamToken


_LINK_WITH = {"per_user_token": "token", "per_user_oauth": "oauth", "token_exchange": "automatic"}


class CredentialHandlers:
    def __init__(self, services: Services) -> None:
        self.services = services

    def _credentials(self) -> Credentials:
        found = self.services.credentials
        if found is None:
            raise ApiError(404, "not_found", "no upstream uses per-user credentials")
        return found

    def _upstream(self, request: Request) -> tuple[Credentials, str]:
        credentials = self._credentials()
        name = request.path_params.get("upstream", "")
        if name not in credentials.upstreams:
            raise ApiError(404, "not_found", f"no upstream {name!r} with per-user credentials")
        return credentials, name

    async def list_links(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: CredentialsParams = _params(CredentialsParams, request)
        credentials = self.services.credentials
        if credentials is None:
            return JSONResponse(CredentialList(credentials=[], count=0).model_dump(mode="json"))
        rows = await credentials.store.metadata(principal, everyone=p.all, user_id=p.user_id if p.all else None)
        items: list[CredentialLink] = []
        if p.all:
            items = [_link(r, credentials) for r in rows if r["upstream"] in credentials.upstreams]
        else:
            mine = {r["upstream"]: r for r in rows}
            for name, config in credentials.upstreams.items():
                row = mine.get(name)
                if config.credentials == "token_exchange":
                    items.append(CredentialLink(upstream=name, mode=config.credentials, linked=True,
                                                needs_relink=False, link_with="automatic"))
                elif row is None:
                    items.append(CredentialLink(upstream=name, mode=config.credentials, linked=False,
                                                needs_relink=False, link_with=_LINK_WITH[config.credentials]))
                else:
                    items.append(_link(row, credentials))
        return JSONResponse(CredentialList(credentials=items, count=len(items)).model_dump(mode="json"),
                            headers={"Cache-Control": "no-store"})

    async def put_token(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        credentials, name = self._upstream(request)
        mode = credentials.upstreams[name].credentials
        if mode != "per_user_token":
            raise ApiError(409, "wrong_mode", f"upstream {name!r} uses credentials = {mode!r}: "
                                              + ("sign in through the dashboard's Connections section"
                                                 if mode == "per_user_oauth" else "nothing to link"))
        body = await json_body(request, TokenBody, expected='{"token": "..."}', limit=MAX_BODY)
        from gateway.credentials.store import Secret

        await credentials.store.put(principal.tenant_id, principal.user_id, name, "per_user_token",
                                    Secret(body.token))
        credentials.forget(principal.tenant_id, principal.user_id, name)
        return Response(status_code=204, headers={"Cache-Control": "no-store"})

    async def start_oauth(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        credentials, name = self._upstream(request)
        mode = credentials.upstreams[name].credentials
        if mode != "per_user_oauth":
            raise ApiError(409, "wrong_mode", f"upstream {name!r} uses credentials = {mode!r}, not per_user_oauth")
        from gateway.credentials.linkflow import LinkFlow
        from gateway.credentials.oauth import OAuthError

        try:
            url = await LinkFlow(credentials, self.services.settings.resolved_public_url).start(principal, name)
        except OAuthError as exc:
            raise ApiError(503, "unavailable", f"upstream {name!r}: {exc}") from None
        return JSONResponse({"authorization_url": url}, headers={"Cache-Control": "no-store"})

    async def delete_link(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        credentials, name = self._upstream(request)
        p: RevokeParams = _params(RevokeParams, request)
        user_id = p.user_id or principal.user_id
        if user_id != principal.user_id:
            require_role(principal, ("admin",), "only a tenant admin may revoke another user's link")
        await credentials.store.unlink(principal.tenant_id, user_id, name)  # within the caller's tenant only
        credentials.forget(principal.tenant_id, user_id, name)
        return Response(status_code=204)


def _link(row: dict[str, Any], credentials: Credentials) -> CredentialLink:
    mode = row["mode"]
    return CredentialLink.model_validate({**row, "link_with": _LINK_WITH.get(mode, "token")})


def credential_endpoints(services: Services) -> list[Endpoint]:
    h = CredentialHandlers(services)
    return [
        Endpoint("GET", "/credentials", h.list_links,
                 "Your upstream links (never a value); all=1: every link you may see, with user ids",
                 CredentialList, CredentialsParams),
        Endpoint("PUT", "/credentials/{upstream}", h.put_token,
                 "Link your own account of a per_user_token upstream (204); the token is stored encrypted",
                 CredentialList, body=TokenBody, errors=(401, 404, 409, 413, 422, 503), success=204,
                 path_params={"upstream": "Upstream name"}),
        Endpoint("POST", "/credentials/{upstream}/oauth", h.start_oauth,
                 "per_user_oauth: start linking your account; answers the authorization server's URL to open"
                 " (single-use state bound to you, 10 minutes)", OAuthStart, errors=(401, 404, 409, 503),
                 path_params={"upstream": "Upstream name"}),
        Endpoint("DELETE", "/credentials/{upstream}", h.delete_link,
                 "Unlink your account (204); tenant admins: ?user_id=U revokes U's link in their tenant",
                 CredentialList, RevokeParams, errors=(401, 403, 404, 422, 503), success=204,
                 path_params={"upstream": "Upstream name"}),
    ]
