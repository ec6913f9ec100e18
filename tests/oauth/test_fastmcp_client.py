"""fastmcp.Client with its own OAuth helper (`fastmcp.client.auth.OAuth`): discovery, dynamic
registration, PKCE, its loopback callback server and token exchange are FastMCP's; only the
step that would open a desktop browser is replaced by a scripted one that signs in with a
personal access token and approves, over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from fastmcp import Client
from fastmcp.client.auth import OAuth

from tests.gateway.conftest import wait_rows
from tests.gateway_proc import GatewayProcess, create_pat
from tests.oauth.flow import CSRF
from tests.pg import TestDatabase


class ScriptedBrowserOAuth(OAuth):
    def __init__(self, base_url: str, pat: str) -> None:
        super().__init__(client_name="fastmcp test client")
        self.base_url = base_url
        self.pat = pat
        self.tasks: set[asyncio.Task[None]] = set()

    async def redirect_handler(self, authorization_url: str) -> None:
        task = asyncio.get_running_loop().create_task(self._browse(authorization_url))
        self.tasks.add(task)

    async def _browse(self, url: str) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, follow_redirects=False, timeout=30) as browser:
            assert (await browser.get(url)).headers["location"] == "/oauth/login"
            csrf = CSRF.search((await browser.get("/oauth/login")).text).group(1)  # type: ignore[union-attr]
            await browser.post("/oauth/login", data={"csrf": csrf, "token": self.pat})
            csrf = CSRF.search((await browser.get("/oauth/consent")).text).group(1)  # type: ignore[union-attr]
            answer = await browser.post("/oauth/consent", data={"csrf": csrf, "decision": "approve"})
            callback = answer.headers["location"]
        for _ in range(100):  # FastMCP starts its callback server right after this handler returns
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    await client.get(callback)
                return
            except httpx.ConnectError:
                await asyncio.sleep(0.05)


@pytest.mark.filterwarnings("ignore:Using in-memory token storage")
async def test_fastmcp_client_oauth_helper(gateway: GatewayProcess, oauth_db: TestDatabase,
                                           admin: psycopg.Connection) -> None:
    pat = create_pat(oauth_db, "umbrella", "wesker", "member")
    auth = ScriptedBrowserOAuth(gateway.base_url, pat)
    async with Client(gateway.mcp_url, auth=auth) as client:
        result = await client.call_tool("echo", {"text": "fastmcp oauth"})
        assert result.data == "fastmcp oauth"
    await asyncio.gather(*auth.tasks)
    rows = wait_rows(admin, "SELECT tenant_id, user_id FROM gateway.mcp_requests WHERE tool_name = 'echo'"
                            " AND user_id = 'wesker'", 1)
    assert set(rows) == {("umbrella", "wesker")}
