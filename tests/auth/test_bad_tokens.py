"""Every bad bearer input answers 401 with the right challenge, on /mcp and /api alike.

Never a 5xx, never the token in a log line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from auth.pat import generate_pat
from tests.auth.conftest import (
    AUDIENCE,
    HS_ISSUER,
    FakeIdP,
    Gateway,
    SigningKey,
    b64url,
    claims,
    hs_token,
    post_mcp,
)

NOW = int(time.time())
Maker = Callable[[Gateway, FakeIdP, dict[str, SigningKey]], str]


def _hs(**overrides: object) -> Maker:
    return lambda gw, idp, keys: hs_token(claims(**{"iss": HS_ISSUER, **overrides}))


def _alg_none(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims(iss=HS_ISSUER))}."


def _hs_with_rsa_pem(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    # The classic RS/HS confusion: HMAC keyed with the IdP's public key, with the IdP's kid.
    return hs_token(claims(iss=idp.url), secret=keys["rsa1"].public_pem, kid="rsa1")


def _rs(key: str, **overrides: object) -> Maker:
    return lambda gw, idp, keys: keys[key].sign(claims(**{"iss": idp.url, **overrides}))


def _rs_headers(key: str, **headers: object) -> Maker:
    return lambda gw, idp, keys: keys[key].sign(claims(iss=idp.url), **headers)


def _unknown_kid(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    return keys["rsa2"].sign(claims(iss=idp.url))  # rsa2 is not published


def _malformed_base64(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    head, payload, sig = hs_token(claims(iss=HS_ISSUER)).split(".")
    return f"{head}.{payload[:10]}~~{payload[12:]}.{sig}"  # b64token characters, not base64url


def _bad_base64_header(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    head, payload, sig = hs_token(claims(iss=HS_ISSUER)).split(".")
    return f"eyJ{head[5:]}.{payload}.{sig}"


def _truncated(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    token = hs_token(claims(iss=HS_ISSUER))
    return token[: len(token) - 20]


def _non_json_header(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    head = base64.urlsafe_b64encode(b'{"alg": HS256 not json').rstrip(b"=").decode()
    return f"{head}.{b64url(claims())}.c2ln"


def _pat(**kwargs: object) -> Maker:
    return lambda gw, idp, keys: gw.store.add(**kwargs)  # type: ignore[arg-type]


def _revoked_pat(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    return gw.store.add(revoked=True)


def _pat_garbage(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    return "mcpgw_" + "x" * 49  # right prefix and length, wrong checksum


def _inactive_opaque(gw: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> str:
    return "opaque-token-nobody-issued-0123456789"


# case -> (token maker, the refusal reason auth logs, as a regex)
BAD_TOKENS: dict[str, tuple[Maker, str]] = {
    "expired": (_hs(exp=NOW - 3600, iat=NOW - 7200), "token expired"),
    "expired_beyond_leeway": (_hs(exp=NOW - 45), "token expired"),
    "nbf_in_future": (_hs(nbf=NOW + 3600), "token not yet valid"),
    "iat_in_future": (_hs(iat=NOW + 3600), "token not yet valid"),
    "no_exp": (_hs(exp=None), "token has no exp"),
    "no_sub": (_hs(sub=None), "token has no subject"),
    "wrong_iss": (_hs(iss="https://evil.test"), "wrong issuer"),
    "no_iss": (lambda gw, idp, keys: hs_token({k: v for k, v in claims().items() if k != "iss"}), "token has no iss"),
    "wrong_aud": (_hs(aud="https://other.test"), "wrong audience"),
    "wrong_aud_list": (_hs(aud=["https://other.test", "x"]), "wrong audience"),
    "no_aud": (_hs(aud=None), "token has no aud"),
    "wrong_secret": (lambda gw, idp, keys: hs_token(claims(iss=HS_ISSUER), secret="w" * 40), "bad signature"),
    "alg_none": (_alg_none, "JWT algorithm not accepted"),
    "hs256_with_rsa_public_pem": (_hs_with_rsa_pem, "bad signature"),
    "rs_wrong_key_same_kid": (_rs("rogue"), "bad signature"),
    "rs_expired": (_rs("rsa1", exp=NOW - 3600), "token expired"),
    "rs_wrong_iss": (_rs("rsa1", iss="https://evil.test"), "wrong issuer"),
    "unknown_kid": (_unknown_kid, "unknown signing key"),
    "kid_of_other_key_type": (_rs_headers("ec", kid="rsa1"), "unknown signing key"),
    "crit_header": (lambda gw, idp, keys: hs_token(claims(iss=HS_ISSUER), crit=["exp"]),
                    "JWT crit header not accepted"),
    "malformed_base64": (_malformed_base64, "invalid JWT"),
    "malformed_base64_header": (_bad_base64_header, "malformed JWT header"),
    "truncated": (_truncated, "invalid JWT|bad signature"),
    "two_segments": (lambda gw, idp, keys: ".".join(hs_token(claims(iss=HS_ISSUER)).split(".")[:2]), "malformed JWT"),
    "non_json_header": (_non_json_header, "malformed JWT header"),
    "typ_id_token": (lambda gw, idp, keys: hs_token(claims(iss=HS_ISSUER), typ="id_token"), "JWT typ not accepted"),
    "typ_other": (lambda gw, idp, keys: hs_token(claims(iss=HS_ISSUER), typ="dpop+jwt"), "JWT typ not accepted"),
    "payload_typ_id": (_hs(typ="ID"), "ID token not accepted as access token"),
    "missing_tenant_no_default": (_hs(tenant=None), "token has no tenant claim and there is no default tenant"),
    "tenant_not_a_string": (_hs(tenant=["acme", "other"]), "token tenant claim is not a non-empty string"),
    "revoked_pat": (_revoked_pat, "revoked personal access token"),
    "expired_pat": (_pat(expires_at=datetime.now(UTC) - timedelta(seconds=1)), "expired personal access token"),
    "unknown_pat": (lambda gw, idp, keys: generate_pat(), "unknown personal access token"),
    "pat_prefix_garbage": (_pat_garbage, "malformed personal access token"),
    "pat_prefix_short": (lambda gw, idp, keys: "mcpgw_abc", "malformed personal access token"),
    "inactive_opaque": (_inactive_opaque, "token is not active"),
    "space_inside": (lambda gw, idp, keys: "abc def", "token is empty or has characters a bearer token cannot have"),
    "non_ascii": (lambda gw, idp, keys: "abc\u00e9def", "token is empty or has characters a bearer token cannot have"),
    "control_character": (lambda gw, idp, keys: "abc\x01def",
                          "token is empty or has characters a bearer token cannot have"),
    "3mb_token": (lambda gw, idp, keys: "eyJ" + "A" * (3 * 1024 * 1024), "token too long"),
    "just_over_16kib": (lambda gw, idp, keys: "A" * (16 * 1024 + 1), "token too long"),
}

ENDPOINTS = ["/mcp", "/api/whoami", "/api2/whoami"]


async def request(http: httpx.AsyncClient, url: str, endpoint: str, authorization: str | None) -> httpx.Response:
    if endpoint == "/mcp":
        return await post_mcp(http, url, authorization)
    headers: dict[bytes, bytes] = {b"Authorization": authorization.encode()} if authorization is not None else {}
    return await http.get(url + endpoint, headers=headers)


def expected_challenge(gw: Gateway, *, error: bool) -> tuple[str, ...]:
    metadata = f'resource_metadata="{gw.auth.resource_metadata_url}"'
    return ('error="invalid_token"', metadata) if error else (metadata,)


def assert_challenge(response: httpx.Response, gw: Gateway, *, error: bool) -> None:
    assert response.status_code == 401, response.text[:300]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    for part in expected_challenge(gw, error=error):
        assert part in challenge
    if not error:
        assert "error=" not in challenge


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_token_is_401(case: str, endpoint: str, gateway: Gateway, idp: FakeIdP,
                                keys: dict[str, SigningKey], http: httpx.AsyncClient,
                                logs: pytest.LogCaptureFixture) -> None:
    maker, reason = BAD_TOKENS[case]
    token = maker(gateway, idp, keys)
    response = await request(http, gateway.url, endpoint, f"Bearer {token}")
    assert_challenge(response, gateway, error=True)
    refusals = [r.getMessage() for r in logs.records if r.name == "auth"]
    assert refusals and re.search(f"refused: ({reason})$", refusals[-1]), refusals
    if len(token) > 8:
        assert token not in logs.text
        for part in token.split("."):
            if len(part) > 20:
                assert part not in logs.text
    assert "Traceback" not in logs.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic dXNlcjpwYXNz", "Token abc", ""])
async def test_no_bearer_token_is_401_without_error(authorization: str | None, endpoint: str, gateway: Gateway,
                                                    http: httpx.AsyncClient) -> None:
    """Missing credentials (RFC 6750 §3.1): challenge without `error`; other schemes count as missing."""
    response = await request(http, gateway.url, endpoint, authorization)
    assert_challenge(response, gateway, error=False)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_empty_bearer_on_the_wire(endpoint: str, gateway: Gateway) -> None:
    """`Authorization: Bearer ` sent byte for byte (clients refuse to): a 401 challenge, never a 5xx."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))
    method = "POST" if endpoint == "/mcp" else "GET"
    writer.write(f"{method} {endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head = raw.split("\r\n\r\n", 1)[0].lower()
    assert head.startswith("http/1.1 401")
    assert f'resource_metadata="{gateway.auth.resource_metadata_url}"' in head


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_empty_bearer_with_spaces_is_invalid_token(endpoint: str, gateway: Gateway,
                                                          http: httpx.AsyncClient) -> None:
    response = await request(http, gateway.url, endpoint, "Bearer    x")
    assert_challenge(response, gateway, error=True)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_scheme_is_case_insensitive(scheme: str, endpoint: str, gateway: Gateway,
                                          http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER))
    response = await request(http, gateway.url, endpoint, f"{scheme} {token}")
    assert response.status_code == 200, response.text[:300]


async def test_leeway_accepts_slightly_expired(gateway: Gateway, http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER, exp=int(time.time()) - 10))
    response = await http.get(f"{gateway.url}/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_audience_list_containing_ours_is_accepted(gateway: Gateway, http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER, aud=["https://other.test", AUDIENCE]))
    response = await http.get(f"{gateway.url}/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_refusal_is_logged_with_hash_prefix_only(gateway: Gateway, http: httpx.AsyncClient,
                                                       logs: pytest.LogCaptureFixture) -> None:
    from auth.authenticator import token_fingerprint

    token = hs_token(claims(iss=HS_ISSUER, exp=NOW - 3600))
    await http.get(f"{gateway.url}/api/whoami", headers={"Authorization": f"Bearer {token}"})
    refusals = [r.getMessage() for r in logs.records if r.name == "auth" and "refused" in r.getMessage()]
    assert refusals == [f"bearer token {token_fingerprint(token)} refused: token expired"]
    assert json.dumps(token) not in logs.text
