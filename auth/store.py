"""What auth needs from a database, as Protocols (the gateway implements them; auth imports nothing of it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PatRecord:
    """One row of the personal access token table, as verification needs it (never the secret)."""

    token_id: str
    tenant_id: str
    user_id: str
    role: str = "member"
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None   # timezone-aware
    revoked_at: datetime | None = None
    email: str | None = None
    name: str | None = None


@runtime_checkable
class TokenStore(Protocol):
    async def find_by_hash(self, token_hash: bytes) -> PatRecord | None:
        """The token whose SHA-256 is `token_hash` (revoked/expired included), or None."""
        ...

    async def mark_used(self, used: Mapping[str, datetime]) -> None:
        """Record last use per token id (called in batches, not per request)."""
        ...
