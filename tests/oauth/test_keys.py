"""Signing keys in the database: one key however many replicas start at once, rotation with the
successor published before it signs, retired keys leave the JWKS, and a token verifies on a
replica that never saw its key being made."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import jwt
import psycopg
import pytest

from auth.errors import TokenRejected
from auth.jwt_verify import JwtHeader
from auth.local_tokens import LocalTokenVerifier
from gateway.oauth.keys import SigningKeys
from gateway.oauth.store import OAuthStore
from gateway.store.db import Database


def keys_for(db: Database, days: int = 30) -> SigningKeys:
    return SigningKeys(db, OAuthStore(db), rotation=timedelta(days=days), token_ttl=600)


async def test_replicas_starting_together_make_one_key(db: Database, admin_conn: psycopg.Connection) -> None:
    replicas = [keys_for(db) for _ in range(4)]
    await asyncio.gather(*(r.ensure() for r in replicas))
    assert admin_conn.execute("SELECT count(*) FROM gateway.oauth_signing_keys").fetchone() == (1,)
    kids = {(await r.signing_key()).kid for r in replicas}
    assert len(kids) == 1


async def test_rotation_publishes_the_successor_first_and_retires_old_keys(db: Database,
                                                                           admin_conn: psycopg.Connection) -> None:
    keys = keys_for(db)
    await keys.ensure()
    first = await keys.signing_key()
    # the first key is a day from rotating: its successor appears in the JWKS, the first still signs
    admin_conn.execute("UPDATE gateway.oauth_signing_keys SET rotate_at = now() + interval '1 hour'")
    await keys.ensure()
    published = {k["kid"] for k in (await keys.jwks())["keys"]}
    assert len(published) == 2 and first.kid in published
    assert (await keys.signing_key()).kid == first.kid
    # it rotates: the successor signs, the first still verifies until it retires
    admin_conn.execute("UPDATE gateway.oauth_signing_keys SET rotate_at = now() - interval '1 second'"
                       " WHERE kid = %s", (first.kid,))
    await keys.ensure()
    assert (await keys.signing_key()).kid != first.kid
    assert await keys.public_key(first.kid) is not None
    admin_conn.execute("UPDATE gateway.oauth_signing_keys SET retire_at = now() - interval '1 second'"
                       " WHERE kid = %s", (first.kid,))
    await keys.ensure()
    assert first.kid not in {k["kid"] for k in (await keys.jwks())["keys"]}
    assert await keys.public_key(first.kid) is None
    assert all("d" not in k for k in (await keys.jwks())["keys"])  # public halves only


async def test_a_key_made_elsewhere_verifies_here(db: Database, admin_conn: psycopg.Connection) -> None:
    maker, other = keys_for(db), keys_for(db)
    await other.ensure()  # this replica has loaded the key set ...
    admin_conn.execute("UPDATE gateway.oauth_signing_keys SET rotate_at = now() - interval '1 second'")
    await maker.ensure()  # ... before another replica rotated to a new key
    key = await maker.signing_key()
    assert key.kid not in {k["kid"] for k in (await other.jwks())["keys"]}
    other._loaded_at -= 10  # the unknown-kid reload is throttled to one per 5 s
    now = int(time.time())
    claims = {"iss": "https://gw.example", "aud": "https://gw.example/mcp", "sub": "u", "tenant": "t", "iat": now,
              "exp": now + 60, "jti": str(uuid.uuid4()), "fid": str(uuid.uuid4())}
    token = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid, "typ": "at+jwt"})
    verifier = LocalTokenVerifier(other, issuer="https://gw.example", audience="https://gw.example/mcp")
    header = JwtHeader("ES256", key.kid, "at+jwt")
    with pytest.raises(TokenRejected, match="revoked"):  # signature checked; an unknown family is not live
        await verifier.verify(token, header)
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await verifier.verify(token, JwtHeader("ES256", "no-such-kid", "at+jwt"))
    with pytest.raises(TokenRejected, match="typ"):
        await verifier.verify(token, JwtHeader("ES256", key.kid, "JWT"))
