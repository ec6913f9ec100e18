"""The dashboard's Connections section in headless Chromium: link by pasting a token, call as yourself, unlink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastmcp import Client

from tests.credentials.test_per_user_calls import ALICE_TOKEN, KEY_NEW, _config, _start
from tests.gateway_proc import free_port, make_jwt, running_gateway
from tests.ops.test_dashboard import browser, open_dashboard  # noqa: F401 - the browser fixture
from tests.pg import TestDatabase
from tests.upstreams.helpers import stop


async def test_link_call_unlink_in_the_browser(database: TestDatabase, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({ALICE_TOKEN: "alice"}))
    upstream = _start(port, tokens, tmp_path / "upstream.log")
    alice = make_jwt("alice", "acme")
    try:
        with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(_config(tmp_path / "g.toml",
                                                                                                 port))),
                             MCP_GATEWAY_CREDENTIALS_KEY=KEY_NEW) as gw:
            page = await open_dashboard(browser, gw, alice)
            await page.wait_for_selector("#connections-card:not([hidden]) tr[data-connection='gh']")
            assert await page.get_attribute("tr[data-connection='gh']", "data-state") == "not linked"
            await page.fill("input[data-token-for='gh']", ALICE_TOKEN)
            await page.click("button[data-link='gh']")
            await page.wait_for_selector("tr[data-connection='gh'][data-state='linked']", timeout=15000)
            assert await page.input_value("input[data-token-for='gh']") == ""  # not kept in the page
            await page.screenshot(path=str(tmp_path / "dashboard-connections.png"), full_page=True)

            async with Client(gw.mcp_url, auth=alice) as client:
                assert (await client.call_tool("gh_whoami", {})).data["user"] == "alice"
                await page.click("button[data-unlink='gh']")
                await page.wait_for_selector("tr[data-connection='gh'][data-state='not linked']", timeout=15000)
                after = await client.call_tool("gh_whoami", {}, raise_on_error=False)
                assert after.is_error and "/dashboard#connections" in after.content[0].text
            assert page.errors == []
            assert ALICE_TOKEN not in gw.log()
    finally:
        stop(upstream)
