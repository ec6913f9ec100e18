"""Personal access tokens over REST: `GET/POST /api/tokens`, `DELETE /api/tokens/{token_id}`.

Who may do what:
- listing reads `gateway.api_tokens` through `Database.as_principal`, so row-level security
  decides the rows: members their own tokens, tenant admins their tenant's, auditors all.
  Only metadata columns are granted to request roles; the hash is never readable here.
- creating is for yourself only (tenant and user come from the verified caller, never from
  the body), with a role no higher than your own; auditors are read-only.
- revoking first looks the token up as the caller (row-level security: a token you may not
  see is 404, exactly like a missing one), then revokes it through the token store
  (gateway/store/tokens.py), which holds the only write grant on tokens. Members may revoke only
  their own tokens, tenant admins any of their tenant's; auditors none (403).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from psycopg.rows import dict_row, scalar_row
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth import Principal
from gateway.http.api.handlers import ApiError, Endpoint, _caller, _params, json_body, require_role
from gateway.http.api.models import Params, SafeId
from gateway.store import tokens as store

if TYPE_CHECKING:
    from gateway.wiring import Services

MAX_BODY = 16 * 1024
MAX_ACTIVE_PER_USER = 25  # a flood of tokens from one account is refused, not stored
_MAY_CREATE = {"member": ("member",), "admin": ("member", "admin")}
_WRITERS = frozenset(_MAY_CREATE)  # auditors are read-only

TokenName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$",
                                 description="A label for you (no control characters)")]

_COLUMNS = ("token_id::text AS token_id, tenant_id, user_id, name, prefix, role, created_at, expires_at,"
            " revoked_at, last_used_at,"
            " CASE WHEN revoked_at IS NOT NULL THEN 'revoked'"
            "      WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' ELSE 'active' END AS state")


class TokensParams(Params):
    user_id: SafeId | None = Field(None, description="Only this user's tokens (within what you may see)")
    state: Literal["active", "expired", "revoked"] | None = Field(None, description="Only tokens in this state")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TokenName
    expires_in: str | None = Field("90d", max_length=16,
                                   description="Lifetime like 30d, 12h, 2w (at most 3650d); null = no expiry")
    role: Literal["member", "admin", "auditor"] | None = Field(
        None, description="Defaults to your own role; never higher than it")


class TokenMeta(BaseModel):
    """A token's metadata: never the secret, never its hash."""

    token_id: str
    tenant_id: str
    user_id: str
    name: str | None
    prefix: str = Field(description="First characters of the token, to recognise it")
    role: str
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    mine: bool = Field(description="The token belongs to the caller")


class TokenList(BaseModel):
    tokens: list[TokenMeta]
    count: int


class TokenCreated(TokenMeta):
    token: str = Field(description="The secret. Shown this once; only its hash is stored")


def _meta(row: dict[str, Any], principal: Principal) -> TokenMeta:
    mine = row["tenant_id"] == principal.tenant_id and row["user_id"] == principal.user_id
    return TokenMeta.model_validate({**row, "mine": mine})


