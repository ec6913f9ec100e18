"""Dynamic client registration can be switched off, and is rate-limited per caller address across
replicas (two gateway processes share one count in the database)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gateway_proc import running_gateway, running_together, start_gateway
from tests.pg import TestDatabase

BODY = {"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}


def test_dcr_switched_off(database: TestDatabase, tmp_path: Path) -> None:
    with running_gateway(database, tmp_path / "gw", MCP_GATEWAY_OAUTH_DCR="false") as gw:
        meta = httpx.get(gw.base_url + "/.well-known/oauth-authorization-server").json()
        assert "registration_endpoint" not in meta and meta["client_id_metadata_document_supported"]
        response = httpx.post(gw.base_url + "/oauth/register", json=BODY)
        assert response.status_code == 404 and response.json()["error"] == "invalid_request"


def test_dcr_rate_limit_is_shared_by_replicas(database: TestDatabase, tmp_path: Path) -> None:
    with running_together(start_gateway(database, tmp_path / "a", wait=False, MCP_GATEWAY_OAUTH_DCR_PER_HOUR="3"),
                          start_gateway(database, tmp_path / "b", wait=False, MCP_GATEWAY_OAUTH_DCR_PER_HOUR="3")
                          ) as (a, b):
        codes = [httpx.post(gw.base_url + "/oauth/register", json=BODY).status_code for gw in (a, b, a, b)]
        assert codes == [201, 201, 201, 429]
        limited = httpx.post(a.base_url + "/oauth/register", json=BODY)
        assert limited.status_code == 429 and "too many" in limited.json()["error_description"]


def test_oauth_server_switched_off(database: TestDatabase, tmp_path: Path) -> None:
    with running_gateway(database, tmp_path / "gw", MCP_GATEWAY_OAUTH_SERVER="false") as gw:
        assert httpx.get(gw.base_url + "/.well-known/oauth-authorization-server").status_code == 404
        assert httpx.get(gw.base_url + "/oauth/authorize").status_code == 404
        prm = httpx.get(gw.base_url + "/.well-known/oauth-protected-resource/mcp").json()
        assert prm["authorization_servers"] == [gw.base_url]  # as before: the issuer of its personal tokens


def test_no_authorization_server_on_plain_http_beyond_loopback(database: TestDatabase, tmp_path: Path) -> None:
    with running_gateway(database, tmp_path / "gw", MCP_GATEWAY_PUBLIC_URL="http://gateway.example:8051") as gw:
        assert httpx.get(gw.base_url + "/.well-known/oauth-authorization-server").status_code == 404
        assert "neither https nor loopback" in gw.log()
