"""A user's OAuth grants ("this client may act as me"): listed and revoked through the REST API
(row-level security decides what a caller sees: a member their own, a tenant admin their tenant's,
an auditor all, read-only) and the CLI (operators)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.principal import Principal
from auth.provider import GatewayAuth
from auth.starlette import Unauthorized, require_principal
from gateway.oauth.store import OAuthStore
from gateway.store.db import Database

_COLUMNS = ("g.grant_id::text AS grant_id, g.tenant_id, g.user_id, g.client_id, c.client_name, c.client_uri,"
            " g.scope, g.remember, g.created_at, g.last_used_at, g.revoked_at")


async def visible_grants(db: Database, principal: Principal, grant_id: str | None = None) -> list[dict[str, Any]]:
    """The grants `principal` may see (RLS), newest first; one when `grant_id` is given."""
    async with db.as_principal(principal) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_COLUMNS} FROM gateway.oauth_grants g LEFT JOIN gateway.oauth_clients c USING (client_id)"
            " WHERE (%(id)s::uuid IS NULL OR g.grant_id = %(id)s::uuid) ORDER BY g.created_at DESC LIMIT 500",
            {"id": grant_id})
        return list(await cur.fetchall())


def _json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()} for row in rows]


class GrantsApi:
    def __init__(self, db: Database, store: OAuthStore, gateway_auth: GatewayAuth) -> None:
        self.db = db
        self.store = store
        self.gateway_auth = gateway_auth

    def routes(self) -> list[Route]:
        return [Route("/api/oauth/grants", self.list, methods=["GET"]),
                Route("/api/oauth/grants/{grant_id}", self.revoke, methods=["DELETE"])]

    async def _caller(self, request: Request) -> Principal | Response:
        try:
            return await require_principal(request, self.gateway_auth)
        except Unauthorized as exc:
            return JSONResponse({"detail": exc.detail}, status_code=401, headers=exc.headers)

    async def list(self, request: Request) -> Response:
        caller = await self._caller(request)
        if isinstance(caller, Response):
            return caller
        return JSONResponse({"grants": _json(await visible_grants(self.db, caller))})

    async def revoke(self, request: Request) -> Response:
        caller = await self._caller(request)
        if isinstance(caller, Response):
            return caller
        grant_id = request.path_params["grant_id"]
        try:
            uuid.UUID(grant_id)
        except ValueError:
            return JSONResponse({"detail": "not a grant id"}, status_code=422)
        if caller.role == "auditor":
            return JSONResponse({"detail": "auditors have read-only access"}, status_code=403)
        found = await visible_grants(self.db, caller, grant_id)
        if not found:  # another user's or another tenant's grant looks exactly like a missing one
            return JSONResponse({"detail": "no such grant"}, status_code=404)
        own = found[0]["user_id"] == caller.user_id and found[0]["tenant_id"] == caller.tenant_id
        await self.store.revoke_grant(grant_id, reason="user" if own else "admin")
        return Response(status_code=204)