class TokenHandlers:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _one(self, principal: Principal, token_id: uuid.UUID) -> dict[str, Any] | None:
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_COLUMNS} FROM gateway.api_tokens WHERE token_id = %s", (token_id,))
            return await cur.fetchone()

    # -- GET /api/tokens ---------------------------------------------------------------------
    async def list_tokens(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        p: TokensParams = _params(TokensParams, request)
        where, args = ["true"], []
        if p.user_id:
            where.append("user_id = %s")
            args.append(p.user_id)
        async with self.services.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT * FROM (SELECT {_COLUMNS} FROM gateway.api_tokens WHERE {' AND '.join(where)})"
                              " AS t WHERE %s::text IS NULL OR t.state = %s"
                              " ORDER BY t.tenant_id, t.user_id, t.created_at DESC, t.token_id LIMIT 1000",
                              [*args, p.state, p.state])
            rows = await cur.fetchall()
        items = [_meta(r, principal) for r in rows]
        return JSONResponse(TokenList(tokens=items, count=len(items)).model_dump(mode="json"))

    # -- POST /api/tokens --------------------------------------------------------------------
    async def create_token(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        require_role(principal, _WRITERS, "auditors are read-only: they cannot create tokens")
        allowed = _MAY_CREATE[principal.role]
        req = await json_body(request, TokenCreate, expected='{"name": "..."}', limit=MAX_BODY)
        role = req.role or principal.role
        if role not in allowed:
            raise ApiError(403, "forbidden", f"a {principal.role} may create tokens with role "
                                             f"{' or '.join(allowed)} only, not {role}")
        lifetime = None
        if req.expires_in is not None:
            try:
                lifetime = store.parse_duration(req.expires_in)
            except ValueError as exc:
                raise ApiError(422, "invalid_body", f"expires_in: {exc}", "expires_in") from None
        async with self.services.db.as_principal(principal) as conn:
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "SELECT count(*) FROM gateway.api_tokens WHERE tenant_id = %s AND user_id = %s"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
                (principal.tenant_id, principal.user_id))
            active = await cur.fetchone() or 0
        if active >= MAX_ACTIVE_PER_USER:
            raise ApiError(409, "too_many_tokens", f"you already have {active} active tokens (at most "
                                                   f"{MAX_ACTIVE_PER_USER}); revoke one first")
        token_id, secret = await store.create_token(
            self.services.db, tenant_id=principal.tenant_id, user_id=principal.user_id, email=principal.email,
            name=principal.name, role=role, expires_in=lifetime, token_name=req.name)
        row = await self._one(principal, uuid.UUID(token_id))
        assert row is not None  # our own token, just written
        created = TokenCreated.model_validate({**_meta(row, principal).model_dump(), "token": secret})
        return JSONResponse(created.model_dump(mode="json"), status_code=201,
                            headers={"Cache-Control": "no-store"})

    # -- DELETE /api/tokens/{token_id} -------------------------------------------------------
    async def revoke_token(self, request: Request) -> Response:
        principal = await _caller(request, self.services)
        try:
            token_id = uuid.UUID(request.path_params.get("token_id", ""))
        except ValueError:
            raise ApiError(404, "not_found", "no such token") from None
        row = await self._one(principal, token_id)
        if row is None:  # missing, or not yours to see: the same answer
            raise ApiError(404, "not_found", "no such token")
        mine = row["tenant_id"] == principal.tenant_id and row["user_id"] == principal.user_id
        require_role(principal, _WRITERS, "auditors are read-only: they cannot revoke tokens")
        if principal.role != "admin" and not mine:  # row-level security already hides these; belt and braces
            raise ApiError(404, "not_found", "no such token")
        if principal.role == "admin" and row["tenant_id"] != principal.tenant_id:
            raise ApiError(404, "not_found", "no such token")
        await store.revoke_token(self.services.db, str(token_id))
        row = await self._one(principal, token_id)
        assert row is not None
        return JSONResponse(_meta(row, principal).model_dump(mode="json"))


def token_endpoints(services: Services) -> list[Endpoint]:
    h = TokenHandlers(services)
    return [
        Endpoint("GET", "/tokens", h.list_tokens,
                 "Personal access tokens you may see (metadata only): members their own, tenant admins their "
                 "tenant's, auditors all", TokenList, TokensParams),
        Endpoint("POST", "/tokens", h.create_token,
                 "Create a personal access token for yourself; the secret is in this response only (201). "
                 "Auditors: 403", TokenCreated, body=TokenCreate, errors=(401, 403, 409, 413, 422, 503),
                 success=201),
        Endpoint("DELETE", "/tokens/{token_id}", h.revoke_token,
                 "Revoke a token: members their own, tenant admins any of their tenant's; auditors 403. "
                 "Running gateways refuse it within seconds", TokenMeta, errors=(401, 403, 404, 503),
                 path_params={"token_id": "Token id (UUID); anything else is 404"}),
    ]
