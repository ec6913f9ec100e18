"""Live vs idle, usage per day, per-tool latency and errors: exactly the rows each caller may see, and
the same totals as the cost report."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import PRINCIPALS, ApiEnv
from tests.api.seed import MARKER, SESSIONS, session_name

WHO = list(PRINCIPALS)


@pytest.fixture(scope="module", autouse=True)
def bob_went_quiet(api_env: ApiEnv) -> None:
    """bob's open session had its last call 20 minutes ago and is still marked active: a client that never
    sent DELETE (or a sessionless one). Open for another 10 minutes, but nobody is there."""
    bob = next(s.id for s in SESSIONS if s.name == "a-bob-idle")
    with psycopg.connect(api_env.database.admin_url, autocommit=True) as conn:
        conn.execute("UPDATE gateway.mcp_sessions SET status = 'active', last_activity = now() - interval '20 min'"
                     " WHERE session_id = %s", (bob,))


def test_open_but_quiet_is_idle_not_live(api_env: ApiEnv) -> None:
    body = api_env.get("admin", "/api/mcp/clients", hours=60).json()
    activity = {session_name(c["session_id"]): c["activity"] for c in body["clients"]}
    assert activity["a-alice-active"] == "live" and activity["a-bob-idle"] == "idle"
    assert activity["a-bob-1d"] == "ended"
    assert (body["live"], body["idle"], body["live_window_seconds"]) == (1, 1, 300)
    assert body["idle_timeout_seconds"] == 1800
    bob = next(c for c in body["clients"] if session_name(c["session_id"]) == "a-bob-idle")
    assert 1150 < bob["idle_seconds"] < 1400  # whatever `status` the sweep has set
    # A wider live window counts bob as live again.
    wide = api_env.get("admin", "/api/mcp/clients", live_window=1800).json()
    assert (wide["live"], wide["idle"]) == (2, 0)


@pytest.mark.parametrize("who", WHO)
def test_live_and_idle_counts_match_the_sessions_endpoint(api_env: ApiEnv, who: str) -> None:
    clients = api_env.get(who, "/api/mcp/clients").json()
    for activity in ("live", "idle"):
        listed = api_env.get(who, "/api/mcp/sessions", activity=activity, limit=500).json()
        assert listed["total"] == clients[activity], (who, activity)
        assert {s["activity"] for s in listed["sessions"]} <= {activity}
    ended = api_env.get(who, "/api/mcp/sessions", activity="ended", limit=500).json()
    assert all(s["status"] == "disconnected" for s in ended["sessions"])


def test_user_filters_narrow_clients_and_disconnected(api_env: ApiEnv) -> None:
    bob = api_env.get("admin", "/api/mcp/clients", user_id="bob", hours=60).json()
    assert {session_name(c["session_id"]) for c in bob["clients"]} == {"a-bob-1d", "a-bob-idle"}
    assert (bob["live"], bob["idle"]) == (0, 1)
    gone = api_env.get("admin", "/api/mcp/sessions/disconnected", user_id="alice", days=30).json()
    assert {session_name(s["session_id"]) for s in gone["sessions"]} == {"a-alice-2d", "a-alice-10d"}
    assert gone["statistics"]["total_disconnected"] == 2
    assert gone["statistics"]["disconnect_reasons"] == {"client_disconnect": 1, "timeout": 1}
    # Narrowing to another tenant gives nothing to a tenant admin, and never the other tenant's rows.
    other = api_env.get("admin", "/api/mcp/sessions/disconnected", tenant_id="globex", days=30)
    assert other.status_code == 200 and other.json()["sessions"] == [] and MARKER not in other.text
    assert api_env.get("member", "/api/mcp/clients", user_id="bob").json()["clients"] == []


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("stack_by", ["user", "tool"])
def test_daily_series_add_up_to_the_cost_report(api_env: ApiEnv, who: str, stack_by: str) -> None:
    r = api_env.get(who, "/api/reports/daily", since="45d", stack_by=stack_by)
    assert r.status_code == 200, r.text
    body = r.json()
    costs = api_env.get(who, "/api/reports/costs", since="45d", group_by="user").json()
    assert len(body["days"]) == 46 and body["days"][-1] == costs["until"]
    assert body["totals"]["all_calls"] == costs["totals"]["calls"]
    assert body["totals"]["all_cost"] == costs["totals"]["cost"]
    for i in range(len(body["days"])):
        assert sum(s["calls"][i] for s in body["series"]) == body["totals"]["calls"][i]
    if who in ("member", "admin"):
        assert MARKER not in r.text
    if stack_by == "user":
        keys = {s["key"] for s in body["series"]}
        expected = {"member": {"acme/alice"}, "admin": {"acme/alice", "acme/bob"},
                    "other_member": {"globex/alice"}, "other_admin": {"globex/alice", "globex/zz-secret-zed"},
                    "auditor": {"acme/alice", "acme/bob", "globex/alice", "globex/zz-secret-zed"}}[who]
        assert keys == expected


def test_daily_series_user_filter_and_bad_ranges(api_env: ApiEnv) -> None:
    bob = api_env.get("admin", "/api/reports/daily", since="12d", user_id="bob", stack_by="tool").json()
    assert {s["key"] for s in bob["series"]} == {"echo", ""}
    for params, name in (({"since": "400d"}, "since"), ({"since": "today", "until": "3d"}, "since"),
                         ({"stack_by": "client"}, "stack_by"), ({"since": "soon"}, "since")):
        r = api_env.get("admin", "/api/reports/daily", **params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["parameter"] == name and "\n" not in r.json()["detail"]


@given(since=st.text(max_size=20), until=st.text(max_size=20))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_range_text_is_answered_or_refused_never_a_5xx(api_env: ApiEnv, since: str, until: str) -> None:
    for path in ("/api/reports/daily", "/api/reports/tools"):
        r = api_env.get("member", path, since=since, until=until)
        assert r.status_code in (200, 422), (since, until, r.status_code, r.text)


def test_tool_latency_and_error_breakdown(api_env: ApiEnv) -> None:
    body = api_env.get("admin", "/api/reports/tools", since="12d").json()
    tools = {t["tool_name"]: t for t in body["tools"]}
    assert set(tools) == {"echo", "add", "search", ""}
    echo = tools["echo"]
    assert (echo["calls"], echo["success"], echo["errors"], echo["denied"]) == (3, 3, 0, 0)
    assert echo["p50_ms"] == echo["p95_ms"] == echo["max_ms"] == 12.5
    assert tools["search"]["denied"] == 1 and tools["search"]["p50_ms"] is None  # denied calls never ran
    errors = {(e["tool_name"], e["status"], e["message"]): e["count"] for e in body["errors"]}
    assert errors == {("add", "error", "boom"): 1, ("search", "denied", ""): 1}
    member = api_env.get("member", "/api/reports/tools", since="12d").json()
    assert {t["tool_name"] for t in member["tools"]} == {"echo", "add", "search"}  # alice's own
    assert MARKER not in api_env.get("admin", "/api/reports/tools", since="45d").text
    auditor = api_env.get("auditor", "/api/reports/tools", since="45d").json()
    assert any(t["tool_name"] == f"{MARKER}-tool" for t in auditor["tools"])


def test_upstreams_are_for_admins_and_auditors(api_env: ApiEnv) -> None:
    assert api_env.get("member", "/api/upstreams").status_code == 403
    for who in ("admin", "auditor"):
        r = api_env.get(who, "/api/upstreams")
        assert r.status_code == 200 and r.json() == {"upstreams": []}  # none configured here


@pytest.mark.parametrize("who", WHO)
def test_me_is_the_verified_caller(api_env: ApiEnv, who: str) -> None:
    user, tenant, role = PRINCIPALS[who]
    body = api_env.get(who, "/api/me").json()
    assert (body["user_id"], body["tenant_id"], body["role"]) == (user, tenant, role)
