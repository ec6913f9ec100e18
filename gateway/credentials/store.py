"""Per-user upstream credentials in gateway.upstream_credentials (encrypted, owner-only).

Values are read and written only through `Database.as_vault(tenant, user)`: the vault role's
row-level security admits exactly that identity's rows, so code here cannot read another
user's secret even by mistake. Metadata (linked, needs_relink, timestamps) is read through
`as_principal`, where members see their own rows, tenant admins their tenant's, auditors all.

A secret is a small JSON document (access token, optional refresh token and expiry), encrypted
by the Keyring with the row's (tenant, user, upstream) as associated data.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg.rows import dict_row

from auth import Principal
from gateway.credentials.keys import CredentialUnreadable, Keyring
from gateway.store.db import Database

log = logging.getLogger("mcp_gateway.credentials")

Mode = Literal["per_user_token", "per_user_oauth", "token_exchange"]
META_COLUMNS = ("tenant_id, user_id, upstream, mode, (needs_relink) AS needs_relink, linked_at, unlinked_at,"
                " last_used_at, updated_at, expires_at")


@dataclass(frozen=True)
class Secret:
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # epoch seconds
    obtained_at: float | None = None  # epoch seconds

    def expired(self) -> bool:
        """Expired, or about to: within 30 s, or within a quarter of its lifetime if that is shorter."""
        if self.expires_at is None:
            return False
        skew = 30.0
        if self.obtained_at is not None:
            skew = min(skew, max(0.0, self.expires_at - self.obtained_at) / 4)
        return self.expires_at - skew <= time.time()

    def encode(self) -> bytes:
        return json.dumps({"access_token": self.access_token, "refresh_token": self.refresh_token,
                           "expires_at": self.expires_at, "obtained_at": self.obtained_at}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Secret:
        doc = json.loads(data)
        return cls(doc["access_token"], doc.get("refresh_token"), doc.get("expires_at"), doc.get("obtained_at"))

    def __repr__(self) -> str:  # never the values
        return f"Secret(expires_at={self.expires_at!r}, refresh={'yes' if self.refresh_token else 'no'})"


@dataclass(frozen=True)
class Lookup:
    state: Literal["linked", "unlinked", "needs_relink"]
    secret: Secret | None = None


class CredentialStore:
    def __init__(self, db: Database, keyring: Keyring | None) -> None:
        self.db = db
        self._keyring = keyring  # None: metadata and unlink only (the operator CLI)

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            raise RuntimeError("no credentials key configured")
        return self._keyring

    async def get(self, tenant_id: str, user_id: str, upstream: str) -> Lookup:
        """The caller's own credential for `upstream` (re-encrypted under the current key if older)."""
        async with self.db.as_vault(tenant_id, user_id) as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                "SELECT secret, needs_relink FROM gateway.upstream_credentials"
                " WHERE tenant_id = %s AND user_id = %s AND upstream = %s", (tenant_id, user_id, upstream))
            row = await cur.fetchone()
            if row is None or row["secret"] is None:
                return Lookup("unlinked")
            blob, needs_relink = bytes(row["secret"]), row["needs_relink"]
            if needs_relink:
                return Lookup("needs_relink")
            try:
                secret = Secret.decode(self.keyring.decrypt(blob, tenant_id, user_id, upstream))
            except CredentialUnreadable as exc:
                log.warning("credential of %s/%s for upstream %s is unreadable: %s", tenant_id, user_id, upstream,
                            exc, extra={"event": "credential_unreadable", "upstream": upstream})
                return Lookup("needs_relink")
            if self.keyring.stale(blob):
                await conn.execute(
                    "UPDATE gateway.upstream_credentials SET secret = %s, updated_at = now()"
                    " WHERE tenant_id = %s AND user_id = %s AND upstream = %s",
                    (self.keyring.encrypt(secret.encode(), tenant_id, user_id, upstream), tenant_id, user_id,
                     upstream))
            await conn.execute(
                "UPDATE gateway.upstream_credentials SET last_used_at = now()"
                " WHERE tenant_id = %s AND user_id = %s AND upstream = %s"
                " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                (tenant_id, user_id, upstream))
            return Lookup("linked", secret)

    async def put(self, tenant_id: str, user_id: str, upstream: str, mode: Mode, secret: Secret) -> None:
        blob = self.keyring.encrypt(secret.encode(), tenant_id, user_id, upstream)
        expires = datetime.fromtimestamp(secret.expires_at, UTC) if secret.expires_at else None
        async with self.db.as_vault(tenant_id, user_id) as conn:
            await conn.execute(
                "INSERT INTO gateway.upstream_credentials AS c (tenant_id, user_id, upstream, mode, secret,"
                " expires_at, needs_relink, linked_at, unlinked_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, false, now(), NULL, now())"
                " ON CONFLICT (tenant_id, user_id, upstream) DO UPDATE SET mode = excluded.mode,"
                " secret = excluded.secret, expires_at = excluded.expires_at, needs_relink = false,"
                " linked_at = CASE WHEN c.secret IS NULL OR c.needs_relink THEN now() ELSE c.linked_at END,"
                " unlinked_at = NULL, updated_at = now()",
                (tenant_id, user_id, upstream, mode, blob, expires))

    async def unlink(self, tenant_id: str, user_id: str, upstream: str) -> bool:
        """Forget the value (the row stays, as metadata). True if something was linked."""
        async with self.db.as_vault(tenant_id, user_id) as conn:
            cur = await conn.execute(
                "UPDATE gateway.upstream_credentials SET secret = NULL, expires_at = NULL, needs_relink = false,"
                " unlinked_at = now(), updated_at = now()"
                " WHERE tenant_id = %s AND user_id = %s AND upstream = %s AND secret IS NOT NULL",
                (tenant_id, user_id, upstream))
            return cur.rowcount > 0

    async def mark_needs_relink(self, tenant_id: str, user_id: str, upstream: str) -> None:
        async with self.db.as_vault(tenant_id, user_id) as conn:
            await conn.execute(
                "UPDATE gateway.upstream_credentials SET needs_relink = true, updated_at = now()"
                " WHERE tenant_id = %s AND user_id = %s AND upstream = %s AND secret IS NOT NULL",
                (tenant_id, user_id, upstream))

    async def metadata(self, principal: Principal, *, everyone: bool = False,
                       user_id: str | None = None) -> list[dict[str, Any]]:
        """Rows the principal may see (no values). `everyone` = not only the caller's own."""
        where, args = ["true"], []
        if not everyone:
            where.append("tenant_id = %s AND user_id = %s")
            args += [principal.tenant_id, principal.user_id]
        if user_id is not None:
            where.append("user_id = %s")
            args.append(user_id)
        async with self.db.as_principal(principal) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {META_COLUMNS}, (unlinked_at IS NULL AND linked_at IS NOT NULL) AS linked"
                              f" FROM gateway.upstream_credentials WHERE {' AND '.join(where)}"
                              " ORDER BY tenant_id, user_id, upstream LIMIT 5000", args)
            return await cur.fetchall()
