"""Crafted claims: identifiers that cannot be stored faithfully are refused with a reason; display
claims are cleaned, never refused; principal keys are unambiguous."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth import AuthSettings, Principal, TokenRejected
from auth.claims import principal_from_claims
from auth.claimtext import MAX_EMAIL, MAX_NAME, MAX_TENANT_ID, MAX_USER_ID, display_text, identifier_problem
from tests.auth.conftest import HS_ISSUER, FakeIdP, Gateway, claims, hs_token, post_mcp
from tests.crafted_text import ANY_CHAR

# (claim, value, the reason a client reads in error_description)
BAD_IDENTIFIERS = [
    ("sub", "ali\x00ce", "token subject contains a NUL character"),
    ("sub", "ali\ud800ce", "token subject contains an unpaired UTF-16 surrogate"),
    ("sub", "\udfff", "token subject contains an unpaired UTF-16 surrogate"),
    ("sub", "alice\nadmin", "token subject contains a control character"),
    ("sub", "alice\x1b[31m", "token subject contains a control character"),
    ("sub", "alice\u2028", "token subject contains a control character"),
    ("sub", "\u202eecila", "token subject contains a bidirectional formatting character"),
    ("sub", "x" * (MAX_USER_ID + 1), f"token subject is longer than {MAX_USER_ID} characters"),
    ("sub", "   ", "token has no subject"),
    ("tenant", "ac\x00me", "token tenant contains a NUL character"),
    ("tenant", "acme\ud83d", "token tenant contains an unpaired UTF-16 surrogate"),
    ("tenant", "acme\u2066", "token tenant contains a bidirectional formatting character"),
    ("tenant", "acme\x7f", "token tenant contains a control character"),
    ("tenant", "t" * (MAX_TENANT_ID + 1), f"token tenant is longer than {MAX_TENANT_ID} characters"),
    ("tenant", " \t ", "token tenant claim is not a non-empty string"),
]


@pytest.mark.parametrize("endpoint", ["/mcp", "/api/whoami", "/api2/whoami"])
@pytest.mark.parametrize(("claim", "value", "reason"), BAD_IDENTIFIERS,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD_IDENTIFIERS)])
async def test_unstorable_identifier_is_401_with_the_reason(claim: str, value: str, reason: str, endpoint: str,
                                                            gateway: Gateway, http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER, **{claim: value}))
    if endpoint == "/mcp":
        response = await post_mcp(http, gateway.url, f"Bearer {token}")
    else:
        response = await http.get(gateway.url + endpoint, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text[:300]
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and f'error_description="{reason}. ' in challenge, challenge
    body = response.json()
    assert body["error"] == "invalid_token" and body["error_description"].startswith(f"{reason}. "), body
    assert "mcp-gateway token create" in body["error_description"]  # and what a person should do
    for part in token.split("."):
        assert part not in response.text and part not in challenge


async def test_a_good_token_still_gets_the_plain_missing_token_challenge(gateway: Gateway,
                                                                         http: httpx.AsyncClient) -> None:
    """The reason is only added to a refusal: no token, no error attribute (RFC 6750 §3.1)."""
    response = await post_mcp(http, gateway.url, None)
    assert response.status_code == 401 and "error=" not in response.headers["www-authenticate"]


@pytest.mark.parametrize(("name", "email", "shown_name", "shown_email"), [
    ("Ann\x00 Lee", "ann\x00@acme.test", "Ann Lee", "ann@acme.test"),
    ("Ann\ud800 Lee", "ann@acme.test\udc00", "Ann Lee", "ann@acme.test"),
    ("Ann\nLee\r\n", "\u202eann@acme.test", "Ann Lee", "ann@acme.test"),
    ("\u2066Ann\u2069 \x1b[1mLee", "  ann@acme.test  ", "Ann [1mLee", "ann@acme.test"),
    ("x" * 6_000, "e" * 3_000 + "@acme.test", "x" * MAX_NAME, "e" * MAX_EMAIL),
    ("\x00\ud800\u202e", "\n", None, None),
    ("a/b|c", "a|b/c@acme.test", "a/b|c", "a|b/c@acme.test"),
])
async def test_display_claims_are_cleaned_not_refused(name: str, email: str, shown_name: str | None,
                                                      shown_email: str | None, gateway: Gateway,
                                                      http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER, name=name, email=email))
    response = await http.get(gateway.url + "/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text[:300]
    assert (response.json()["name"], response.json()["email"]) == (shown_name, shown_email)


async def test_secondary_issuer_with_a_pipe_is_refused(idp: FakeIdP, gateway: Gateway,
                                                       http: httpx.AsyncClient) -> None:
    """`<iss>|<sub>` stays unambiguous: issuer `https://x|y` + sub `z` would equal `https://x` + `y|z`."""
    now = int(time.time())
    piped, plain = f"opaque-{uuid.uuid4().hex}", f"opaque-{uuid.uuid4().hex}"
    idp.active[piped] = {"active": True, "sub": "z", "iss": "https://other.test|y", "tenant": "acme", "exp": now + 60}
    idp.active[plain] = {"active": True, "sub": "y|z", "iss": "https://other.test", "tenant": "acme", "exp": now + 60}
    refused = await http.get(gateway.url + "/api/whoami", headers={"Authorization": f"Bearer {piped}"})
    assert refused.status_code == 401
    assert refused.json()["error_description"].startswith("token issuer contains '|'. ")
    accepted = await http.get(gateway.url + "/api/whoami", headers={"Authorization": f"Bearer {plain}"})
    assert accepted.status_code == 200 and accepted.json()["user_id"] == "https://other.test|y|z"


def test_principal_keys_are_unambiguous() -> None:
    def key(tenant: str, user: str) -> str:
        return Principal(tenant_id=tenant, user_id=user, token_kind="jwt_hs").key

    assert key("a/b", "c") != key("a", "b/c")
    assert key("a|b", "c") != key("a", "b|c")
    assert key("a", "https://idp|sub") != key("a/https:", "/idp|sub")


@settings(max_examples=300, deadline=None, database=None)
@given(tenant=st.text(min_size=1, max_size=12), user=st.text(min_size=1, max_size=12),
       tenant2=st.text(min_size=1, max_size=12), user2=st.text(min_size=1, max_size=12))
def test_principal_key_is_injective(tenant: str, user: str, tenant2: str, user2: str) -> None:
    a = Principal(tenant_id=tenant, user_id=user, token_kind="jwt_hs")
    b = Principal(tenant_id=tenant2, user_id=user2, token_kind="jwt_hs")
    assert (a.key == b.key) == ((tenant, user) == (tenant2, user2))


@settings(max_examples=400, deadline=None, database=None)
@given(value=st.text(ANY_CHAR, max_size=40), limit=st.integers(1, 50))
def test_display_text_is_clean_bounded_and_faithful_when_it_can_be(value: str, limit: int) -> None:
    shown = display_text(value, limit)
    if shown is None:
        return
    assert 0 < len(shown) <= limit and shown == shown.strip()
    assert identifier_problem(shown, limit) is None, repr(shown)  # nothing an identifier may not hold
    if identifier_problem(value, limit) is None and value == value.strip():
        assert shown == value


@settings(max_examples=400, deadline=None, database=None)
@given(sub=st.text(ANY_CHAR, max_size=30), tenant=st.text(ANY_CHAR, max_size=30),
       name=st.text(ANY_CHAR, max_size=30), email=st.text(ANY_CHAR, max_size=30))
def test_claims_become_a_storable_principal_or_a_refusal(sub: str, tenant: str, name: str, email: str) -> None:
    settings_ = AuthSettings(jwt_secret="s" * 32)
    try:
        principal = principal_from_claims({"sub": sub, "tenant": tenant, "name": name, "email": email},
                                          kind="jwt_hs", settings=settings_)
    except TokenRejected as exc:
        assert exc.reason.startswith("token ") and len(exc.reason) < 100
        return
    assert principal.user_id == sub and principal.tenant_id == tenant.strip()
    for text in (principal.user_id, principal.tenant_id, principal.name or "x", principal.email or "x"):
        text.encode("utf-8")  # storable: no lone surrogate
        assert "\x00" not in text
