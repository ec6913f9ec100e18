"""per_user_oauth end to end: a real authorization server (npm oauth2-mock-server, installed by `npm ci` from
tests/credentials/as/package-lock.json when missing), a real upstream that checks RS256 tokens against that
server's JWKS and publishes RFC 9728 metadata, and the gateway as OAuth client (discovery, code + PKCE, refresh).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from fastmcp import Client

from tests.gateway_proc import free_port, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import stop, wait_port

HERE = Path(__file__).parent
AS_DIR = HERE / "as"
KEY = base64.b64encode(b"k" * 32).decode()
AUDIENCE = "upstream-oauth-tests"


@pytest.fixture(scope="module")
def as_installed() -> Path:
    if not (AS_DIR / "node_modules" / "oauth2-mock-server").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the authorization server of these tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AS_DIR, check=True, capture_output=True,
                       timeout=300)
    return AS_DIR


def _start_as(port: int, ttl: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(["node", str(AS_DIR / "server.mjs"), str(port), AUDIENCE, str(ttl), *extra], cwd=AS_DIR,
                                stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


def _start_upstream(port: int, issuer: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / "oauth_upstream.py"), str(port), issuer, AUDIENCE],
                                stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


async def _link(http: httpx.AsyncClient, base: str, jwt: str, user: str) -> httpx.Response:
    """What the dashboard and the browser do: start (bearer), follow the AS redirect, land on the callback."""
    started = await http.post(f"{base}/api/credentials/cloud/oauth", headers={"Authorization": f"Bearer {jwt}"})
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"] + f"&login_hint={user}"
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [f"{base}/connections/callback"]
    at_as = await http.get(url)  # the AS answers with a redirect to our callback
    assert at_as.status_code == 302, at_as.text
    return await http.get(at_as.headers["location"])


async def test_link_call_refresh_and_relink(as_installed: Path, database: TestDatabase, tmp_path: Path,
                                            admin_conn: psycopg.Connection) -> None:
    as_port, up_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    as_log = tmp_path / "as.log"
    auth_server = _start_as(as_port, 4, as_log)
    upstream = _start_upstream(up_port, issuer, tmp_path / "upstream.log")
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[[upstreams]]
name = "cloud"
url = "http://127.0.0.1:{up_port}/mcp"
credentials = "per_user_oauth"
timeout = 10

[upstreams.oauth]
client_id = "mcp-gateway"
scopes = ["files"]
""")
    alice, bob = make_jwt("alice", "acme"), make_jwt("bob", "acme")
    try:
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config)),
                             MCP_GATEWAY_CREDENTIALS_KEY=KEY) as gw:
            async with httpx.AsyncClient(timeout=20) as http:
                listing = (await http.get(f"{gw.base_url}/api/credentials",
                                          headers={"Authorization": f"Bearer {alice}"})).json()
                assert listing["credentials"][0] | {"linked": False, "link_with": "oauth"} == listing["credentials"][0]

                # -- abuse first: a forged, a replayed and a cross-user state do nothing ----------------
                forged = await http.get(f"{gw.base_url}/connections/callback?code=x&state=YWNtZQ.YWxpY2U.forged")
                assert forged.status_code == 400 and "start again" in forged.text
                garbage = await http.get(f"{gw.base_url}/connections/callback?code=x&state=%%%")
                assert garbage.status_code == 400

                done = await _link(http, gw.base_url, alice, "alice")
                assert done.status_code == 303 and done.headers["location"] == "/dashboard#connections"
                replay = await http.get(str(done.request.url))
                assert replay.status_code == 400  # single use
                done = await _link(http, gw.base_url, bob, "bob")
                assert done.status_code == 303

            # -- calls act as each user, in parallel -----------------------------------------------
            async with Client(gw.mcp_url, auth=alice) as a, Client(gw.mcp_url, auth=bob) as b:
                async def call(client: Client, who: str, n: int) -> None:
                    res = await client.call_tool("cloud_whoami", {"tag": str(n)})
                    assert res.data == {"user": who, "tag": str(n)}

                await asyncio.gather(*(call(a if n % 2 else b, "alice" if n % 2 else "bob", n) for n in range(20)))
                issued = as_log.read_text().splitlines()
                assert issued.count("issued authorization_code alice") == 1
                assert issued.count("issued authorization_code bob") == 1

                # -- the access tokens expire (4 s at the AS, which told the gateway 3600 s): the next call
                # gets a 401 upstream and is refreshed once, transparently ---------------------------
                def refreshes() -> int:
                    return as_log.read_text().splitlines().count("issued refresh_token alice")

                before = refreshes()  # on a loaded machine the calls above may already have outlived a token
                await asyncio.sleep(4.5)  # time-based expiry: the tokens carry exp = issued + 4 s
                # six parallel calls all meet the expired token: one refresh serves them all
                after = await asyncio.gather(*(a.call_tool("cloud_whoami", {"tag": str(n)}) for n in range(6)))
                assert {r.data["user"] for r in after} == {"alice"}
                assert refreshes() == before + 1
                assert (await a.call_tool("cloud_whoami", {})).data["user"] == "alice"
                assert refreshes() == before + 1  # once: the fresh token is used from then on

                # -- the AS forgets every refresh token (restart): the next refresh fails -> needs re-link
                stop(auth_server)
                auth_server = _start_as(as_port, 4, as_log)
                await asyncio.sleep(4.5)
                failed = await b.call_tool("cloud_whoami", {}, raise_on_error=False)
                assert failed.is_error and "re-link" in failed.content[0].text, failed.content[0].text
                assert admin_conn.execute("SELECT needs_relink FROM gateway.upstream_credentials"
                                          " WHERE user_id = 'bob'").fetchone()[0] is True
            log = gw.log()
        secrets_at_rest = [bytes(r[0]) for r in admin_conn.execute("SELECT secret FROM gateway.upstream_credentials")]
        assert all(b"eyJ" not in s for s in secrets_at_rest)  # no JWT in clear
        assert "eyJ" not in log  # no token in the gateway's log
    finally:
        stop(upstream)
        stop(auth_server)


async def test_known_expiry_is_refreshed_before_the_call(as_installed: Path, database: TestDatabase,
                                                          tmp_path: Path) -> None:
    """When the token response says when the token expires, the gateway refreshes before calling: the
    upstream never sees the expired token."""
    as_port, up_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    as_log, up_log = tmp_path / "as.log", tmp_path / "upstream.log"
    auth_server = _start_as(as_port, 3, as_log, "honest")
    upstream = _start_upstream(up_port, issuer, up_log)
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[[upstreams]]
name = "cloud"
url = "http://127.0.0.1:{up_port}/mcp"
credentials = "per_user_oauth"

[upstreams.oauth]
client_id = "mcp-gateway"
issuer = "{issuer}"
""")
    alice = make_jwt("alice", "acme")
    try:
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config)),
                             MCP_GATEWAY_CREDENTIALS_KEY=KEY) as gw:
            async with httpx.AsyncClient(timeout=20) as http:
                assert (await _link(http, gw.base_url, alice, "alice")).status_code == 303
            async with Client(gw.mcp_url, auth=alice) as a:
                assert (await a.call_tool("cloud_whoami", {})).data["user"] == "alice"
                await asyncio.sleep(3.5)  # time-based expiry (3 s, as the token response said)
                assert (await a.call_tool("cloud_whoami", {})).data["user"] == "alice"
        assert as_log.read_text().splitlines().count("issued refresh_token alice") == 1
        assert " 401" not in up_log.read_text()  # refreshed before the call, not after a refusal
    finally:
        stop(upstream)
        stop(auth_server)
