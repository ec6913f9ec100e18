"""token_exchange end to end: the caller's own sign-in token is exchanged (RFC 8693) at a real token endpoint
for one scoped to the upstream; cached per user until it expires; never another user's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from fastmcp import Client

from tests.credentials.test_per_user_calls import SERVER as WHOAMI
from tests.gateway_proc import JWT_SECRET, create_pat, free_port, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import stop, wait_port

HERE = Path(__file__).parent


def _start(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


async def test_exchanged_per_user_and_cached(database: TestDatabase, tmp_path: Path) -> None:
    up_port, idp_port = free_port(), free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text("{}")
    idp_log = tmp_path / "idp.log"
    upstream = _start([str(WHOAMI), str(up_port), str(tokens)], up_port, tmp_path / "upstream.log")
    idp = _start([str(HERE / "exchange_server.py"), str(idp_port), JWT_SECRET, "whoami-api", str(tokens)], idp_port,
                 idp_log)
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[[upstreams]]
name = "api"
url = "http://127.0.0.1:{up_port}/mcp"
credentials = "token_exchange"

[upstreams.oauth]
token_endpoint = "http://127.0.0.1:{idp_port}/token"
audience = "whoami-api"
""")
    alice, bob = make_jwt("alice", "acme"), make_jwt("bob", "acme")
    try:
        # token_exchange stores nothing: no credentials key needed
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config))) as gw:
            async with Client(gw.mcp_url, auth=alice) as a, Client(gw.mcp_url, auth=bob) as b:
                async def call(client: Client, who: str, n: int) -> None:
                    res = await client.call_tool("api_whoami", {"tag": str(n)})
                    assert res.data == {"user": who, "tag": str(n)}

                await asyncio.gather(*(call(a if n % 2 else b, "alice" if n % 2 else "bob", n) for n in range(20)))
                exchanges = idp_log.read_text().splitlines()
                assert sorted(exchanges) == ["exchanged alice", "exchanged bob"], exchanges  # cached per user
            pat = create_pat(database, "acme", "carol")
            async with Client(gw.mcp_url, auth=pat) as c:
                refused = await c.call_tool("api_whoami", {}, raise_on_error=False)
                assert refused.is_error and "personal access token cannot be exchanged" in refused.content[0].text
            log = gw.log()
        assert "xchg-" not in log and alice not in log and bob not in log
    finally:
        stop(upstream)
        stop(idp)
