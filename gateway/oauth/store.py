"""The authorization server's rows, all through `Database.as_system("oauth")`.

Secrets (authorization codes, refresh tokens, client secrets, pending request ids, CSRF
tokens) are stored as SHA-256 digests only. Single use is decided by the database inside
one transaction (SELECT ... FOR UPDATE), so it holds across replicas.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.rows import class_row, dict_row, scalar_row
from psycopg.types.json import Jsonb

from auth.principal import Principal
from gateway.store.db import Database


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass(frozen=True)
class ClientRow:
    client_id: str
    kind: str
    client_name: str | None = None
    client_uri: str | None = None
    logo_uri: str | None = None
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    token_endpoint_auth_method: str = "none"
    secret_hash: bytes | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    scope: str | None = None


@dataclass(frozen=True)
class CodeRow:
    tenant_id: str
    user_id: str
    client_id: str
    grant_id: str
    redirect_uri: str
    scope: str
    resource: str
    code_challenge: str
    principal: dict[str, Any]


class FamilyRef(NamedTuple):
    family_id: str
    client_id: str


@dataclass(frozen=True)
class RefreshRow:
    family_id: str
    tenant_id: str
    user_id: str
    client_id: str
    grant_id: str
    scope: str
    resource: str
    principal: dict[str, Any]


@dataclass(frozen=True)
class PendingRow:
    params: dict[str, Any]
    csrf_hash: bytes
    idp_state_hash: bytes | None
    idp_nonce: str | None
    idp_verifier: str | None
    principal: dict[str, Any] | None = field(default=None)


_CLIENT_COLUMNS = ("client_id, kind, client_name, client_uri, logo_uri, redirect_uris, grant_types,"
                   " token_endpoint_auth_method, secret_hash, jwks, jwks_uri, scope")


def _client(row: dict[str, Any]) -> ClientRow:
    return ClientRow(**{**row, "redirect_uris": tuple(row["redirect_uris"] or ()),
                        "grant_types": tuple(row["grant_types"] or ()),
                        "secret_hash": bytes(row["secret_hash"]) if row["secret_hash"] else None})


def principal_snapshot(principal: Principal) -> dict[str, Any]:
    """What the tokens of a grant say about the user (kept with codes and families)."""
    return {"tenant_id": principal.tenant_id, "user_id": principal.user_id, "email": principal.email,
            "name": principal.name, "role": principal.role}


class OAuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ clients
    async def get_client(self, client_id: str) -> ClientRow | None:
        async with self.db.as_system("oauth") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_CLIENT_COLUMNS} FROM gateway.oauth_clients WHERE client_id = %s",
                              (client_id,))
            row = await cur.fetchone()
        return _client(row) if row else None

    async def save_client(self, client: ClientRow, registered_from: str | None = None) -> None:
        """Insert, or refresh a CIMD/config client's metadata (a DCR client id is never reused)."""
        async with self.db.as_system("oauth") as conn:
            await conn.execute(
                "INSERT INTO gateway.oauth_clients AS c (client_id, kind, client_name, client_uri, logo_uri,"
                " redirect_uris, grant_types, token_endpoint_auth_method, secret_hash, jwks, jwks_uri, scope,"
                " registered_from) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (client_id) DO UPDATE SET client_name = EXCLUDED.client_name,"
                "   client_uri = EXCLUDED.client_uri, logo_uri = EXCLUDED.logo_uri,"
                "   redirect_uris = EXCLUDED.redirect_uris, grant_types = EXCLUDED.grant_types,"
                "   token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method, jwks = EXCLUDED.jwks,"
                "   jwks_uri = EXCLUDED.jwks_uri, scope = EXCLUDED.scope, updated_at = now()"
                " WHERE c.kind <> 'dcr' AND c.kind = EXCLUDED.kind",
                (client.client_id, client.kind, client.client_name, client.client_uri, client.logo_uri,
                 list(client.redirect_uris), list(client.grant_types), client.token_endpoint_auth_method,
                 client.secret_hash, Jsonb(client.jwks) if client.jwks is not None else None, client.jwks_uri,
                 client.scope, registered_from))

    async def registrations_since(self, address: str, seconds: float) -> int:
        async with self.db.as_system("oauth") as conn:
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "SELECT count(*) FROM gateway.oauth_clients WHERE kind = 'dcr' AND registered_from = %s"
                " AND created_at > now() - make_interval(secs => %s)", (address, seconds))
            count = await cur.fetchone()
        return int(count or 0)

    # ------------------------------------------------------------------ users and grants
    async def provision(self, principal: Principal) -> None:
        async with self.db.as_system("oauth") as conn:
            await _provision(conn, principal)

    async def remembered_grant(self, principal: Principal, client_id: str, scope: str) -> str | None:
        """The live remembered grant of this user to this client covering `scope`, if any."""
        async with self.db.as_system("oauth") as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                "SELECT grant_id::text AS grant_id, scope FROM gateway.oauth_grants WHERE tenant_id = %s"
                " AND user_id = %s AND client_id = %s AND revoked_at IS NULL AND remember",
                (principal.tenant_id, principal.user_id, client_id))
            row = await cur.fetchone()
        if row is None or not set(scope.split()) <= set(row["scope"].split()):
            return None
        return str(row["grant_id"])

    async def upsert_grant(self, principal: Principal, client_id: str, scope: str, remember: bool) -> str:
        async with self.db.as_system("oauth") as conn:
            await _provision(conn, principal)
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "INSERT INTO gateway.oauth_grants AS g (tenant_id, user_id, client_id, scope, remember)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, user_id, client_id) WHERE revoked_at IS NULL DO UPDATE"
                "   SET scope = EXCLUDED.scope, remember = g.remember OR EXCLUDED.remember, last_used_at = now()"
                " RETURNING grant_id::text",
                (principal.tenant_id, principal.user_id, client_id, scope, remember))
            grant_id = await cur.fetchone()
        assert grant_id is not None
        return str(grant_id)

    async def list_grants(self, tenant_id: str | None = None, user_id: str | None = None) -> list[dict[str, Any]]:
        async with self.db.as_system("oauth") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT g.grant_id::text, g.tenant_id, g.user_id, g.client_id, c.client_name, g.scope, g.remember,"
                "       g.created_at, g.last_used_at, g.revoked_at"
                "  FROM gateway.oauth_grants g JOIN gateway.oauth_clients c USING (client_id)"
                " WHERE (%(t)s::text IS NULL OR g.tenant_id = %(t)s) AND (%(u)s::text IS NULL OR g.user_id = %(u)s)"
                " ORDER BY g.tenant_id, g.user_id, g.created_at", {"t": tenant_id, "u": user_id})
            return list(await cur.fetchall())

    async def revoke_grant(self, grant_id: str, reason: str = "user") -> bool:
        async with self.db.as_system("oauth") as conn:
            cur = await conn.execute("UPDATE gateway.oauth_grants SET revoked_at = now()"
                                     " WHERE grant_id = %s AND revoked_at IS NULL RETURNING grant_id", (grant_id,))
            found = await cur.fetchone() is not None
            await conn.execute("UPDATE gateway.oauth_token_families SET revoked_at = now(), revoke_reason = %s"
                               " WHERE grant_id = %s AND revoked_at IS NULL",
                               ("grant_revoked" if reason == "user" else reason, grant_id))
        return found

    # ------------------------------------------------------------------ codes
    async def save_code(self, code: str, row: CodeRow, ttl: int) -> None:
        async with self.db.as_system("oauth") as conn:
            await conn.execute(
                "INSERT INTO gateway.oauth_codes (code_hash, tenant_id, user_id, client_id, grant_id, redirect_uri,"
                " scope, resource, code_challenge, role, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
                (digest(code), row.tenant_id, row.user_id, row.client_id, row.grant_id, row.redirect_uri,
                 row.scope, row.resource, row.code_challenge, row.principal.get("role", "member"), ttl))
            await conn.execute("DELETE FROM gateway.oauth_codes WHERE expires_at < now() - interval '1 hour'")

    async def consume_code(self, code: str, client_id: str) -> CodeRow | None:
        """The code, once. A second presentation revokes what the first one issued (RFC 6749 §4.1.2)."""
        async with self.db.as_system("oauth") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT c.tenant_id, c.user_id, c.client_id, c.grant_id::text, c.redirect_uri, c.scope, c.resource,"
                "       c.code_challenge, c.used_at, c.family_id::text, c.expires_at < now() AS expired,"
                "       u.email, u.name, c.role"
                "  FROM gateway.oauth_codes c JOIN gateway.users u USING (tenant_id, user_id)"
                " WHERE c.code_hash = %s FOR UPDATE OF c", (digest(code),))
            row = await cur.fetchone()
            if row is None or row["client_id"] != client_id:
                return None
            if row["used_at"] is not None:
                if row["family_id"]:
                    await conn.execute(
                        "UPDATE gateway.oauth_token_families SET revoked_at = now(), revoke_reason = 'code_reuse'"
                        " WHERE family_id = %s AND revoked_at IS NULL", (row["family_id"],))
                return None
            await conn.execute("UPDATE gateway.oauth_codes SET used_at = now() WHERE code_hash = %s", (digest(code),))
            if row["expired"]:
                return None
        principal = {"tenant_id": row["tenant_id"], "user_id": row["user_id"], "email": row["email"],
                     "name": row["name"], "role": row["role"]}
        return CodeRow(row["tenant_id"], row["user_id"], row["client_id"], row["grant_id"], row["redirect_uri"],
                       row["scope"], row["resource"], row["code_challenge"], principal)

    # ------------------------------------------------------------------ families and refresh tokens
    async def create_family(self, *, code: str | None, tenant_id: str, user_id: str, client_id: str,
                            grant_id: str, scope: str, resource: str, role: str) -> str:
        async with self.db.as_system("oauth") as conn:
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "INSERT INTO gateway.oauth_token_families (tenant_id, user_id, client_id, grant_id, scope, resource,"
                " role) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING family_id::text",
                (tenant_id, user_id, client_id, grant_id, scope, resource, role))
            family_id = await cur.fetchone()
            assert family_id is not None
            if code is not None:
                await conn.execute("UPDATE gateway.oauth_codes SET family_id = %s WHERE code_hash = %s",
                                   (family_id, digest(code)))
            await conn.execute("UPDATE gateway.oauth_grants SET last_used_at = now() WHERE grant_id = %s",
                               (grant_id,))
        return str(family_id)

    async def save_refresh_token(self, token: str, family_id: str, tenant_id: str, user_id: str, ttl: int) -> None:
        async with self.db.as_system("oauth") as conn:
            await conn.execute(
                "INSERT INTO gateway.oauth_refresh_tokens (token_hash, family_id, tenant_id, user_id, expires_at)"
                " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
                (digest(token), family_id, tenant_id, user_id, ttl))

    async def use_refresh_token(self, token: str, client_id: str, grace: float) -> RefreshRow | None:
        """Rotate: the token is marked used. Presented again within `grace` seconds it still works
        (a concurrent retry); later, the whole family is revoked (a replay)."""
        async with self.db.as_system("oauth") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT r.family_id::text, r.tenant_id, r.user_id, f.client_id, f.grant_id::text, f.scope,"
                "       f.resource, r.expires_at < now() AS expired, f.revoked_at IS NOT NULL AS revoked,"
                "       g.revoked_at IS NOT NULL AS grant_revoked, r.rotated_at,"
                "       r.rotated_at IS NOT NULL AND r.rotated_at > now() - make_interval(secs => %s) AS in_grace,"
                "       u.email, u.name, f.role"
                "  FROM gateway.oauth_refresh_tokens r"
                "  JOIN gateway.oauth_token_families f USING (family_id)"
                "  JOIN gateway.oauth_grants g ON g.grant_id = f.grant_id"
                "  JOIN gateway.users u ON u.tenant_id = r.tenant_id AND u.user_id = r.user_id"
                " WHERE r.token_hash = %s FOR UPDATE OF r, f", (grace, digest(token)))
            row = await cur.fetchone()
            if row is None or row["client_id"] != client_id or row["revoked"] or row["grant_revoked"] \
                    or row["expired"]:
                return None
            if row["rotated_at"] is not None and not row["in_grace"]:
                await conn.execute(
                    "UPDATE gateway.oauth_token_families SET revoked_at = now(), revoke_reason = 'refresh_reuse'"
                    " WHERE family_id = %s", (row["family_id"],))
                return None
            if row["rotated_at"] is None:
                await conn.execute("UPDATE gateway.oauth_refresh_tokens SET rotated_at = now() WHERE token_hash = %s",
                                   (digest(token),))
            await conn.execute("UPDATE gateway.oauth_token_families SET last_used_at = now() WHERE family_id = %s",
                               (row["family_id"],))
        principal = {"tenant_id": row["tenant_id"], "user_id": row["user_id"], "email": row["email"],
                     "name": row["name"], "role": row["role"]}
        return RefreshRow(row["family_id"], row["tenant_id"], row["user_id"], row["client_id"], row["grant_id"],
                          row["scope"], row["resource"], principal)

    async def family_of_refresh_token(self, token: str) -> FamilyRef | None:
        """(family_id, client_id) of a refresh token, for revocation."""
        async with self.db.as_system("oauth") as conn:
            cur = await conn.cursor(row_factory=class_row(FamilyRef)).execute(
                "SELECT f.family_id::text AS family_id, f.client_id FROM gateway.oauth_refresh_tokens r"
                " JOIN gateway.oauth_token_families f USING (family_id) WHERE r.token_hash = %s", (digest(token),))
            return await cur.fetchone()

    async def revoke_family(self, family_id: str, reason: str) -> None:
        async with self.db.as_system("oauth") as conn:
            await conn.execute("UPDATE gateway.oauth_token_families SET revoked_at = now(), revoke_reason = %s"
                               " WHERE family_id = %s AND revoked_at IS NULL", (reason, family_id))

    async def family_revoked(self, family_id: str) -> bool:
        async with self.db.as_system("oauth") as conn:
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "SELECT f.revoked_at IS NOT NULL OR g.revoked_at IS NOT NULL"
                "  FROM gateway.oauth_token_families f JOIN gateway.oauth_grants g USING (grant_id)"
                " WHERE f.family_id = %s", (family_id,))
            revoked = await cur.fetchone()
        return revoked is None or bool(revoked)

    # ------------------------------------------------------------------ client assertions (private_key_jwt)
    async def first_use_of_jti(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        async with self.db.as_system("oauth") as conn:
            await conn.execute("DELETE FROM gateway.oauth_assertion_jtis WHERE expires_at < now()")
            cur = await conn.execute(
                "INSERT INTO gateway.oauth_assertion_jtis (client_id, jti, expires_at) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING jti", (client_id, jti[:500], expires_at))
            return await cur.fetchone() is not None

    # ------------------------------------------------------------------ pending authorization requests
    async def create_pending(self, params: dict[str, Any], ttl: int) -> tuple[str, str]:
        """A new pending request: returns (request id for the cookie, CSRF token for the forms)."""
        request_id, csrf = new_secret(), new_secret()
        async with self.db.as_system("oauth") as conn:
            await conn.execute("DELETE FROM gateway.oauth_pending WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO gateway.oauth_pending (request_hash, params, csrf_hash, expires_at)"
                " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (digest(request_id), Jsonb(params), digest(csrf), ttl))
        return request_id, csrf

    async def get_pending(self, request_id: str) -> PendingRow | None:
        async with self.db.as_system("oauth") as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT params, csrf_hash, idp_state_hash, idp_nonce, idp_verifier, principal"
                "  FROM gateway.oauth_pending"
                " WHERE request_hash = %s AND consumed_at IS NULL AND expires_at > now()", (digest(request_id),))
            row = await cur.fetchone()
        if row is None:
            return None
        return PendingRow(row["params"], bytes(row["csrf_hash"]),
                          bytes(row["idp_state_hash"]) if row["idp_state_hash"] else None,
                          row["idp_nonce"], row["idp_verifier"], row["principal"])

    async def rotate_csrf(self, request_id: str) -> str:
        """A new CSRF token for the next form of this request (only its digest is kept)."""
        csrf = new_secret()
        async with self.db.as_system("oauth") as conn:
            await conn.execute("UPDATE gateway.oauth_pending SET csrf_hash = %s WHERE request_hash = %s",
                               (digest(csrf), digest(request_id)))
        return csrf

    async def set_pending_idp(self, request_id: str, state: str, nonce: str, verifier: str) -> None:
        async with self.db.as_system("oauth") as conn:
            await conn.execute("UPDATE gateway.oauth_pending SET idp_state_hash = %s, idp_nonce = %s,"
                               " idp_verifier = %s WHERE request_hash = %s AND principal IS NULL",
                               (digest(state), nonce, verifier, digest(request_id)))

    async def set_pending_principal(self, request_id: str, principal: Principal) -> bool:
        """Who signed in; set once (a second sign-in on the same request is refused)."""
        async with self.db.as_system("oauth") as conn:
            cur = await conn.execute(
                "UPDATE gateway.oauth_pending SET principal = %s, idp_state_hash = NULL"
                " WHERE request_hash = %s AND principal IS NULL AND consumed_at IS NULL AND expires_at > now()"
                " RETURNING 1", (Jsonb(principal.model_dump(mode="json")), digest(request_id)))
            return await cur.fetchone() is not None

    async def consume_pending(self, request_id: str) -> bool:
        async with self.db.as_system("oauth") as conn:
            cur = await conn.execute(
                "UPDATE gateway.oauth_pending SET consumed_at = now()"
                " WHERE request_hash = %s AND consumed_at IS NULL AND expires_at > now() RETURNING 1",
                (digest(request_id),))
            return await cur.fetchone() is not None


async def _provision(conn: Any, principal: Principal) -> None:
    await conn.execute("INSERT INTO gateway.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING",
                       (principal.tenant_id,))
    await conn.execute(
        "INSERT INTO gateway.users AS u (tenant_id, user_id, email, name, role, issuer, subject)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, user_id) DO UPDATE SET email = coalesce(EXCLUDED.email, u.email),"
        "   name = coalesce(EXCLUDED.name, u.name), last_seen_at = now()",
        (principal.tenant_id, principal.user_id, principal.email, principal.name, principal.role,
         principal.issuer, principal.subject))
