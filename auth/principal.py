"""Who is calling: the one model every part of the gateway agrees on."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["member", "admin", "auditor"]  # the one role type: tokens, config keys, principals, CLI
ROLES: tuple[Role, ...] = get_args(Role)
PRIVILEGED_ROLES: frozenset[Role] = frozenset({"admin", "auditor"})  # the SQL console, admin tools
TokenKind = Literal["jwt_hs", "jwt_jwks", "introspection", "pat", "oauth"]


def normalize_role(value: object) -> Role:
    """`admin` and `auditor` are privileged; anything else (unknown, missing) is a member."""
    if isinstance(value, str) and value.strip().lower() in PRIVILEGED_ROLES:
        return value.strip().lower()  # type: ignore[return-value]
    return "member"


class Principal(BaseModel):
    """A verified caller. Immutable: built once per token verification."""

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(min_length=1, max_length=500)
    tenant_id: str = Field(min_length=1, max_length=200)
    email: str | None = None
    name: str | None = None
    role: Role = "member"
    scopes: tuple[str, ...] = ()
    token_kind: TokenKind
    token_id: str | None = None  # PAT id, or the JWT's jti when present
    issuer: str | None = None
    subject: str | None = None
    expires_at: datetime | None = None

    @property
    def key(self) -> str:
        """Stable identity across requests: tenant and user, never the token.

        Length-prefixed, because both may hold `/` and `|` (the gateway itself makes user ids
        `<iss>|<sub>`): tenant `a/b` + user `c` is `3:a/b/c`, tenant `a` + user `b/c` is `1:a/b/c`.
        """
        return f"{len(self.tenant_id)}:{self.tenant_id}/{self.user_id}"
