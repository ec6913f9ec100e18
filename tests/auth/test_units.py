"""Small pieces without HTTP: PAT format, claim mapping, the cache, hostile inputs."""

from __future__ import annotations

import random
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auth import AuthSettings, TokenRejected
from auth.authenticator import Authenticator
from auth.cache import TTLCache
from auth.claims import best_role, principal_from_claims
from auth.pat import PAT_LENGTH, PAT_PREFIX, generate_pat, hash_pat, is_well_formed_pat
from tests.auth.conftest import HS_ISSUER, HS_SECRET, MemoryTokenStore, claims, hs_token
from tests.helpers.wait import wait_for


def test_pat_format() -> None:
    tokens = {generate_pat() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token.startswith(PAT_PREFIX) and len(token) == PAT_LENGTH and is_well_formed_pat(token)
        assert len(hash_pat(token)) == 32
    token = next(iter(tokens))
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    assert not is_well_formed_pat(flipped)  # one changed character fails the checksum
    assert not is_well_formed_pat(token + "x") and not is_well_formed_pat(token[:-1])


@pytest.mark.parametrize(("value", "role"), [
    ("admin", "admin"), (["auditor", "admin"], "admin"), ("member auditor", "auditor"),
    (["Auditor"], "auditor"), ("owner", "member"), (None, "member"), (42, "member"), ([None, 1], "member"),
])
def test_best_role(value: Any, role: str) -> None:
    assert best_role(value) == role


def test_user_id_rule() -> None:
    settings = AuthSettings(oidc_issuer="https://idp.test", default_tenant="t")
    primary = principal_from_claims({"sub": "a", "iss": "https://idp.test/"}, kind="jwt_jwks", settings=settings)
    assert primary.user_id == "a"
    no_iss = principal_from_claims({"sub": "a"}, kind="jwt_hs", settings=settings)
    assert no_iss.user_id == "a"
    foreign = principal_from_claims({"sub": "a", "iss": "https://x.test"}, kind="introspection", settings=settings)
    assert foreign.user_id == "https://x.test|a" and foreign.subject == "a" and foreign.issuer == "https://x.test"
    unconfigured = AuthSettings(jwt_secret=HS_SECRET, default_tenant="t")
    assert principal_from_claims({"sub": "a", "iss": "dev"}, kind="jwt_hs", settings=unconfigured).user_id == "a"


def test_ttl_cache_bounds_and_expiry() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(3, clock=lambda: now[0])
    for i in range(5):
        cache.put(bytes([i]), i, ttl=10)
    assert len(cache) == 3 and cache.get(b"\x00") is None and cache.get(b"\x04") == 4
    now[0] = 11
    assert cache.get(b"\x04") is None


async def test_hostile_inputs_only_ever_refuse(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryTokenStore()
    authn = Authenticator(AuthSettings(jwt_secret=HS_SECRET, jwt_issuer=HS_ISSUER), token_store=store)
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-._~+/=" + "{}\"' \x00é"
    samples = ["", " ", "eyJ", "eyJ.", "eyJ..", "eyJ...", "mcpgw_", "a" * 20000, "eyJhbGciOiJub25lIn0.e30.",
               "eyJhbGciOiJIUzI1NiJ9.bnVsbA.x", "eyJhbGciOiJIUzI1NiIsImNyaXQiOjF9.e30.x",
               hs_token({"sub": 1, "tenant": {}, "exp": "soon"}), hs_token(claims(iss=HS_ISSUER, exp=10**30)),
               hs_token(claims(iss=HS_ISSUER, sub="x" * 600)), hs_token(claims(iss=HS_ISSUER, tenant="t" * 300))]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))) for _ in range(300)]
    samples += ["eyJ" + "".join(rng.choice(string.ascii_letters + "._-") for _ in range(rng.randint(5, 300)))
                for _ in range(300)]
    for sample in samples:
        with pytest.raises(TokenRejected):
            await authn.authenticate(sample)
    assert store.lookups == 0  # nothing reached the token store
    assert not [r for r in caplog.records if "unexpected" in r.getMessage()]  # all refused by design
    await authn.aclose()


async def test_known_good_is_true_only_for_a_verdict_held_fresh_in_memory() -> None:
    """`known_good` (the front door's test) never answers for a token it would have to look up or refuse."""
    now = [0.0]
    store = MemoryTokenStore()
    settings = AuthSettings(jwt_secret=HS_SECRET, jwt_issuer=HS_ISSUER, pat_cache_ttl=2.0)
    authn = Authenticator(settings, token_store=store, clock=lambda: now[0])
    pat, revoked, expiring = store.add(), store.add(user_id="r"), store.add(user_id="e")
    jwt = hs_token(claims(iss=HS_ISSUER))
    for token in (pat, jwt, "", "mcpgw_nope", "a" * 20000):
        assert not authn.known_good(token)  # never seen: a lookup or a refusal would be needed
    await authn.authenticate(pat)
    await authn.authenticate(jwt)
    assert authn.known_good(pat) and authn.known_good(jwt)
    assert not authn.known_good(pat + "x") and not authn.known_good(jwt[:-1])
    now[0] = 2.0  # the record is no longer fresh: the store must be asked again
    assert not authn.known_good(pat) and authn.known_good(jwt)
    await authn.authenticate(revoked)
    store.revoke(revoked)
    now[0] = 4.5
    with pytest.raises(TokenRejected):
        await authn.authenticate(revoked)
    assert not authn.known_good(revoked)
    expires = datetime.now(UTC) + timedelta(milliseconds=50)
    store.records[hash_pat(expiring)] = replace(store.records[hash_pat(expiring)], expires_at=expires)
    await authn.authenticate(expiring)
    assert authn.known_good(expiring)
    wait_for(lambda: datetime.now(UTC) > expires, 5, "the token's expiry")
    assert not authn.known_good(expiring)  # judged against the clock, like every use
    await authn.aclose()
