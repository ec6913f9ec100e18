"""Verified claims (JWT payload or introspection response) -> Principal.

User ids: ``sub`` as-is when the token's issuer is absent or one of the configured issuers
(MCP_GATEWAY_OIDC_ISSUER, MCP_GATEWAY_JWT_ISSUER), or when neither is configured. A token
from any other issuer gets ``"<iss>|<sub>"``, so a second IdP cannot name an existing user
(an issuer holding ``|`` is refused, so that split is unambiguous).
Roles: ``admin`` > ``auditor`` > member when the roles claim lists several.

Identifiers (subject, issuer, tenant) are taken verbatim or refused (auth.claimtext:
NUL, lone surrogates, control or bidi characters, too long); display claims (email,
name) are cleaned and truncated, never refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from auth.claimtext import MAX_EMAIL, MAX_NAME, MAX_TENANT_ID, MAX_USER_ID, display_text, identifier_problem
from auth.errors import TokenRejected
from auth.principal import Principal, Role, TokenKind, normalize_role
from auth.settings import AuthSettings

_ROLE_RANK: dict[Role, int] = {"member": 0, "auditor": 1, "admin": 2}
_SPLIT = re.compile(r"[\s,]+")


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name`; if absent, a dotted path into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def best_role(value: Any) -> Role:
    """A string ("admin", "admin auditor") or a list of strings -> the highest-ranked role."""
    if isinstance(value, str):
        items: list[Any] = _SPLIT.split(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return "member"
    roles = [normalize_role(item) for item in items]
    return max(roles, key=_ROLE_RANK.__getitem__, default="member")


def scopes_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return tuple(s for s in value.split() if s)
        if isinstance(value, list):
            return tuple(s for s in value if isinstance(s, str) and s)
    return ()


def _issuer_is_primary(issuer: str | None, settings: AuthSettings) -> bool:
    primaries = {i.rstrip("/") for i in settings.primary_issuers}
    return issuer is None or not primaries or issuer.rstrip("/") in primaries


def _check_identifier(value: str, what: str, limit: int) -> None:
    problem = identifier_problem(value, limit)
    if problem is not None:
        raise TokenRejected(f"token {what} {problem}")


def principal_from_claims(claims: Mapping[str, Any], *, kind: TokenKind, settings: AuthSettings) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise TokenRejected("token has no subject")
    issuer = claims.get("iss")
    if issuer is not None and not isinstance(issuer, str):
        raise TokenRejected("token issuer is not a string")
    _check_identifier(subject, "subject", MAX_USER_ID)
    if issuer is not None:
        _check_identifier(issuer, "issuer", MAX_USER_ID)
    if issuer is None or _issuer_is_primary(issuer, settings):
        user_id = subject
    else:
        if "|" in issuer:
            raise TokenRejected("token issuer contains '|'")
        user_id = f"{issuer}|{subject}"
        if len(user_id) > MAX_USER_ID:
            raise TokenRejected(f"token issuer and subject are longer than {MAX_USER_ID} characters together")

    tenant = claim(claims, settings.tenant_claim)
    if tenant is None:
        tenant = settings.default_tenant
        if tenant is None:
            raise TokenRejected("token has no tenant claim and there is no default tenant")
    elif not isinstance(tenant, str) or not tenant.strip():
        raise TokenRejected("token tenant claim is not a non-empty string")
    tenant = tenant.strip()
    _check_identifier(tenant, "tenant", MAX_TENANT_ID)

    exp = claims.get("exp")
    jti = claims.get("jti")
    try:
        return Principal(
            user_id=user_id,
            tenant_id=tenant,
            email=display_text(claim(claims, settings.email_claim), MAX_EMAIL),
            name=display_text(claim(claims, settings.name_claim), MAX_NAME),
            role=best_role(claim(claims, settings.roles_claim)),
            scopes=scopes_of(claims),
            token_kind=kind,
            token_id=jti if isinstance(jti, str) else None,
            issuer=issuer,
            subject=subject,
            expires_at=datetime.fromtimestamp(int(exp), UTC) if exp is not None else None,
        )
    except (ValidationError, ValueError, TypeError, OverflowError, OSError):
        raise TokenRejected("token claims do not form a valid principal") from None
