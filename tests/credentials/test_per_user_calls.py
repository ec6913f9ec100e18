"""Per-user credentials end to end: a real gateway process, a real upstream that checks its bearer
token and answers who called, real HTTP on both sides, real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from fastmcp import Client

from tests.gateway.conftest import wait_rows
from tests.gateway_proc import free_port, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import stop, wait_port

SERVER = Path(__file__).with_name("whoami_upstream.py")
KEY_OLD = base64.b64encode(b"o" * 32).decode()
KEY_NEW = base64.b64encode(b"n" * 32).decode()
ALICE_TOKEN = "upstream-secret-alice-7f3a"
BOB_TOKEN = "upstream-secret-bob-91c2"


def _start(port: int, tokens: Path, log: Path, answers: str = "sse") -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(SERVER), str(port), str(tokens), answers], stdout=out,
                                stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


def _config(path: Path, port: int) -> Path:
    path.write_text(f"""
[[upstreams]]
name = "gh"
url = "http://127.0.0.1:{port}/mcp"
credentials = "per_user_token"
timeout = 10
""")
    return path


async def _link(base: str, jwt: str, token: str) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.put(f"{base}/api/credentials/gh", json={"token": token},
                           headers={"Authorization": f"Bearer {jwt}"})
        assert r.status_code == 204, r.text


# sse: the gateway's calls go through the MCP client; json: they are posted directly on the user's session.
@pytest.mark.parametrize("answers", ["sse", "json"])
async def test_two_users_act_upstream_as_themselves(database: TestDatabase, tmp_path: Path,
                                                    admin_conn: psycopg.Connection, answers: str) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}))
    upstream = _start(port, tokens, tmp_path / "upstream.log", answers)
    config = _config(tmp_path / "gateway.toml", port)
    alice, bob = make_jwt("alice", "acme"), make_jwt("bob", "acme")
    carol = make_jwt("carol", "acme", "admin")
    try:
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config)),
                             MCP_GATEWAY_CREDENTIALS_KEY=f"{KEY_NEW},{KEY_OLD}") as gw:
            async with Client(gw.mcp_url, auth=alice) as a, Client(gw.mcp_url, auth=bob) as b:
                # -- unlinked: an actionable tool error naming where to link -------------------------
                result = await a.call_tool("gh_whoami", {}, raise_on_error=False)
                assert result.is_error
                text = result.content[0].text
                assert f"{gw.base_url}/dashboard#connections" in text and "link" in text, text

                await _link(gw.base_url, alice, ALICE_TOKEN)
                await _link(gw.base_url, bob, BOB_TOKEN)

                # -- 24 parallel mixed calls: each reaches the upstream as its caller ---------------
                async def call(client: Client, who: str, n: int) -> None:
                    res = await client.call_tool("gh_whoami", {"tag": f"{who}-{n}"})
                    assert res.data == {"user": who, "tag": f"{who}-{n}"}, (who, res.data)

                await asyncio.gather(*(call(a if n % 2 else b, "alice" if n % 2 else "bob", n) for n in range(24)))
                await a.call_tool("whoami", {})  # a gateway tool: no credential mode

                # -- tracking: each row names the credential mode that served it, never a secret ---------
                rows = wait_rows(admin_conn, "SELECT tool_name, credential_mode, status FROM gateway.mcp_requests",
                                 26)
                assert {(t, m) for t, m, st in rows if st == "success"} == {("gh_whoami", "per_user_token"),
                                                                            ("whoami", None)}
                async with httpx.AsyncClient() as http:
                    report = (await http.get(f"{gw.base_url}/api/reports/costs?group_by=upstream",
                                             headers={"Authorization": f"Bearer {carol}"})).json()
                    by_upstream = {r["upstream"]: r["calls"] for r in report["rows"]}
                    assert by_upstream["gh"] >= 25 and by_upstream[""] == 1, report

                # -- listing: own links only, never a value ------------------------------------------
                async with httpx.AsyncClient() as http:
                    mine = (await http.get(f"{gw.base_url}/api/credentials",
                                           headers={"Authorization": f"Bearer {alice}"})).json()
                    assert mine["credentials"] == [{**mine["credentials"][0], "upstream": "gh", "linked": True,
                                                    "needs_relink": False}]
                    everyone = (await http.get(f"{gw.base_url}/api/credentials?all=1",
                                               headers={"Authorization": f"Bearer {carol}"})).json()
                    assert {(c["user_id"], c["linked"]) for c in everyone["credentials"]} == {
                        ("alice", True), ("bob", True)}
                    member_all = (await http.get(f"{gw.base_url}/api/credentials?all=1",
                                                 headers={"Authorization": f"Bearer {bob}"})).json()
                    assert {c["user_id"] for c in member_all["credentials"]} == {"bob"}
                    for body in (mine, everyone):
                        assert ALICE_TOKEN not in json.dumps(body) and BOB_TOKEN not in json.dumps(body)
                    metrics = await http.get(f"{gw.base_url}/metrics")
                    ready = await http.get(f"{gw.base_url}/ready")
                    assert metrics.status_code == 200 and "gh_whoami" in metrics.text  # labelled, not vacuous
                    for text in (metrics.text, ready.text):
                        assert ALICE_TOKEN not in text and BOB_TOKEN not in text
                    # abuse: no token, a bad body, an unknown upstream, another tenant's admin
                    h = {"Authorization": f"Bearer {alice}"}
                    assert (await http.put(f"{gw.base_url}/api/credentials/gh", json={"token": "x"})).status_code == 401
                    for body in ({"token": ""}, {"token": "has space"}, {"token": "x", "user_id": "bob"}, [1]):
                        r = await http.put(f"{gw.base_url}/api/credentials/gh", json=body, headers=h)
                        assert r.status_code == 422 and "Traceback" not in r.text, (body, r.text)
                    r = await http.put(f"{gw.base_url}/api/credentials/gh", content=b"{" * 20000, headers=h)
                    assert r.status_code == 413
                    r = await http.put(f"{gw.base_url}/api/credentials/nope", json={"token": "x"}, headers=h)
                    assert r.status_code == 404
                    other_admin = make_jwt("carol", "globex", "admin")
                    r = await http.delete(f"{gw.base_url}/api/credentials/gh?user_id=alice",
                                          headers={"Authorization": f"Bearer {other_admin}"})
                    assert r.status_code == 204  # acts in globex only: acme's alice keeps her link
                    assert (await a.call_tool("gh_whoami", {})).data["user"] == "alice"
                    # a member cannot revoke someone else's link
                    r = await http.delete(f"{gw.base_url}/api/credentials/gh?user_id=alice",
                                          headers={"Authorization": f"Bearer {bob}"})
                    assert r.status_code == 403

                # -- the value at rest: encrypted, and bound to its row --------------------------------
                rows = admin_conn.execute("SELECT user_id, secret FROM gateway.upstream_credentials"
                                          " ORDER BY user_id").fetchall()
                assert [r[0] for r in rows] == ["alice", "bob"]
                assert all(ALICE_TOKEN.encode() not in bytes(r[1]) and BOB_TOKEN.encode() not in bytes(r[1])
                           for r in rows)
                # Bob's ciphertext copied into Alice's row does not decrypt as Alice: needs re-link.
                admin_conn.execute("UPDATE gateway.upstream_credentials SET secret ="
                                   " (SELECT secret FROM gateway.upstream_credentials WHERE user_id = 'bob')"
                                   " WHERE user_id = 'alice'")
                swapped = await a.call_tool("gh_whoami", {}, raise_on_error=False)
                assert swapped.is_error and "link" in swapped.content[0].text
                await _link(gw.base_url, alice, ALICE_TOKEN)
                assert (await a.call_tool("gh_whoami", {})).data["user"] == "alice"

                # -- an admin revokes Bob: his next call is refused with the link URL ------------------
                async with httpx.AsyncClient() as http:
                    r = await http.delete(f"{gw.base_url}/api/credentials/gh?user_id=bob",
                                          headers={"Authorization": f"Bearer {carol}"})
                    assert r.status_code == 204
                revoked = await b.call_tool("gh_whoami", {}, raise_on_error=False)
                assert revoked.is_error and "/dashboard#connections" in revoked.content[0].text
                assert (await a.call_tool("gh_whoami", {})).data["user"] == "alice"  # Alice unaffected

                # -- the upstream stops accepting Alice's token: 401 -> needs re-link, said so ---------
                tokens.write_text(json.dumps({BOB_TOKEN: "bob"}))
                refused = await a.call_tool("gh_whoami", {}, raise_on_error=False)
                assert refused.is_error and "re-link" in refused.content[0].text, refused.content[0].text
                assert admin_conn.execute("SELECT needs_relink FROM gateway.upstream_credentials"
                                          " WHERE user_id = 'alice'").fetchone()[0] is True
                async with httpx.AsyncClient() as http:
                    mine = (await http.get(f"{gw.base_url}/api/credentials",
                                           headers={"Authorization": f"Bearer {alice}"})).json()
                    assert mine["credentials"][0]["needs_relink"] is True

                # -- a token the upstream never accepted: refused during the first handshake, which says
                # re-link too (not "answered error -32603", the MCP client's word for an HTTP 401) --------
                await _link(gw.base_url, carol, "never-valid-at-the-upstream")
                async with Client(gw.mcp_url, auth=carol) as c:
                    first = await c.call_tool("gh_whoami", {}, raise_on_error=False)
                assert first.is_error and "re-link" in first.content[0].text, first.content[0].text
                assert admin_conn.execute("SELECT needs_relink FROM gateway.upstream_credentials"
                                          " WHERE user_id = 'carol'").fetchone()[0] is True
            log = gw.log()
        # -- never in the logs --------------------------------------------------------------------
        assert ALICE_TOKEN not in log and BOB_TOKEN not in log
        assert KEY_NEW not in log and KEY_OLD not in log
    finally:
        stop(upstream)


async def test_per_user_upstream_without_a_key_refuses_to_start(tmp_path: Path, database: TestDatabase) -> None:
    config = _config(tmp_path / "gateway.toml", free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(database.env(), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "MCP_GATEWAY_CREDENTIALS_KEY" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
