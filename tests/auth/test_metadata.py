"""RFC 9728 documents and 401 challenges: /mcp and /api send the same WWW-Authenticate."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.conftest import FakeIdP, Gateway, base_settings, post_mcp, run_gateway

PUBLIC = "http://127.0.0.1:8051"


async def test_protected_resource_documents(gateway: Gateway, idp: FakeIdP, http: httpx.AsyncClient) -> None:
    root = await http.get(gateway.url + "/.well-known/oauth-protected-resource")
    mcp = await http.get(gateway.url + "/.well-known/oauth-protected-resource/mcp")
    assert root.status_code == mcp.status_code == 200
    assert root.json()["resource"] == PUBLIC
    assert mcp.json()["resource"] == f"{PUBLIC}/mcp"
    for doc in (root.json(), mcp.json()):
        assert doc["authorization_servers"] == [idp.url]  # the OIDC issuer, verbatim
        assert doc["bearer_methods_supported"] == ["header"]
    assert gateway.auth.resource_metadata_url.unicode_string() == \
        f"{PUBLIC}/.well-known/oauth-protected-resource/mcp"


async def test_documents_need_no_token_and_ignore_bad_ones(gateway: Gateway, http: httpx.AsyncClient) -> None:
    response = await http.get(gateway.url + "/.well-known/oauth-protected-resource",
                              headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-valid-token"])
async def test_challenges_are_identical(authorization: str | None, gateway: Gateway,
                                        http: httpx.AsyncClient) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    on_mcp = (await post_mcp(http, gateway.url, authorization)).headers["www-authenticate"]
    on_api = (await http.get(gateway.url + "/api/whoami", headers=headers)).headers["www-authenticate"]
    on_api2 = (await http.get(gateway.url + "/api2/whoami", headers=headers)).headers["www-authenticate"]
    assert on_mcp == on_api == on_api2
    metadata = f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource/mcp"'
    if authorization:
        assert on_mcp.startswith('Bearer error="invalid_token"') and metadata in on_mcp
        # What to do, for a person holding a personal access token (OAuth clients' "re-register" is no help).
        assert "mcp-gateway token create" in on_mcp and "re-register" not in on_mcp
    else:
        assert on_mcp == f"Bearer {metadata}"


async def test_without_idp_the_gateway_is_its_own_authorization_server(http: httpx.AsyncClient) -> None:
    settings = base_settings(None, public_url="https://gw.example.com/")
    async with run_gateway(settings) as gw:
        doc = (await http.get(gw.url + "/.well-known/oauth-protected-resource/mcp")).json()
        assert doc["resource"] == "https://gw.example.com/mcp"
        assert doc["authorization_servers"] == ["https://gw.example.com"]
        root = (await http.get(gw.url + "/.well-known/oauth-protected-resource")).json()
        assert root["resource"] == "https://gw.example.com"


async def test_configured_authorization_servers(http: httpx.AsyncClient) -> None:
    settings = base_settings(None, authorization_servers=["https://a.example", "https://b.example/tenant"])
    async with run_gateway(settings) as gw:
        doc = (await http.get(gw.url + "/.well-known/oauth-protected-resource/mcp")).json()
        assert doc["authorization_servers"] == ["https://a.example", "https://b.example/tenant"]
