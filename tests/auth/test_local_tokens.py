"""The gateway's own OAuth access tokens beside the other kinds (auth.local_tokens), with an
in-memory key source (the PostgreSQL one, gateway.oauth.keys, is tested in tests/oauth)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from auth import AuthSettings, TokenRejected
from auth.authenticator import Authenticator
from auth.local_tokens import LocalTokenVerifier

PUBLIC = "https://gw.example"
SECRET = "x" * 40


class MemoryKeys:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.revoked: set[str] = set()

    async def public_key(self, kid: str) -> Any | None:
        return self.key.public_key() if kid == "k1" else None

    async def family_revoked(self, family_id: str) -> bool:
        return family_id in self.revoked


def our_token(keys: MemoryKeys, signer: Any = None, kid: str = "k1", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": PUBLIC, "aud": PUBLIC + "/mcp", "sub": "alice", "tenant": "acme", "role": "admin",
              "email": "alice@acme.example", "scope": "mcp", "iat": now, "exp": now + 300,
              "jti": str(uuid.uuid4()), "fid": "family-1", **changes}
    return jwt.encode(claims, signer or keys.key, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


@pytest.fixture
def keys() -> MemoryKeys:
    return MemoryKeys()


@pytest.fixture
def authenticator(keys: MemoryKeys) -> Authenticator:
    settings = AuthSettings(jwt_secret=SECRET, jwt_issuer=PUBLIC, public_url=PUBLIC, pat_cache_ttl=0)
    verifier = LocalTokenVerifier(keys, issuer=PUBLIC, audience=PUBLIC + "/mcp")
    return Authenticator(settings, local_tokens=verifier)


async def test_our_token_is_a_principal(authenticator: Authenticator, keys: MemoryKeys) -> None:
    principal = await authenticator.authenticate(our_token(keys))
    assert (principal.token_kind, principal.tenant_id, principal.user_id, principal.role) == \
        ("oauth", "acme", "alice", "admin")
    assert principal.scopes == ("mcp",) and principal.email == "alice@acme.example"


async def test_hs256_with_the_same_issuer_is_unchanged(authenticator: Authenticator) -> None:
    now = int(time.time())
    token = jwt.encode({"iss": PUBLIC, "sub": "bob", "tenant": "globex", "exp": now + 60}, SECRET, algorithm="HS256")
    principal = await authenticator.authenticate(token)
    assert principal.token_kind == "jwt_hs" and principal.user_id == "bob"


@pytest.mark.parametrize("change,reason", [
    ({"aud": "https://other.example/mcp"}, "wrong audience"),
    ({"exp": int(time.time()) - 3600}, "token expired"),
    ({"fid": None}, "token has no family"),
    ({"tenant": None}, "valid principal"),
])
async def test_bad_claims_refused(authenticator: Authenticator, keys: MemoryKeys, change: dict, reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        await authenticator.authenticate(our_token(keys, **change))


async def test_wrong_key_or_kid_refused(authenticator: Authenticator, keys: MemoryKeys) -> None:
    with pytest.raises(TokenRejected, match="invalid JWT"):
        await authenticator.authenticate(our_token(keys, signer=ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await authenticator.authenticate(our_token(keys, kid="k2"))


async def test_revoked_family_refused(authenticator: Authenticator, keys: MemoryKeys) -> None:
    token = our_token(keys)
    await authenticator.authenticate(token)
    keys.revoked.add("family-1")
    with pytest.raises(TokenRejected, match="revoked OAuth token"):
        await authenticator.authenticate(token)
