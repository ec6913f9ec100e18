"""Access tokens the gateway issued itself (its OAuth authorization server): ES256 JWTs.

The keys and the revocation state live in the gateway's database; this module reaches them
only through `LocalTokenSource` (auth/ imports nothing of gateway/). A token is ours when its
unverified `iss` is our issuer; from then on only our keys, our audience and our revocation
state decide, and no other verifier gets a second chance at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import jwt
from pydantic import ValidationError

from auth.claims import scopes_of
from auth.errors import TokenRejected
from auth.jwt_verify import JwtHeader
from auth.principal import Principal, normalize_role

LOCAL_ALG = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068
# Private claims of our access tokens.
TENANT_CLAIM = "tenant"
ROLE_CLAIM = "role"
FAMILY_CLAIM = "fid"  # the refresh-token family: revoking it ends every token of the family


@runtime_checkable
class LocalTokenSource(Protocol):
    async def public_key(self, kid: str) -> Any | None:
        """The public key (a `cryptography` key object) with this kid, or None if unknown/retired."""
        ...

    async def family_revoked(self, family_id: str) -> bool:
        """True when the token family (or the grant it belongs to) was revoked. Must ask the
        shared store (a revocation on one replica bites on every replica)."""
        ...


class LocalTokenVerifier:
    """Verifies the gateway's own access tokens for one resource (the MCP endpoint's URL)."""

    def __init__(self, source: LocalTokenSource, *, issuer: str, audience: str, leeway: float = 5.0) -> None:
        self.source = source
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway

    def owns(self, token: str, header: JwtHeader) -> bool:
        """Routing only (nothing is trusted yet): an ES256 token naming us as its issuer. Other
        algorithms go their usual way even with our issuer (an HS256 JWT_ISSUER may equal PUBLIC_URL)."""
        if header.alg != LOCAL_ALG:
            return False
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        return isinstance(issuer, str) and issuer.rstrip("/") == self.issuer

    async def verify(self, token: str, header: JwtHeader) -> Principal:
        if header.alg != LOCAL_ALG:
            raise TokenRejected("JWT algorithm not accepted")
        if header.typ is None or header.typ.lower() not in (ACCESS_TOKEN_TYPE, "application/" + ACCESS_TOKEN_TYPE):
            raise TokenRejected("JWT typ not accepted")
        if not header.kid:
            raise TokenRejected("token has no key id")
        key = await self.source.public_key(header.kid)
        if key is None:
            raise TokenRejected("unknown signing key")
        try:
            claims = jwt.decode(token, key=key, algorithms=[LOCAL_ALG], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]})
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"token has no {exc.claim}") from None
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong audience") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid JWT") from None
        family = claims.get(FAMILY_CLAIM)
        if not isinstance(family, str) or not family:
            raise TokenRejected("token has no family")
        if await self.source.family_revoked(family):
            raise TokenRejected("revoked OAuth token")
        return _principal(claims)


def _principal(claims: Mapping[str, Any]) -> Principal:
    def text(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) and value else None

    try:
        return Principal(
            user_id=claims["sub"],
            tenant_id=claims[TENANT_CLAIM],
            email=text("email"),
            name=text("name"),
            role=normalize_role(claims.get(ROLE_CLAIM)),
            scopes=scopes_of(claims),
            token_kind="oauth",
            token_id=text("jti"),
            issuer=text("iss"),
            subject=claims["sub"],
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (KeyError, ValidationError, ValueError, TypeError, OverflowError, OSError):
        raise TokenRejected("token claims do not form a valid principal") from None
