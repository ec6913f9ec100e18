"""Signed JWTs for tests, built by hand so tests can also sign what PyJWT would refuse to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

JWT_SECRET = "test-secret-for-hs256-must-be-at-least-32-bytes!"  # what test gateways are started with


def b64url(data: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(data, Mapping):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs_token(claims: Mapping[str, Any], secret: str | bytes = JWT_SECRET, alg: str = "HS256",
             **headers: Any) -> str:
    """An HMAC-signed JWT of exactly these claims and header fields (e.g. a PEM as the HMAC secret)."""
    key = secret.encode() if isinstance(secret, str) else secret
    header = {"alg": alg, "typ": "JWT", **headers}
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), digest).digest())}"


def make_jwt(user: str, tenant: str = "acme", role: str = "member", *, email: str | None = None,
             name: str | None = None, ttl: int = 3600, secret: str = JWT_SECRET) -> str:
    """A valid HS256 token for a test gateway: `user` of `tenant` with `role`."""
    now = int(time.time())
    claims = {"sub": user, "tenant": tenant, "roles": [role], "iat": now, "exp": now + ttl,
              "email": email or f"{user}@{tenant}.example", "name": name or user.title()}
    return hs_token(claims, secret)
