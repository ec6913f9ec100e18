"""Each token kind is accepted and mapped to the right principal, over MCP and /api."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.auth.conftest import (
    HS_ISSUER,
    FakeIdP,
    Gateway,
    SigningKey,
    base_settings,
    claims,
    hs_token,
    run_gateway,
    whoami_mcp,
)


async def api_whoami(http: httpx.AsyncClient, gw: Gateway, token: str, path: str = "/api/whoami") -> dict[str, Any]:
    response = await http.get(gw.url + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_hs_jwt(gateway: Gateway, http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER, sub="alice", roles=["member", "admin"], jti="j-1",
                            scope="mcp:read mcp:write"))
    principal = await whoami_mcp(gateway.url, token)
    assert principal == await api_whoami(http, gateway, token) == await api_whoami(http, gateway, token, "/api2/whoami")
    assert principal["user_id"] == "alice" and principal["tenant_id"] == "acme"
    assert principal["role"] == "admin" and principal["token_kind"] == "jwt_hs"
    assert principal["email"] == "alice@acme.test" and principal["name"] == "Alice"
    assert principal["scopes"] == ["mcp:read", "mcp:write"]
    assert principal["issuer"] == HS_ISSUER and principal["subject"] == "alice" and principal["token_id"] == "j-1"


async def test_hs_variants_need_a_long_enough_secret(idp: FakeIdP, http: httpx.AsyncClient) -> None:
    """RFC 7518 §3.2: HS384/HS512 keys at least as long as the hash; shorter -> refused, not warned."""
    long_secret = "L" * 64
    async with run_gateway(base_settings(idp, jwt_secret=long_secret)) as gw:
        for alg in ("HS256", "HS384", "HS512"):
            token = hs_token(claims(iss=HS_ISSUER), secret=long_secret, alg=alg)
            assert (await api_whoami(http, gw, token))["token_kind"] == "jwt_hs"
    async with run_gateway(base_settings(idp)) as gw:  # 41-byte secret
        token = hs_token(claims(iss=HS_ISSUER), alg="HS512")
        response = await http.get(gw.url + "/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


@pytest.mark.parametrize("key", ["rsa1", "ps", "ec", "ed"])
async def test_idp_jwt(key: str, gateway: Gateway, idp: FakeIdP, keys: dict[str, SigningKey],
                       http: httpx.AsyncClient) -> None:
    token = keys[key].sign(claims(iss=idp.url, sub=f"user-{key}", roles="auditor"), typ="at+jwt")
    principal = await api_whoami(http, gateway, token)
    assert principal["user_id"] == f"user-{key}" and principal["token_kind"] == "jwt_jwks"
    assert principal["role"] == "auditor" and principal["issuer"] == idp.url


async def test_idp_jwt_over_mcp(gateway: Gateway, idp: FakeIdP, keys: dict[str, SigningKey]) -> None:
    principal = await whoami_mcp(gateway.url, keys["rsa1"].sign(claims(iss=idp.url, sub="zed")))
    assert principal["user_id"] == "zed" and principal["token_kind"] == "jwt_jwks"


async def test_pat(gateway: Gateway, http: httpx.AsyncClient) -> None:
    token = gateway.store.add(tenant_id="beta", user_id="bob", role="admin")
    principal = await whoami_mcp(gateway.url, token)
    assert principal == await api_whoami(http, gateway, token)
    assert principal["user_id"] == "bob" and principal["tenant_id"] == "beta"
    assert principal["role"] == "admin" and principal["token_kind"] == "pat" and principal["token_id"]
    assert principal["scopes"] == ["mcp"] and principal["email"] == "bob@beta.test"


async def test_introspected_opaque_token(gateway: Gateway, idp: FakeIdP, http: httpx.AsyncClient) -> None:
    idp.active["opaque-abc-123"] = {"active": True, "sub": "olga", "tenant": "acme", "iss": idp.url,
                                    "exp": int(time.time()) + 600, "scope": "mcp", "roles": ["admin"],
                                    "email": "olga@acme.test"}
    principal = await whoami_mcp(gateway.url, "opaque-abc-123")
    assert principal["user_id"] == "olga" and principal["token_kind"] == "introspection"
    assert principal["role"] == "admin" and principal["scopes"] == ["mcp"]


async def test_roles_precedence_and_unknown(gateway: Gateway, http: httpx.AsyncClient) -> None:
    cases = {"auditor admin": "admin", "auditor,member": "auditor", "superuser": "member", "ADMIN": "admin"}
    for roles, expected in cases.items():
        principal = await api_whoami(http, gateway, hs_token(claims(iss=HS_ISSUER, roles=roles)))
        assert principal["role"] == expected, roles
    principal = await api_whoami(http, gateway, hs_token(claims(iss=HS_ISSUER, roles=["x", "auditor"])))
    assert principal["role"] == "auditor"
    principal = await api_whoami(http, gateway, hs_token(claims(iss=HS_ISSUER, roles=None)))
    assert principal["role"] == "member"


async def test_default_tenant_and_custom_claims(idp: FakeIdP, keys: dict[str, SigningKey],
                                                http: httpx.AsyncClient) -> None:
    settings = base_settings(idp, default_tenant="fallback", roles_claim="realm_access.roles",
                             tenant_claim="org", email_claim="upn", name_claim="preferred_username")
    async with run_gateway(settings) as gw:
        token = hs_token(claims(iss=HS_ISSUER, tenant=None, realm_access={"roles": ["admin"]},
                                upn="u@x.test", preferred_username="Ursula"))
        principal = await api_whoami(http, gw, token)
        assert principal["tenant_id"] == "fallback" and principal["role"] == "admin"
        assert principal["email"] == "u@x.test" and principal["name"] == "Ursula"
        principal = await api_whoami(http, gw, hs_token(claims(iss=HS_ISSUER, org="globex")))
        assert principal["tenant_id"] == "globex"


async def test_foreign_issuer_subjects_are_namespaced(idp: FakeIdP, http: httpx.AsyncClient) -> None:
    """An introspected token from another issuer cannot take over a primary-issuer user id."""
    async with run_gateway(base_settings(idp)) as gw:
        idp.active["other-idp-token"] = {"active": True, "sub": "alice", "tenant": "acme",
                                         "iss": "https://other-idp.test", "exp": int(time.time()) + 60}
        principal = await api_whoami(http, gw, "other-idp-token")
        assert principal["user_id"] == "https://other-idp.test|alice" and principal["subject"] == "alice"


async def test_id_tokens_accepted_only_when_configured(idp: FakeIdP, http: httpx.AsyncClient) -> None:
    token = hs_token(claims(iss=HS_ISSUER), typ="id_token")
    async with run_gateway(base_settings(idp)) as gw:
        response = await http.get(gw.url + "/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    async with run_gateway(base_settings(idp, allow_id_tokens=True)) as gw:
        assert (await api_whoami(http, gw, token))["user_id"] == "alice"


async def test_hmac_refused_when_only_an_idp_is_configured(idp: FakeIdP, keys: dict[str, SigningKey],
                                                           http: httpx.AsyncClient) -> None:
    """No secret configured: an HS token (even one keyed with the IdP's public PEM) is refused."""
    settings = base_settings(idp, jwt_secret=None, jwt_issuer=None)
    async with run_gateway(settings) as gw:
        for secret in (keys["rsa1"].public_pem, b"x" * 40):
            token = hs_token(claims(iss=idp.url), secret=secret, kid="rsa1")
            response = await http.get(gw.url + "/api/whoami", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401
        ok = keys["rsa1"].sign(claims(iss=idp.url))
        assert (await api_whoami(http, gw, ok))["token_kind"] == "jwt_jwks"


async def test_sessions_bound_per_principal(gateway: Gateway) -> None:
    """A stateful session created by one principal is not usable with another principal's token."""
    from tests.auth.conftest import INITIALIZE

    alice = hs_token(claims(iss=HS_ISSUER, sub="alice"))
    mallory = hs_token(claims(iss=HS_ISSUER, sub="mallory"))
    alice_again = hs_token(claims(iss=HS_ISSUER, sub="alice", jti="another-token"))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=10) as http:
        init = await http.post(gateway.url + "/mcp", json=INITIALIZE,
                               headers={**headers, "Authorization": f"Bearer {alice}"})
        session = init.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        other = await http.post(gateway.url + "/mcp", json=call, headers={
            **headers, "Authorization": f"Bearer {mallory}", "Mcp-Session-Id": session})
        assert other.status_code == 404
        same = await http.post(gateway.url + "/mcp", json=call, headers={
            **headers, "Authorization": f"Bearer {alice_again}", "Mcp-Session-Id": session})
        assert same.status_code == 200
