"""/dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): a member sees only
their own rows, a tenant admin sees every user of the tenant and nothing of another tenant.

Chromium is required, never skipped: .ci/run installs the Debian package.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client

from tests.gateway_proc import GatewayProcess, make_jwt

CHROMIUM = os.environ.get("MCP_GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test needs Debian's chromium "
                    "(apt-get install chromium; .ci/run installs it when run as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            await instance.close()


async def seed(gateway: GatewayProcess) -> dict[str, str]:
    """Real tool calls: alice (acme admin), bob (acme member), carol (globex admin)."""
    tokens = {"alice": make_jwt("alice", "acme", role="admin"), "bob": make_jwt("bob", "acme"),
              "carol": make_jwt("carol", "globex", role="admin")}
    # bob: one handshake-era session that ends (client_disconnect), one sessionless that stays active.
    async with Client(gateway.mcp_url, auth=tokens["bob"], mode="legacy") as client:
        await client.call_tool("echo", {"text": "bob-1"})
        await client.call_tool("explode", {"reason": "x"}, raise_on_error=False)
    async with Client(gateway.mcp_url, auth=tokens["bob"]) as client:
        await client.call_tool("add", {"a": 1, "b": 2})
    async with Client(gateway.mcp_url, auth=tokens["alice"]) as client:
        for i in range(3):
            await client.call_tool("echo", {"text": f"alice-{i}"})
    async with Client(gateway.mcp_url, auth=tokens["carol"]) as client:
        await client.call_tool("shout", {"text": "carol"})
    # Everything written (the API reads the database): 7 calls, bob's first session ended.
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=5) as http:
        for _ in range(200):
            ready = (await http.get("/ready")).json()
            if ready["writer"]["backlog"] == 0 and ready["writer"]["written"] >= 7:
                break
            await __import__("asyncio").sleep(0.05)
        else:
            raise AssertionError(f"tracking not written: {ready}")
    return tokens


async def open_dashboard(browser: Any, gateway: GatewayProcess, token: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(gateway.base_url + "/dashboard")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("body[data-loaded]", timeout=15000)
    return page


async def column(page: Any, table: str, attribute: str = "user") -> set[str]:
    return set(await page.eval_on_selector_all(f"#{table} tbody tr", f"rows => rows.map(r => r.dataset.{attribute})"))


async def test_member_sees_only_their_own_rows(gateway: GatewayProcess, browser: Any, tmp_path: Path) -> None:
    tokens = await seed(gateway)
    page = await open_dashboard(browser, gateway, tokens["bob"])
    assert await page.is_hidden("#board-error"), await page.text_content("#board-error")
    assert await column(page, "active") == {"bob"}
    assert await column(page, "costs") == {"bob"}
    assert await column(page, "disconnected") == {"bob"}
    assert await column(page, "tools", "tool") == {"echo", "explode", "add"}
    assert await page.text_content("#reasons [data-reason=client_disconnect]") is not None
    text = await page.text_content("body")
    assert "alice" not in text and "carol" not in text and "globex" not in text
    # The token lives in this tab's sessionStorage only.
    assert await page.evaluate("() => document.cookie") == ""
    assert await page.evaluate("() => window.localStorage.length") == 0
    await page.screenshot(path=str(tmp_path / "dashboard-member.png"), full_page=True)
    assert not page.errors, page.errors


async def test_admin_sees_the_tenant_and_a_sessions_requests(gateway: GatewayProcess, browser: Any,
                                                             tmp_path: Path) -> None:
    tokens = await seed(gateway)
    page = await open_dashboard(browser, gateway, tokens["alice"])
    assert await page.is_hidden("#board-error"), await page.text_content("#board-error")
    assert await column(page, "active") == {"alice", "bob"}
    assert await column(page, "costs") == {"alice", "bob"}
    assert await column(page, "tools", "tool") == {"echo", "explode", "add"}
    assert await page.locator("#cost-chart svg rect").count() == 2
    text = await page.text_content("body")
    assert "carol" not in text and "globex" not in text and "shout" not in text
    # explode: 1 call, 1 error -> 100 %
    explode = page.locator("#tools tbody tr[data-tool=explode]")
    assert "100.0%" in await explode.text_content()

    # A session's requests, on click.
    await page.click("#disconnected tbody tr[data-user=bob]")
    await page.wait_for_selector("#requests tbody tr")
    assert await column(page, "requests", "tool") == {"echo", "explode"}
    assert "exploded" in await page.text_content("#requests")
    await page.screenshot(path=str(tmp_path / "dashboard-admin.png"), full_page=True)
    assert (tmp_path / "dashboard-admin.png").stat().st_size > 10_000
    assert not page.errors, page.errors


async def test_refused_token_stays_on_the_form(gateway: GatewayProcess, browser: Any) -> None:
    page = await browser.new_page()
    await page.goto(gateway.base_url + "/dashboard")
    await page.fill("#token", make_jwt("mallory", "acme", secret="not-the-gateway-secret-long-enough!!"))
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:not(:empty)", timeout=30000)
    assert "refused" in await page.text_content("#login-error")
    assert page.url == gateway.base_url + "/dashboard"  # no form submission: the token is in no URL
    assert await page.is_hidden("#board")
    assert await page.evaluate("() => sessionStorage.length") == 0


def test_assets_are_served_with_their_content_types(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=5) as http:
        page = http.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/dashboard/dashboard.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/dashboard/dashboard.css").headers["content-type"].startswith("text/css")
        assert http.get("/dashboard/index.html").status_code == 404
        assert http.get("/dashboard/../pyproject.toml").status_code == 404
        assert http.get("/dashboard/", follow_redirects=True).url.path == "/dashboard"
