"""Personal access tokens in PostgreSQL: the auth TokenStore, and create/list/revoke for the CLI.

Everything runs under `Database.as_system("authn")`. Only the SHA-256 of a token is stored;
the plaintext exists once, in the return value of `create_token`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from psycopg.rows import class_row, scalar_row

from auth.pat import display_prefix, generate_pat, hash_pat
from auth.principal import ROLES, normalize_role
from auth.store import PatRecord
from gateway.store.db import Database

_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_LIFETIME = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """ "30d", "12h", "90m", "45s", "2w" -> timedelta. ValueError with a one-line message otherwise."""
    match = _DURATION.fullmatch(text or "")
    if not match:
        raise ValueError(f"expected a duration like 30d, 12h or 90m, got {text!r}")
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value <= timedelta(0):
        raise ValueError(f"duration must be positive, got {text!r}")
    if value > MAX_LIFETIME:
        raise ValueError(f"duration must be at most 3650d, got {text!r}")
    return value


@dataclass(frozen=True)
class TokenInfo:
    """What `token list` shows: never the secret, never its hash."""

    token_id: str
    tenant_id: str
    user_id: str
    name: str | None
    prefix: str
    role: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class PostgresTokenStore:
    """auth.store.TokenStore on gateway.api_tokens (joined with users for email and name)."""

    def __init__(self, db: Database, *, timeout: float | None = None) -> None:
        self.db = db
        self.timeout = timeout  # a caller waits on find_by_hash: bound pool checkout and query

    async def find_by_hash(self, token_hash: bytes) -> PatRecord | None:
        async with self.db.as_system("authn", timeout=self.timeout) as conn:
            cur = await conn.cursor(row_factory=class_row(PatRecord)).execute(
                "SELECT t.token_id::text AS token_id, t.tenant_id, t.user_id, t.role,"
                "       coalesce(t.scopes, '{}') AS scopes, t.expires_at, t.revoked_at, u.email, u.name"
                "  FROM gateway.api_tokens t"
                "  JOIN gateway.users u USING (tenant_id, user_id)"
                " WHERE t.token_hash = %s",
                (token_hash,),
            )
            record = await cur.fetchone()
        # PatRecord.scopes is a tuple (frozen, hashable); PostgreSQL gives a list.
        return None if record is None else replace(record, scopes=tuple(record.scopes))

    async def mark_used(self, used: Mapping[str, datetime]) -> None:
        if not used:
            return
        ids = list(used)
        # In the background, but it holds a pooled connection: a locked table must not keep it for ever.
        async with self.db.as_system("authn", timeout=None if self.timeout is None else 4 * self.timeout) as conn:
            await conn.execute(
                "UPDATE gateway.api_tokens t"
                "   SET last_used_at = greatest(t.last_used_at, v.used_at)"
                "  FROM unnest(%s::uuid[], %s::timestamptz[]) AS v(token_id, used_at)"
                " WHERE t.token_id = v.token_id",
                (ids, [used[i] for i in ids]),
            )


async def create_token(db: Database, *, tenant_id: str, user_id: str, email: str | None = None,
                       name: str | None = None, role: str = "member", expires_in: timedelta | None = None,
                       token_name: str | None = None, scopes: list[str] | None = None) -> tuple[str, str]:
    """Upsert the tenant and user, store a new token's hash. Returns (token_id, plaintext)."""
    tenant_id, user_id = tenant_id.strip(), user_id.strip()
    if not tenant_id or not user_id:
        raise ValueError("tenant and user must not be empty")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError("expiry must be in the future")
    token = generate_pat()
    async with db.as_system("authn") as conn:
        await conn.execute("INSERT INTO gateway.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING",
                           (tenant_id,))
        await conn.execute(
            "INSERT INTO gateway.users AS u (tenant_id, user_id, email, name, role, subject)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, user_id) DO UPDATE"
            "   SET email = coalesce(EXCLUDED.email, u.email), name = coalesce(EXCLUDED.name, u.name)",
            (tenant_id, user_id, email, name, normalize_role(role), user_id),
        )
        cur = await conn.cursor(row_factory=scalar_row).execute(
            "INSERT INTO gateway.api_tokens (tenant_id, user_id, name, prefix, token_hash, role, scopes, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s::interval)"
            " RETURNING token_id::text",
            (tenant_id, user_id, token_name, display_prefix(token), hash_pat(token), role, scopes or [],
             expires_in),
        )
        token_id = await cur.fetchone()
    assert token_id is not None  # INSERT ... RETURNING always returns the row
    return token_id, token


async def list_tokens(db: Database, tenant_id: str | None = None) -> list[TokenInfo]:
    async with db.as_system("authn") as conn:
        cur = await conn.cursor(row_factory=class_row(TokenInfo)).execute(
            "SELECT token_id::text AS token_id, tenant_id, user_id, name, prefix, role,"
            "       coalesce(scopes, '{}') AS scopes, created_at, expires_at, revoked_at, last_used_at"
            "  FROM gateway.api_tokens"
            " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s"
            " ORDER BY tenant_id, user_id, created_at",
            {"tenant": tenant_id},
        )
        return await cur.fetchall()


async def revoke_token(db: Database, token_id: str) -> bool:
    """True if an unrevoked token was revoked now; running gateways refuse it within 5 seconds."""
    try:
        parsed = uuid.UUID(str(token_id))
    except ValueError:
        raise ValueError(f"{token_id!r} is not a token id") from None
    async with db.as_system("authn") as conn:
        cur = await conn.execute(
            "UPDATE gateway.api_tokens SET revoked_at = now()"
            " WHERE token_id = %s AND revoked_at IS NULL RETURNING token_id",
            (parsed,),
        )
        return await cur.fetchone() is not None
