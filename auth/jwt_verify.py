"""JWT checks with PyJWT: header inspection before any key is touched, then strict decoding."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from auth.errors import TokenRejected
from auth.settings import AuthSettings

HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"})
# `typ` values IdPs use for ID tokens (and similar non-access tokens), accepted only when allowed.
ID_TOKEN_TYPES = frozenset({"id_token", "id+jwt", "application/id+jwt", "openid"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class JwtHeader:
    alg: str
    kid: str | None
    typ: str | None


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def looks_like_jwt(token: str) -> bool:
    """Segments whose first starts like a JSON object (``{"``): ours to judge (JWE and junk refused)."""
    return token.startswith("eyJ") and "." in token


def inspect_header(token: str, settings: AuthSettings) -> JwtHeader:
    """Validate the unverified header: shape, JSON, algorithm, `crit`, `typ`."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenRejected("malformed JWT")
    try:
        header = json.loads(_b64url_decode(parts[0]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise TokenRejected("malformed JWT header") from None
    if not isinstance(header, dict):
        raise TokenRejected("malformed JWT header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in HMAC_ALGS | ASYMMETRIC_ALGS:
        raise TokenRejected("JWT algorithm not accepted")
    if "crit" in header:
        raise TokenRejected("JWT crit header not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("JWT kid is not a string")
    typ = header.get("typ")
    if typ is not None:
        if not isinstance(typ, str):
            raise TokenRejected("JWT typ is not a string")
        accepted = {t.lower() for t in settings.accepted_jwt_types}
        if settings.allow_id_tokens:
            accepted |= ID_TOKEN_TYPES
        if typ.lower() not in accepted:
            raise TokenRejected("JWT typ not accepted")
    return JwtHeader(alg=alg, kid=kid, typ=typ)


_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "JWT algorithm not accepted"),
    (jwt.InvalidKeyError, "key unsuitable for the JWT algorithm"),
]


def decode(token: str, key: Any, *, algorithms: list[str], settings: AuthSettings,
           issuer: str | None, enforce_key_length: bool = True) -> dict[str, Any]:
    """Signature and registered claims. `exp` always required; `iss`/`aud` when configured."""
    audience = settings.jwt_audience or None
    required = ["exp"] + (["iss"] if issuer else []) + (["aud"] if audience else [])
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=settings.leeway_seconds,
            options={"require": required, "verify_aud": audience is not None,
                     "verify_iss": issuer is not None, "enforce_minimum_key_length": enforce_key_length},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"token has no {exc.claim}") from None
    except jwt.PyJWTError as exc:
        reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "invalid JWT")
        raise TokenRejected(reason) from None
    except Exception:  # anything odd in a hostile token is a refusal, not a 5xx
        raise TokenRejected("invalid JWT") from None
    refuse_id_token_claims(claims, settings)
    return claims


def refuse_id_token_claims(claims: Mapping[str, Any], settings: AuthSettings) -> None:
    """Some IdPs mark ID tokens in the payload (Keycloak: ``"typ": "ID"``)."""
    if settings.allow_id_tokens:
        return
    typ = claims.get("typ")
    if isinstance(typ, str) and typ.lower() in {"id", "id_token"}:
        raise TokenRejected("ID token not accepted as access token")
