"""The whole flow over real HTTP against a real gateway process: dynamic registration, sign-in
with a personal access token on the login page, consent, code -> tokens, tool calls recorded
under the signed-in user and tenant; refresh rotation, revocation, remembered consent."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg
import pytest
from fastmcp import Client

from tests.gateway.conftest import wait_for, wait_rows
from tests.oauth.flow import Flow


def mcp_status(flow: Flow, token: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    response = httpx.post(flow.mcp_url, json=body, timeout=10, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"})
    return response.status_code


def tokens_for(flow: Flow, client_id: str, pat: str, **kwargs) -> dict:
    authorized = flow.full_authorization(client_id, pat, **kwargs)
    response = flow.exchange(client_id, authorized)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def test_registration_of_a_public_client_has_no_secret_and_no_nulls(flow: Flow) -> None:
    info = flow.register()
    assert info["client_id"].startswith("dcr_") and "client_secret" not in info
    assert None not in info.values(), info
    confidential = flow.register(token_endpoint_auth_method="client_secret_basic")
    assert confidential["client_secret"] and None not in confidential.values()


def test_metadata_names_the_gateway(flow: Flow) -> None:
    meta = flow.metadata()
    assert meta["issuer"] == flow.base_url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["client_id_metadata_document_supported"] is True
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert httpx.get(flow.base_url + "/.well-known/openid-configuration").json() == meta
    prm = httpx.get(flow.base_url + "/.well-known/oauth-protected-resource/mcp").json()
    assert prm["authorization_servers"] == [flow.base_url]
    assert prm["resource"] == flow.mcp_url
    jwks = httpx.get(meta["jwks_uri"]).json()
    assert jwks["keys"] and all(k["alg"] == "ES256" and "d" not in k for k in jwks["keys"])
    challenge = httpx.post(flow.mcp_url, json={})
    assert challenge.status_code == 401 and "resource_metadata=" in challenge.headers["www-authenticate"]


async def test_tool_calls_are_recorded_under_the_signed_in_user(flow: Flow, client_id: str, alice_pat: str,
                                                               admin: psycopg.Connection) -> None:
    tokens = tokens_for(flow, client_id, alice_pat)
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "mcp" and tokens["refresh_token"]
    async with Client(flow.mcp_url, auth=tokens["access_token"]) as client:
        result = await client.call_tool("echo", {"text": "via oauth"})
        assert "via oauth" in str(result)
        whoami = await client.call_tool("whoami", {})
        assert "alice" in str(whoami) and "acme" in str(whoami)
    rows = wait_rows(admin, "SELECT tenant_id, user_id FROM gateway.mcp_requests WHERE tool_name = 'echo'"
                            " AND user_id = 'alice'", 1)
    assert set(rows) == {("acme", "alice")}
    grant = admin.execute("SELECT tenant_id, user_id, client_id, revoked_at FROM gateway.oauth_grants"
                          " WHERE client_id = %s", (client_id,)).fetchall()
    assert grant == [("acme", "alice", client_id, None)]


def test_secrets_are_stored_as_digests_only(flow: Flow, client_id: str, alice_pat: str,
                                            admin: psycopg.Connection) -> None:
    tokens = tokens_for(flow, client_id, alice_pat)
    dump = str(admin.execute("SELECT array_agg(t::text) FROM gateway.oauth_refresh_tokens t").fetchone())
    dump += str(admin.execute("SELECT array_agg(c::text) FROM gateway.oauth_codes c").fetchone())
    assert tokens["refresh_token"] not in dump and tokens["access_token"] not in dump


def test_refresh_rotates_and_a_concurrent_retry_within_grace_works(flow: Flow, client_id: str,
                                                                    alice_pat: str) -> None:
    tokens = tokens_for(flow, client_id, alice_pat)
    first = flow.refresh(client_id, tokens["refresh_token"])
    assert first.status_code == 200, first.text
    assert first.json()["refresh_token"] != tokens["refresh_token"]
    retry = flow.refresh(client_id, tokens["refresh_token"])  # the same old token again, at once
    assert retry.status_code == 200, retry.text
    assert mcp_status(flow, first.json()["access_token"]) == 200
    assert mcp_status(flow, retry.json()["access_token"]) == 200


def test_refresh_reuse_after_grace_revokes_the_family(flow: Flow, client_id: str, alice_pat: str,
                                                      admin: psycopg.Connection) -> None:
    tokens = tokens_for(flow, client_id, alice_pat)
    rotated = flow.refresh(client_id, tokens["refresh_token"]).json()
    assert mcp_status(flow, rotated["access_token"]) == 200
    # The grace window (2 s in this module) passes: make the rotation older instead of waiting.
    admin.execute("UPDATE gateway.oauth_refresh_tokens SET rotated_at = now() - interval '1 minute'"
                  " WHERE rotated_at IS NOT NULL")
    replay = flow.refresh(client_id, tokens["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "access_token" not in replay.json()
    # the whole family is gone: the newest refresh token and the access tokens too
    assert flow.refresh(client_id, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    started = time.monotonic()
    wait_for(lambda: mcp_status(flow, rotated["access_token"]) == 401, timeout=5.0, what="revocation")
    assert time.monotonic() - started < 5.0


def test_rfc7009_revocation_is_refused_within_5_seconds(flow: Flow, client_id: str, alice_pat: str) -> None:
    tokens = tokens_for(flow, client_id, alice_pat)
    assert mcp_status(flow, tokens["access_token"]) == 200
    revoked = httpx.post(flow.base_url + "/oauth/revoke", data={"token": tokens["access_token"],
                                                                 "client_id": client_id})
    assert revoked.status_code == 200
    wait_for(lambda: mcp_status(flow, tokens["access_token"]) == 401, timeout=5.0, what="revocation")
    assert flow.refresh(client_id, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    # unknown tokens: 200 as RFC 7009 says, nothing happens
    unknown = httpx.post(flow.base_url + "/oauth/revoke", data={"token": "nope", "client_id": client_id})
    assert unknown.status_code == 200


def test_remembered_client_skips_consent(flow: Flow, alice_pat: str) -> None:
    client_id = flow.register()["client_id"]
    tokens_for(flow, client_id, alice_pat, remember=True)
    from tests.oauth.flow import pkce, query_of
    _verifier, challenge = pkce()
    assert flow.authorize(client_id, challenge=challenge).status_code == 303
    assert flow.login(alice_pat).headers["location"] == "/oauth/consent"
    straight = flow.browser.get("/oauth/consent")
    assert straight.status_code in (302, 303), straight.text
    assert "code" in query_of(straight.headers["location"])


def test_loopback_redirect_may_use_another_port_and_private_schemes_match_exactly(flow: Flow, alice_pat: str) -> None:
    client_id = flow.register(["http://127.0.0.1/callback", "cursor://anysphere.cursor-mcp/oauth/callback"])[
        "client_id"]
    authorized = flow.full_authorization(client_id, alice_pat, redirect_uri="http://127.0.0.1:53211/callback")
    assert flow.exchange(client_id, authorized).status_code == 200
    authorized = flow.full_authorization(client_id, alice_pat,
                                         redirect_uri="cursor://anysphere.cursor-mcp/oauth/callback")
    assert flow.exchange(client_id, authorized).status_code == 200


@pytest.mark.parametrize("path", ["/oauth/login", "/oauth/consent"])
def test_pages_without_a_request_are_errors_not_redirects(flow: Flow, path: str) -> None:
    response = flow.browser.get(path)
    assert response.status_code == 400 and "location" not in response.headers


def test_grants_listed_and_revoked_over_the_api_under_rls(flow: Flow, client_id: str, alice_pat: str, bob_pat: str,
                                                          oauth_db) -> None:
    from tests.gateway_proc import create_pat
    tokens = tokens_for(flow, client_id, alice_pat)
    acme_admin = create_pat(oauth_db, "acme", "carla", "admin")
    api = flow.base_url + "/api/oauth/grants"

    def grants(pat: str) -> list[dict]:
        response = httpx.get(api, headers={"Authorization": f"Bearer {pat}"})
        assert response.status_code == 200, response.text
        return [g for g in response.json()["grants"] if g["client_id"] == client_id]

    (mine,) = grants(alice_pat)
    assert mine["user_id"] == "alice" and mine["client_name"] == "Test client" and mine["revoked_at"] is None
    assert grants(acme_admin) == [mine]          # a tenant admin sees the tenant's grants
    assert grants(bob_pat) == []                 # another tenant's admin does not
    assert httpx.get(api).status_code == 401
    other = httpx.delete(f"{api}/{mine['grant_id']}", headers={"Authorization": f"Bearer {bob_pat}"})
    assert other.status_code == 404              # invisible, so indistinguishable from missing
    assert mcp_status(flow, tokens["access_token"]) == 200
    own = httpx.delete(f"{api}/{mine['grant_id']}", headers={"Authorization": f"Bearer {alice_pat}"})
    assert own.status_code == 204
    wait_for(lambda: mcp_status(flow, tokens["access_token"]) == 401, timeout=5.0, what="grant revocation")
    assert flow.refresh(client_id, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert grants(alice_pat)[0]["revoked_at"] is not None


def test_grants_cli(flow: Flow, client_id: str, alice_pat: str, oauth_db) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.gateway_proc import REPO
    tokens = tokens_for(flow, client_id, alice_pat)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(oauth_db.env(), PYTHONPATH=str(REPO))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "oauth", *args], env=env, capture_output=True,
                              text=True, timeout=60, cwd=str(REPO))

    listed = cli("grants", "--tenant", "acme", "--user", "alice", "--json")
    assert listed.returncode == 0, listed.stderr
    (grant,) = [g for g in json.loads(listed.stdout) if g["client_id"] == client_id]
    assert tokens["refresh_token"] not in listed.stdout
    assert cli("revoke", "not-a-uuid").returncode == 2
    assert cli("revoke", str(uuid.uuid4())).returncode == 2
    revoked = cli("revoke", grant["grant_id"])
    assert revoked.returncode == 0 and grant["grant_id"] in revoked.stdout
    wait_for(lambda: mcp_status(flow, tokens["access_token"]) == 401, timeout=5.0, what="grant revocation")
