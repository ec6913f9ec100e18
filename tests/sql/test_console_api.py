"""The admin SQL console over real HTTP (POST /api/sql) and as the MCP tool run_sql."""

from __future__ import annotations

import time

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from tests.api.conftest import ApiEnv
from tests.api.seed import A, B
from tests.gateway_proc import make_jwt
from tests.sql.corpus import CORPUS, Attack
from tests.sql.leaks import leaked


@pytest.fixture(scope="module", autouse=True)
def analyzed(api_env: ApiEnv) -> None:
    with api_env.admin() as conn:  # so pg_stats has most_common_vals to snoop on
        conn.execute("ANALYZE gateway.mcp_requests, gateway.mcp_sessions, gateway.users, gateway.tenants,"
                     " gateway.usage_daily")


@pytest.mark.parametrize("attack", CORPUS, ids=lambda a: a.name)
def test_hostile_corpus_as_tenant_admin(api_env: ApiEnv, attack: Attack) -> None:
    started = time.monotonic()
    r = api_env.post("admin", "/api/sql", {"sql": attack.sql})
    elapsed = time.monotonic() - started
    assert r.status_code in (200, 400), r.text
    assert leaked(r.text, attack.snoop) is None, f"{attack.name} leaked: {r.text[:500]}"
    body = r.json()
    if r.status_code == 400:
        assert body["error"] in ("refused", "query_failed") and body["detail"] and "\n" not in body["detail"]
    if attack.blocked or attack.refused:
        assert r.status_code == 400 and body["error"] == "refused", f"{attack.name} was not refused: {r.text[:300]}"
    assert elapsed < 6, f"{attack.name} took {elapsed:.1f}s (deadline 2s)"


def test_refusals_and_failures_say_why(api_env: ApiEnv) -> None:
    def answer(sql: str) -> tuple[int, str]:
        r = api_env.post("admin", "/api/sql", {"sql": sql})
        return r.status_code, r.json().get("detail", "")

    assert answer("SELECT 1; SELECT 2") == (400, "only a single SELECT is allowed")
    assert answer("SELECT set_config('role', 'x', true)") == (400, "function set_config is not allowed")
    assert answer("SELECT nope FROM gateway.users") == (400, 'column "nope" does not exist')
    assert answer("SELECT * FROM mcp_gateway_private.console_keys") == \
        (400, "relation mcp_gateway_private.console_keys is not allowed (schemas: gateway, pg_catalog, "
              "information_schema)")
    assert answer("SELECT x.pg_sleep FROM unnest(ARRAY[1.0]) x") == \
        (400, "function pg_sleep is not allowed (attribute notation .pg_sleep calls it)")
    assert answer("SELECT count(*) FROM gateway.tenants") == (200, "")
    assert answer("SELECT 1/0") == (400, "division by zero")


def test_row_cap_truncates_and_deadline_cancels(api_env: ApiEnv) -> None:
    r = api_env.post("auditor", "/api/sql", {"sql": "SELECT generate_series(1, 1000000000) AS n"})
    assert r.status_code == 200
    body = r.json()
    assert body["truncated"] is True and len(body["rows"]) == 10_000 and body["columns"] == ["n"]
    started = time.monotonic()
    r = api_env.post("auditor", "/api/sql", {"sql": "SELECT count(*) FROM generate_series(1, 100000) a,"
                                                    " generate_series(1, 100000) b"})
    assert r.status_code == 400 and "did not finish within 2 s" in r.json()["detail"]
    assert time.monotonic() - started < 5
    with api_env.admin() as conn:  # the server really stopped it (cancelled, not left running)
        deadline = time.monotonic() + 5
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mcp_gateway_console'"
                           " AND state = 'active'").fetchone()[0]:
            assert time.monotonic() < deadline, "console query still running after the deadline"
            time.sleep(0.05)


@pytest.mark.parametrize("who,tenants", [("admin", [A]), ("other_admin", [B]), ("auditor", [A, B])])
def test_scope_per_role(api_env: ApiEnv, who: str, tenants: list[str]) -> None:
    r = api_env.post(who, "/api/sql", {"sql": "SELECT DISTINCT tenant_id FROM gateway.mcp_sessions ORDER BY 1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"columns": ["tenant_id"], "rows": [[t] for t in tenants], "truncated": False}


@pytest.mark.parametrize("who", ["member", "other_member"])
def test_members_get_403(api_env: ApiEnv, who: str) -> None:
    r = api_env.post(who, "/api/sql", {"sql": "SELECT 1"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


@pytest.mark.parametrize("body", [None, "SELECT 1", {"query": "SELECT 1"}, {"sql": 5}, {"sql": ""}, [1],
                                  {"sql": "SELECT 1", "extra": 1}])
def test_bad_bodies_are_422(api_env: ApiEnv, body: object) -> None:
    r = api_env.post("admin", "/api/sql", body)
    assert r.status_code == 422, r.text


def test_hostile_bodies_are_4xx(api_env: ApiEnv) -> None:
    raw = api_env.http.post("/api/sql", content=b"{not json", headers={
        "Authorization": f"Bearer {api_env.token('admin')}", "Content-Type": "application/json"})
    assert raw.status_code == 422
    surrogate = api_env.http.post("/api/sql", content=b'{"sql": "SELECT \'\\ud800\'"}', headers={
        "Authorization": f"Bearer {api_env.token('admin')}", "Content-Type": "application/json"})
    assert surrogate.status_code in (400, 422)
    deep = api_env.http.post("/api/sql", content=b"[" * 200_000 + b"]" * 200_000, headers={
        "Authorization": f"Bearer {api_env.token('admin')}", "Content-Type": "application/json"})
    assert deep.status_code == 413  # over 256 KiB
    nested = api_env.http.post("/api/sql", content=b"[" * 50_000 + b"]" * 50_000, headers={
        "Authorization": f"Bearer {api_env.token('admin')}", "Content-Type": "application/json"})
    assert nested.status_code == 422


async def test_run_sql_tool_for_admins_unknown_for_members(api_env: ApiEnv) -> None:
    url = api_env.gateway.mcp_url
    async with Client(url, auth=make_jwt("carol", A, "admin")) as client:
        assert "run_sql" in {t.name for t in await client.list_tools()}
        result = await client.call_tool("run_sql", {"sql": "SELECT DISTINCT tenant_id FROM gateway.mcp_requests"})
        assert result.structured_content["rows"] == [[A]]
        with pytest.raises(ToolError, match="function set_config is not allowed"):
            await client.call_tool("run_sql", {"sql": "SELECT set_config('role', 'x', true)"})
        health = await client.call_tool("health_check", {})
        assert health.structured_content["console_side_channels"] == "closed"
    async with Client(url, auth=make_jwt("audrey", A, "auditor")) as client:
        result = await client.call_tool("run_sql", {"sql": "SELECT count(DISTINCT tenant_id) FROM gateway.users"})
        assert result.structured_content["rows"] == [[2]]
    async with Client(url, auth=make_jwt("alice", A, "member")) as client:
        assert "run_sql" not in {t.name for t in await client.list_tools()}
        with pytest.raises(ToolError, match="Unknown tool: 'run_sql'"):
            await client.call_tool("run_sql", {"sql": "SELECT 1"})
