"""The official MCP TypeScript SDK client (auth() / OAuthClientProvider + StreamableHTTPClientTransport)
against the gateway, with headless Chromium (Playwright, the system browser) on the sign-in and
consent pages: from the MCP URL alone to tool calls recorded under the signed-in user.

  - no IdP: the personal-token login page, registration by DCR (what `mcp-gateway dev` offers);
  - a real OIDC provider on loopback (node-oidc-provider), once with a Client ID Metadata
    Document served over HTTPS (test CA), once with DCR.

The npm packages are pinned in tests/oauth/js/package-lock.json and installed by `npm ci` here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.gateway.conftest import wait_rows
from tests.gateway_proc import GatewayProcess, create_pat, free_port, running_gateway
from tests.oauth.cimd_server import CimdServer
from tests.pg import TestDatabase

JS = Path(__file__).parent / "js"
BROWSER = os.environ.get("MCP_GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the TypeScript SDK client tests")
    if not Path(BROWSER).exists():
        pytest.skip(f"no Chromium at {BROWSER} (set MCP_GATEWAY_TEST_CHROMIUM)")
    if not (JS / "node_modules" / "@modelcontextprotocol" / "sdk").exists():
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"npm ci failed:\n{result.stderr[-3000:]}"
    return JS / "node_modules"


def run_sdk_client(node_modules: Path, **options: object) -> dict:
    options.setdefault("callbackPort", free_port())
    options.setdefault("browser", BROWSER)
    result = subprocess.run(["node", str(JS / "mcp_client.mjs"), json.dumps(options)], cwd=JS, capture_output=True,
                            text=True, timeout=180)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the SDK client:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    outcome = json.loads(lines[-1])
    assert outcome["ok"], outcome.get("error")
    return outcome


def test_sdk_client_dcr_with_personal_token_sign_in(node_modules: Path, gateway: GatewayProcess, oauth_db: TestDatabase,
                                                    admin: psycopg.Connection) -> None:
    pat = create_pat(oauth_db, "initech", "peter", "member")
    outcome = run_sdk_client(node_modules, url=gateway.mcp_url, mode="dcr", pat=pat)
    assert outcome["tool"] == "sdk dcr" and outcome["client_id"].startswith("dcr_")
    assert outcome["iss"] == gateway.base_url and outcome["refresh"]
    wait_rows(admin, "SELECT 1 FROM gateway.mcp_requests WHERE tenant_id = 'initech' AND user_id = 'peter'"
                     " AND tool_name = 'echo'", 1)


# ---------------------------------------------------------------------------- with a real IdP

@pytest.fixture(scope="module")
def idp_gateway(node_modules: Path, oauth_db: TestDatabase, cimd: CimdServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gateway_port, idp_port = free_port(), free_port()
    client_id, secret = "mcp-gateway", "gateway-client-secret-for-tests"
    idp = subprocess.Popen(["node", str(JS / "idp.mjs"), str(idp_port), client_id, secret,
                            f"http://127.0.0.1:{gateway_port}/oauth/callback"], cwd=JS, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        assert idp.stdout is not None
        seen = ""
        while not seen.endswith("\n") or not seen.splitlines()[-1].startswith("ready"):
            line = idp.stdout.readline()  # oidc-provider warns first on node 20 (it prefers 22)
            assert line, f"the OIDC provider did not start:\n{seen}"
            seen += line
        threading.Thread(target=idp.stdout.read, daemon=True).start()  # keep the pipe drained
        with running_gateway(oauth_db, tmp_path_factory.mktemp("gw-idp"), port=gateway_port,
                             args=("serve", "--tools", "tests.sample_tools:mcp"),
                             MCP_GATEWAY_OIDC_ISSUER=f"http://127.0.0.1:{idp_port}",
                             MCP_GATEWAY_OIDC_CLIENT_ID=client_id, MCP_GATEWAY_OIDC_CLIENT_SECRET=secret,
                             MCP_GATEWAY_OAUTH_EMAIL_DOMAIN_TENANTS="mapped.example=mapped",
                             MCP_GATEWAY_OAUTH_CIMD_ALLOWED_HOSTS="localhost",
                             MCP_GATEWAY_OAUTH_CIMD_CA_FILE=str(cimd.ca_file)) as gw:
            yield gw
    finally:
        idp.terminate()
        idp.wait(10)


def test_sdk_client_cimd_with_idp_sign_in(node_modules: Path, idp_gateway: GatewayProcess, cimd: CimdServer,
                                          admin: psycopg.Connection) -> None:
    port = free_port()
    metadata_url = cimd.publish("/sdk-client.json", {
        "client_name": "SDK CIMD client", "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
        "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none"})
    outcome = run_sdk_client(node_modules, url=idp_gateway.mcp_url, mode="cimd", metadataUrl=metadata_url,
                             callbackPort=port, idpLogin="alice")
    assert outcome["client_id"] == metadata_url and outcome["tool"] == "sdk cimd"
    assert "/sdk-client.json" in cimd.fetches
    rows = wait_rows(admin, "SELECT tenant_id, user_id FROM gateway.mcp_requests WHERE tool_name = 'echo'"
                            " AND user_id = 'alice'", 1)
    assert set(rows) == {("acme", "alice")}
    email = admin.execute("SELECT email FROM gateway.users WHERE tenant_id = 'acme' AND user_id = 'alice'").fetchone()
    assert email == ("alice@acme.example",)


def test_sdk_client_dcr_with_idp_sign_in(node_modules: Path, idp_gateway: GatewayProcess,
                                         admin: psycopg.Connection) -> None:
    outcome = run_sdk_client(node_modules, url=idp_gateway.mcp_url, mode="dcr", idpLogin="carol")
    assert outcome["client_id"].startswith("dcr_") and outcome["tool"] == "sdk dcr"
    rows = wait_rows(admin, "SELECT tenant_id, user_id FROM gateway.mcp_requests WHERE tool_name = 'echo'"
                            " AND user_id = 'carol'", 1)
    assert set(rows) == {("globex", "carol")}
    role = admin.execute("SELECT role FROM gateway.oauth_token_families WHERE user_id = 'carol'").fetchone()
    assert role == ("admin",)


# ---------------------------------------------------------------------------- IdP sign-in refusals

def _authorize_url(gateway: GatewayProcess) -> str:
    from tests.oauth.flow import REDIRECT, Flow, pkce
    flow = Flow(gateway.base_url)
    try:
        client_id = flow.register()["client_id"]
    finally:
        flow.close()
    from urllib.parse import urlencode
    return gateway.base_url + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "state": "s",
        "code_challenge": pkce()[1], "code_challenge_method": "S256", "resource": gateway.mcp_url})


def _families(admin: psycopg.Connection) -> int:
    return int(admin.execute("SELECT count(*) FROM gateway.oauth_token_families").fetchone()[0])


def test_idp_user_without_tenant_gets_no_token(node_modules: Path, idp_gateway: GatewayProcess,
                                               admin: psycopg.Connection) -> None:
    from playwright.sync_api import sync_playwright
    before = _families(admin)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(_authorize_url(idp_gateway))
        page.fill("input[name=login]", "notenant")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        if "/interaction/" in page.url:  # the IdP's own consent
            with page.expect_navigation():
                page.click("button[type=submit]")
        assert "/oauth/callback" in page.url
        text = page.content()
        browser.close()
    assert "no tenant claim" in text and "access_denied" in text
    assert _families(admin) == before


def test_idp_callback_with_forged_state(node_modules: Path, idp_gateway: GatewayProcess,
                                        admin: psycopg.Connection) -> None:
    import httpx
    before = _families(admin)
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        assert browser.get(_authorize_url(idp_gateway)).headers["location"] == "/oauth/login"
        to_idp = browser.get(idp_gateway.base_url + "/oauth/login")
        assert to_idp.status_code == 303 and "state=" in to_idp.headers["location"]
        forged = browser.get(idp_gateway.base_url + "/oauth/callback?code=stolen&state=forged")
        assert forged.status_code == 403 and "state does not match" in forged.text
        assert "location" not in forged.headers
    assert _families(admin) == before


def test_idp_user_gets_the_tenant_of_their_email_domain(node_modules: Path, idp_gateway: GatewayProcess,
                                                        admin: psycopg.Connection) -> None:
    """No tenant claim, but MCP_GATEWAY_OAUTH_EMAIL_DOMAIN_TENANTS maps the verified email's domain."""
    outcome = run_sdk_client(node_modules, url=idp_gateway.mcp_url, mode="dcr", idpLogin="dora")
    assert outcome["tool"] == "sdk dcr"
    rows = wait_rows(admin, "SELECT tenant_id, user_id FROM gateway.mcp_requests WHERE user_id = 'dora'", 1)
    assert set(rows) == {("mapped", "dora")}
