"""/dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), as a member, a tenant
admin and an auditor, at 1280 px and 375 px, by mouse and by keyboard. Screenshots are kept in each test's
tmp_path (dashboard-*.png).

Chromium is required, never skipped: .ci/run installs the Debian package.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastmcp import Client

from tests.gateway_proc import GatewayProcess, create_pat, make_jwt, running_gateway
from tests.helpers.upstreams import UP_AND_DOWN, write_up_and_down_config
from tests.pg import TestDatabase

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
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"tracking not written: {ready}")
        # A DELETE ends its analytics session after a short grace (any process may still hold its calls).
        bearer = {"Authorization": f"Bearer {tokens['bob']}"}
        for _ in range(200):
            ended = (await http.get("/api/mcp/sessions/disconnected?days=1", headers=bearer)).json()
            if ended["sessions"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"bob's first session never ended: {ended}")
    return tokens


async def add_history(database: TestDatabase) -> None:
    """Rows a few real calls cannot make quickly: bob's open session whose client went quiet 20 minutes ago
    without a DELETE (still 'active' in the table), and two of his calls two days ago, one with a tool name
    and an error message shaped like spreadsheet formulas."""
    quiet, old = uuid.uuid4(), uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(database.admin_url, autocommit=True) as conn, \
            conn.transaction():
        for sid, status, connected, last, ended in (
                (quiet, "active", "1 hour", "20 min", None),
                (old, "disconnected", "2 days 1 hour", "2 days", "2 days")):
            await conn.execute(
                "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, client_type, client_version,"
                " transport, status, connected_at, last_activity, disconnected_at, total_duration,"
                " disconnect_reason, session_key) VALUES (%s, 'acme', 'bob', 'quiet-client', '1.0',"
                " 'streamable-http', %s, now() - %s::interval, now() - %s::interval,"
                " now() - %s::interval, CASE WHEN %s::text IS NULL THEN NULL ELSE 3600 END,"
                " CASE WHEN %s::text IS NULL THEN NULL ELSE 'client_disconnect' END, %s)",
                (sid, status, connected, last, ended, ended, ended, f"test/{sid}"))
        for tool, status, message in (("=SUM(A1)", "error", "-2+3 failed"), ("echo", "success", None)):
            await conn.execute(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status,"
                " error_message, duration_ms, estimated_cost, client_type, \"timestamp\")"
                " VALUES (%s, %s, 'acme', 'bob', %s, %s, %s, 40, 0.25, 'quiet-client', now() - interval '2 days')",
                (uuid.uuid4(), old, tool, status, message))


async def open_dashboard(browser: Any, gateway: GatewayProcess, token: str, width: int = 1280,
                         height: int = 1000) -> Any:
    context = await browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors
    await page.goto(gateway.base_url + "/dashboard")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("body[data-loaded]", timeout=15000)
    return page


async def reloaded(page: Any) -> None:
    """Wait for the next completed refresh (after a control changed)."""
    count = int(await page.get_attribute("body", "data-loaded") or 0)
    await page.wait_for_function("n => Number(document.body.dataset.loaded) > n", arg=count, timeout=15000)


async def column(page: Any, table: str, attribute: str = "user") -> set[str]:
    return set(await page.eval_on_selector_all(f"#{table} > tbody > tr:not(.detail-row)",
                                               f"rows => rows.map(r => r.dataset.{attribute})"))


async def csv_of(page: Any, section: str, tmp_path: Path) -> list[list[str]]:
    async with page.expect_download() as info:
        await page.click(f"button[data-csv={section}]")
    download = await info.value
    target = tmp_path / f"{section}.csv"
    await download.save_as(str(target))
    return list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))


def api_json(gateway: GatewayProcess, token: str, path: str) -> Any:
    r = httpx.get(gateway.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


async def refused_soon(gateway: GatewayProcess, token: str, message: str) -> None:
    """Running gateways refuse a revoked token within seconds (their token cache is short)."""
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=5) as http:
        while (await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status_code != 401:
            assert time.monotonic() < deadline, message
            await asyncio.sleep(0.2)


async def in_viewport(page: Any, selector: str) -> bool:
    return bool(await page.eval_on_selector(selector, """node => {
        const r = node.getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.top < window.innerHeight && r.left >= 0 && r.left < window.innerWidth;
    }"""))


async def test_member_sees_only_their_own_rows(gateway: GatewayProcess, database: TestDatabase, browser: Any,
                                               tmp_path: Path) -> None:
    tokens = await seed(gateway)
    await add_history(database)
    page = await open_dashboard(browser, gateway, tokens["bob"])
    assert await page.is_hidden("#board-error"), await page.text_content("#board-error")
    assert await page.text_content("#whoami") == "bob · acme · member"
    assert await column(page, "active") == {"bob"}
    assert await column(page, "costs") == {"bob"}
    assert await column(page, "disconnected") == {"bob"}
    assert await column(page, "tools", "tool") == {"echo", "explode", "add", "=SUM(A1)"}
    assert await page.text_content("#reasons [data-reason=client_disconnect]") is not None
    # Live vs idle: the session that went quiet 20 minutes ago is idle, and the counts are the API's.
    api = api_json(gateway, tokens["bob"], "/api/mcp/clients")
    live = api_json(gateway, tokens["bob"], "/api/mcp/sessions?activity=live")["total"]
    idle = api_json(gateway, tokens["bob"], "/api/mcp/sessions?activity=idle")["total"]
    assert (api["live"], api["idle"]) == (live, idle) and idle == 1 and live >= 1
    assert await page.text_content("#live-count") == str(live)
    assert await page.text_content("#idle-count") == str(idle)
    states = await column(page, "active", "activity")
    assert states == {"live", "idle"}
    assert "30m" in await page.text_content("#live-explain")
    # Usage over time: bars on two different days; the stacked bars add up to the calls.
    days = set(await page.eval_on_selector_all("#usage-chart rect.seg", "rs => rs.map(r => r.dataset.day)"))
    assert len(days) == 2
    # Tools: p50/p95 shown; errors and denied broken down, formulas neutralised in the CSV.
    assert "ms" in await page.text_content("#tools tbody tr[data-tool=echo]")
    assert "-2+3 failed" in await page.text_content("#errors")
    rows = await csv_of(page, "errors", tmp_path)
    assert rows[0] == ["tool_name", "status", "message", "count", "last_at"]
    assert ["'=SUM(A1)", "error", "'-2+3 failed"] in [r[:3] for r in rows]
    tools_csv = await csv_of(page, "tools", tmp_path)
    assert {r[0] for r in tools_csv[1:]} == {"echo", "explode", "add", "'=SUM(A1)"}
    # Upstreams are for admins and auditors; tokens: bob's own, created here, shown once, revoked here.
    assert await page.is_hidden("#upstreams-card")
    await page.fill("#token-name", "my laptop")
    await page.click("#token-create")
    await page.wait_for_selector("#token-secret:not([hidden])")
    secret = await page.input_value("#token-value")
    assert secret and api_json(gateway, secret, "/api/me")["user_id"] == "bob"  # it works
    await page.wait_for_selector("#tokens tbody tr[data-state=active]")
    assert secret not in await page.text_content("#tokens")
    await page.click("#token-done")
    assert await page.is_hidden("#token-secret") and await page.input_value("#token-value") == ""
    assert await page.locator("#token-role").is_hidden()  # a member creates member tokens only
    text = await page.text_content("body")
    assert "alice" not in text and "carol" not in text and "globex" not in text
    assert await page.evaluate("() => document.cookie") == ""
    assert await page.evaluate("() => window.localStorage.length") == 0
    await page.screenshot(path=str(tmp_path / "dashboard-member.png"), full_page=True)
    await page.click("#tokens tbody tr[data-state=active] button[data-revoke]")
    await page.click("#tokens tbody tr[data-state=active] button.danger")  # second press confirms
    await page.wait_for_selector("#tokens tbody tr[data-state=revoked]")
    await refused_soon(gateway, secret, "the revoked token still works")
    assert not page.errors, page.errors


async def test_admin_sees_the_tenant_and_a_sessions_requests(gateway: GatewayProcess, database: TestDatabase,
                                                             browser: Any, tmp_path: Path) -> None:
    tokens = await seed(gateway)
    await add_history(database)
    bob_pat = create_pat(database, "acme", "bob")
    create_pat(database, "globex", "carol")
    page = await open_dashboard(browser, gateway, tokens["alice"], height=700)
    assert await page.is_hidden("#board-error"), await page.text_content("#board-error")
    assert await column(page, "active") == {"alice", "bob"}
    assert await column(page, "costs") == {"alice", "bob"}
    assert await column(page, "tools", "tool") == {"echo", "explode", "add", "=SUM(A1)"}
    assert await page.locator("#cost-chart svg rect").count() == 2
    assert set(await page.eval_on_selector_all("#usage-legend li", "ls => ls.map(l => l.dataset.key)")) == {
        "acme/alice", "acme/bob"}
    text = await page.text_content("body")
    assert "carol" not in text and "globex" not in text and "shout" not in text
    explode = page.locator("#tools tbody tr[data-tool=explode]")
    assert "100.0%" in await explode.text_content()
    # Stacked by tool instead.
    await page.select_option("#usage-stack", "tool")
    await reloaded(page)
    assert {"echo", "explode", "add"} <= set(await page.eval_on_selector_all(
        "#usage-legend li", "ls => ls.map(l => l.dataset.key)"))
    usage = await csv_of(page, "usage", tmp_path)
    assert usage[0] == ["day", "tool_name", "calls", "errors", "denied", "cost"]
    assert sum(int(r[2]) for r in usage[1:]) == api_json(gateway, tokens["alice"], "/api/reports/costs?since=6d")[
        "totals"]["calls"]

    # A session's requests open right under its row, in view (the table is below the fold at first).
    button = page.locator("#disconnected tbody tr[data-user=bob] button.link").first
    session_id = await page.locator("#disconnected tbody tr[data-user=bob]").first.get_attribute("data-session")
    await button.click()
    detail = f"#disconnected tr.detail-row[data-detail-for='{session_id}']"
    await page.wait_for_selector(f"{detail} table.requests tbody tr")
    assert await page.eval_on_selector(detail, "d => d.previousElementSibling.dataset.session") == session_id
    assert await in_viewport(page, f"{detail} table.requests")
    assert await button.get_attribute("aria-expanded") == "true"
    await page.screenshot(path=str(tmp_path / "dashboard-admin-session.png"))
    # It stays open across the periodic refresh.
    await page.click("#refresh")
    await reloaded(page)
    assert await page.locator(detail).count() == 1

    # User filter: only bob everywhere it applies.
    await page.select_option("#user-filter", "acme/bob")
    await reloaded(page)
    assert await column(page, "active") == {"bob"}
    assert await column(page, "costs") == {"bob"}
    assert await column(page, "disconnected") == {"bob"}
    bob_clients = api_json(gateway, tokens["alice"], "/api/mcp/clients?tenant_id=acme&user_id=bob")
    assert await page.text_content("#live-count") == str(bob_clients["live"])
    assert await page.text_content("#idle-count") == str(bob_clients["idle"])
    sessions_csv = await csv_of(page, "sessions", tmp_path)
    assert {r[1] for r in sessions_csv[1:]} == {"bob"} and len(sessions_csv) - 1 == len(bob_clients["clients"]) - sum(
        1 for c in bob_clients["clients"] if c["activity"] == "ended")

    # Tokens: the tenant's (bob's among them, never globex's), revocable by the admin.
    await page.wait_for_selector("#tokens tbody tr[data-owner='acme/bob']")
    assert await column(page, "tokens", "owner") == {"acme/bob"}
    assert await page.locator("#token-role").is_visible()
    await page.click("#tokens tbody tr[data-owner='acme/bob'] button[data-revoke]")
    await page.click("#tokens tbody tr[data-owner='acme/bob'] button.danger")
    await page.wait_for_selector("#tokens tbody tr[data-owner='acme/bob'][data-state=revoked]")
    # Upstreams: visible to admins (none configured in this gateway).
    assert await page.is_visible("#upstreams-card") and await page.is_visible("#upstreams-empty")
    await page.screenshot(path=str(tmp_path / "dashboard-admin.png"), full_page=True)
    assert (tmp_path / "dashboard-admin.png").stat().st_size > 10_000
    await refused_soon(gateway, bob_pat, "bob's revoked token still works")
    assert not page.errors, page.errors


async def test_auditor_sees_every_tenant_and_changes_nothing(gateway: GatewayProcess, database: TestDatabase,
                                                             browser: Any, tmp_path: Path) -> None:
    await seed(gateway)
    create_pat(database, "globex", "carol")
    page = await open_dashboard(browser, gateway, make_jwt("audrey", "acme", role="auditor"))
    assert await page.is_hidden("#board-error"), await page.text_content("#board-error")
    assert await column(page, "costs") == {"alice", "bob", "carol"}
    assert "globex/carol" in await page.text_content("#costs")
    assert await column(page, "tokens", "owner") == {"globex/carol"}
    assert await page.is_hidden("#token-form")
    assert await page.locator("#tokens button[data-revoke]").count() == 0
    assert await page.is_visible("#upstreams-card")
    await page.screenshot(path=str(tmp_path / "dashboard-auditor.png"), full_page=True)
    assert not page.errors, page.errors


async def test_admin_sees_upstream_health(database: TestDatabase, browser: Any, tmp_path: Path) -> None:
    """A stdio upstream that answers and a URL nobody listens on: up with its tools, down with its error."""
    config = write_up_and_down_config(tmp_path / "gateway.toml")
    with running_gateway(database, tmp_path / "gw", MCP_GATEWAY_CONFIG=str(config)) as gateway:
        admin = make_jwt("alice", "acme", role="admin")
        deadline = time.monotonic() + 30
        while {u["name"]: u["status"]
               for u in api_json(gateway, admin, "/api/upstreams")["upstreams"]} != UP_AND_DOWN:
            assert time.monotonic() < deadline, "upstream health never settled"
            await asyncio.sleep(0.2)
        page = await open_dashboard(browser, gateway, admin)
        up = page.locator("#upstreams tbody tr[data-upstream=local]")
        down = page.locator("#upstreams tbody tr[data-upstream=gone]")
        assert await up.get_attribute("data-status") == "up"
        assert "local_forecast" in await up.text_content()
        assert await down.get_attribute("data-status") == "down"
        assert "Unavailable" in await down.text_content()
        await page.locator("#upstreams-card").scroll_into_view_if_needed()
        await page.screenshot(path=str(tmp_path / "dashboard-upstreams.png"))
        member = await open_dashboard(browser, gateway, make_jwt("bob", "acme"))
        assert await member.is_hidden("#upstreams-card")
        assert not page.errors and not member.errors, (page.errors, member.errors)


async def test_narrow_screen_and_keyboard(gateway: GatewayProcess, browser: Any, tmp_path: Path) -> None:
    tokens = await seed(gateway)
    page = await open_dashboard(browser, gateway, tokens["alice"], width=375, height=800)
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    wide = await page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .slice(0, 12).map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)""")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 375px: {wide}"
    for selector in ("#period", "#user-filter", "#refresh", "#sessions-card", "#token-create"):
        box = await page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, (selector, box)
    await page.screenshot(path=str(tmp_path / "dashboard-narrow.png"), full_page=True)

    # Tab from the top reaches every main control, each with a visible focus ring.
    await page.focus("a.skip")  # the first focusable element of the page
    reached: list[str] = []
    for _ in range(80):
        await page.keyboard.press("Tab")
        info = await page.evaluate("""() => {
            const a = document.activeElement;
            const style = getComputedStyle(a);
            return {key: a.id || a.dataset.csv && `csv:${a.dataset.csv}` || a.dataset.focus || a.tagName,
                    outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0};
        }""")
        reached.append(info["key"])
        assert info["outline"], f"no visible focus on {info['key']}"
        if info["key"] == "token-create":
            break
    for control in ("period", "user-filter", "refresh", "signout", "live-window", "csv:sessions", "usage-stack",
                    "csv:usage", "token-name", "token-expiry", "token-create"):
        assert control in reached, (control, reached)
    assert any(k.startswith("session:") for k in reached), reached
    # Enter on a session opens its requests; Escape closes them and focus goes back.
    first = next(k for k in reached if k.startswith("session:"))
    await page.focus(f"[data-focus='{first}']")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("tr.detail-row table.requests, tr.detail-row .empty")
    assert await in_viewport(page, "tr.detail-row")
    await page.focus("tr.detail-row button")
    await page.keyboard.press("Escape")
    assert await page.locator("tr.detail-row").count() == 0
    assert await page.evaluate("() => document.activeElement.dataset.focus") == first
    await page.screenshot(path=str(tmp_path / "dashboard-narrow-detail.png"), full_page=True)
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
