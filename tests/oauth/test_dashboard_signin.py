"""/dashboard signs in through the gateway's own OAuth flow (headless Chromium): no token pasted into
the page; the personal token is typed once on the gateway's sign-in page, then consent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gateway_proc import GatewayProcess, create_pat
from tests.pg import TestDatabase

CHROMIUM = os.environ.get("MCP_GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")


def test_dashboard_signs_in_through_oauth(gateway: GatewayProcess, oauth_db: TestDatabase) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing")
    from playwright.sync_api import expect, sync_playwright

    pat = create_pat(oauth_db, "acme", "dashboard-user", "admin")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(gateway.base_url + "/dashboard")
            button = page.locator("#oauth-signin")
            expect(button).to_be_visible()
            with page.expect_navigation():
                button.click()
            assert page.url.startswith(gateway.base_url + "/oauth/login"), page.url
            page.fill("input[name=token]", pat)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "Allow access?" in page.content() and "mcp-gateway dashboard" in page.content()
            page.click("button[value=approve]")
            page.wait_for_url(gateway.base_url + "/dashboard")
            expect(page.locator("#board")).to_be_visible(timeout=15_000)
            expect(page.locator("#login")).to_be_hidden()
            token = page.evaluate("sessionStorage.getItem('mcp-gateway.token')")
            assert token and token.startswith("eyJ") and pat not in token
            assert "code=" not in page.url
        finally:
            browser.close()


def test_dashboard_refuses_a_forged_callback(gateway: GatewayProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(gateway.base_url + "/dashboard?code=stolen&state=forged")
            expect(page.locator("#login-error")).to_contain_text("did not match")
            assert page.evaluate("sessionStorage.getItem('mcp-gateway.token')") is None
            assert "code=" not in page.url
        finally:
            browser.close()
