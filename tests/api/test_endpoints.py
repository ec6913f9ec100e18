"""Every endpoint, as member / tenant admin / auditor / another tenant: exactly the allowed rows."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.conftest import PRINCIPALS, ApiEnv
from tests.api.seed import MARKER, SESSIONS, session_name, visible_sessions

WHO = list(PRINCIPALS)


def _visible(who: str) -> set[str]:
    user, tenant, role = PRINCIPALS[who]
    return visible_sessions(role, tenant, user)


@pytest.mark.parametrize("who", WHO)
def test_sessions_list_is_exactly_what_rls_allows(api_env: ApiEnv, who: str) -> None:
    r = api_env.get(who, "/api/mcp/sessions", limit=500)
    assert r.status_code == 200, r.text
    body = r.json()
    names = {session_name(s["session_id"]) for s in body["sessions"]}
    assert names == _visible(who)
    assert body["total"] == len(names)
    if who in ("member", "admin"):
        assert MARKER not in r.text
    by_name = {session_name(s["session_id"]): s for s in body["sessions"]}
    if "a-alice-active" in by_name:
        s = by_name["a-alice-active"]
        assert (s["request_count"], s["error_count"], s["prompt_tokens"], s["completion_tokens"]) == (2, 1, 13, 5)
        assert s["total_cost"] == "0.01350000"


def test_sessions_paging_and_filters(api_env: ApiEnv) -> None:
    first = api_env.get("auditor", "/api/mcp/sessions", limit=3, offset=0).json()
    second = api_env.get("auditor", "/api/mcp/sessions", limit=3, offset=3).json()
    rest = api_env.get("auditor", "/api/mcp/sessions", limit=3, offset=6).json()
    ids = [s["session_id"] for page in (first, second, rest) for s in page["sessions"]]
    assert len(ids) == len(set(ids)) == len(SESSIONS) and first["total"] == len(SESSIONS)
    active = api_env.get("admin", "/api/mcp/sessions", status="disconnected").json()
    assert {session_name(s["session_id"]) for s in active["sessions"]} == {"a-alice-2d", "a-alice-10d", "a-bob-1d"}
    bob = api_env.get("admin", "/api/mcp/sessions", user_id="bob").json()
    assert {session_name(s["session_id"]) for s in bob["sessions"]} == {"a-bob-1d", "a-bob-idle"}
    # A filter never widens: a member asking for another user gets nothing.
    assert api_env.get("member", "/api/mcp/sessions", user_id="bob").json()["sessions"] == []


@pytest.mark.parametrize("who", WHO)
def test_clients_are_open_and_recent_sessions_visible_to_the_caller(api_env: ApiEnv, who: str) -> None:
    r = api_env.get(who, "/api/mcp/clients", hours=60)
    assert r.status_code == 200, r.text
    names = {session_name(c["session_id"]) for c in r.json()["clients"]}
    recent = {"a-alice-active", "a-alice-2d", "a-bob-1d", "a-bob-idle", "b-alice-active"}  # ended < 60 h ago
    assert names == _visible(who) & recent
    for c in r.json()["clients"]:
        if c["status"] == "disconnected":
            assert c["disconnected_at"] and c["total_duration"] is not None and c["disconnect_reason"]


@pytest.mark.parametrize("who", WHO)
def test_session_detail_visible_or_404(api_env: ApiEnv, who: str) -> None:
    for s in SESSIONS:
        r = api_env.get(who, f"/api/mcp/sessions/{s.id}", limit=1)
        if s.name in _visible(who):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["session"]["session_id"] == str(s.id)
            assert body["requests_total"] == body["session"]["request_count"]
            assert len(body["requests"]) == min(1, body["requests_total"])
        else:
            assert r.status_code == 404, (s.name, r.text)
            assert r.json()["error"] == "not_found"


def test_session_detail_requests_are_paged_and_missing_or_malformed_is_404(api_env: ApiEnv) -> None:
    sid = next(s.id for s in SESSIONS if s.name == "a-alice-active")
    page1 = api_env.get("member", f"/api/mcp/sessions/{sid}", limit=1).json()
    page2 = api_env.get("member", f"/api/mcp/sessions/{sid}", limit=1, offset=1).json()
    assert page1["requests_total"] == 2
    assert {page1["requests"][0]["tool_name"], page2["requests"][0]["tool_name"]} == {"echo", "add"}
    for bad in (str(uuid.uuid4()), "not-a-uuid", "1' OR '1'='1", "%00"):
        r = api_env.get("auditor", f"/api/mcp/sessions/{bad}")
        assert r.status_code == 404, (bad, r.text)


@pytest.mark.parametrize("who,days,expected", [
    ("admin", 7, {"total_disconnected": 2, "disconnect_reasons": {"client_disconnect": 1, "timeout": 1},
                  "avg_duration_seconds": 200.0, "max_duration_seconds": 300.0, "min_duration_seconds": 100.0}),
    ("admin", 30, {"total_disconnected": 3, "disconnect_reasons": {"client_disconnect": 1, "timeout": 2},
                   "avg_duration_seconds": 1400 / 3, "max_duration_seconds": 1000.0, "min_duration_seconds": 100.0}),
    ("member", 7, {"total_disconnected": 1, "disconnect_reasons": {"client_disconnect": 1},
                   "avg_duration_seconds": 100.0, "max_duration_seconds": 100.0, "min_duration_seconds": 100.0}),
    ("auditor", 7, {"total_disconnected": 3,
                    "disconnect_reasons": {"client_disconnect": 1, "timeout": 1, "error:ValueError": 1},
                    "avg_duration_seconds": 150.0, "max_duration_seconds": 300.0, "min_duration_seconds": 50.0}),
    ("other_admin", 30, {"total_disconnected": 1, "disconnect_reasons": {"error:ValueError": 1},
                         "avg_duration_seconds": 50.0, "max_duration_seconds": 50.0, "min_duration_seconds": 50.0}),
    ("other_member", 1, {"total_disconnected": 0, "disconnect_reasons": {}, "avg_duration_seconds": None,
                         "max_duration_seconds": None, "min_duration_seconds": None}),
])
def test_disconnected_statistics(api_env: ApiEnv, who: str, days: int, expected: dict[str, Any]) -> None:
    r = api_env.get(who, "/api/mcp/sessions/disconnected", days=days, limit=1)
    assert r.status_code == 200, r.text
    body = r.json()
    stats = body["statistics"]
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert stats[key] == pytest.approx(value), key
        else:
            assert stats[key] == value, key
    assert len(body["sessions"]) == min(1, expected["total_disconnected"])  # limit pages, statistics don't
    assert body["period"]["days"] == days and body["period"]["start"] < body["period"]["end"]


def test_disconnected_sessions_newest_first(api_env: ApiEnv) -> None:
    body = api_env.get("admin", "/api/mcp/sessions/disconnected", days=30, limit=200).json()
    assert [session_name(s["session_id"]) for s in body["sessions"]] == ["a-bob-1d", "a-alice-2d", "a-alice-10d"]


@pytest.mark.parametrize("path,params,name", [
    ("/api/mcp/sessions/disconnected", {"days": 0}, "days"),
    ("/api/mcp/sessions/disconnected", {"days": 31}, "days"),
    ("/api/mcp/sessions/disconnected", {"days": "abc"}, "days"),
    ("/api/mcp/sessions/disconnected", {"limit": 0}, "limit"),
    ("/api/mcp/sessions/disconnected", {"limit": 201}, "limit"),
    ("/api/mcp/sessions/disconnected", {"limit": "99999999999999999999999"}, "limit"),
    ("/api/mcp/sessions", {"limit": -1}, "limit"),
    ("/api/mcp/sessions", {"offset": "x"}, "offset"),
    ("/api/mcp/sessions", {"status": "gone"}, "status"),
    ("/api/mcp/sessions", {"user_id": "a\x00b"}, "user_id"),
    ("/api/mcp/clients", {"hours": 0}, "hours"),
    ("/api/reports/costs", {"group_by": "planet"}, "group_by"),
    ("/api/reports/costs", {"format": "xml"}, "format"),
    ("/api/reports/costs", {"since": "last tuesday"}, "since"),
    ("/api/reports/costs", {"until": "2026-13-01"}, "until"),
    ("/api/reports/costs", {"since": "2026-11-10", "until": "2026-11-01"}, "since"),
    ("/api/reports/costs", {"since": "999999d"}, "since"),
])
def test_bad_parameters_are_422_naming_the_parameter(api_env: ApiEnv, path: str, params: dict[str, Any],
                                                     name: str) -> None:
    r = api_env.get("admin", path, **params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["parameter"] == name and name in body["detail"] and "\n" not in body["detail"]


def test_unauthenticated_is_401_with_challenge(api_env: ApiEnv) -> None:
    r = api_env.http.get("/api/mcp/sessions")
    assert r.status_code == 401 and "resource_metadata" in r.headers["www-authenticate"]
    r = api_env.http.get("/api/mcp/sessions", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]


def test_openapi_document_describes_every_route(api_env: ApiEnv) -> None:
    r = api_env.get("member", "/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/mcp/clients", "/api/mcp/sessions", "/api/mcp/sessions/disconnected",
                                 "/api/mcp/sessions/{session_id}", "/api/reports/costs", "/api/sql",
                                 "/api/reports/daily", "/api/reports/tools", "/api/tokens", "/api/tokens/{token_id}",
                                 "/api/upstreams", "/api/me", "/api/credentials", "/api/credentials/{upstream}",
                                 "/api/credentials/{upstream}/oauth"}
    assert set(doc["paths"]["/api/credentials/{upstream}"]) == {"put", "delete"}
    assert "204" in doc["paths"]["/api/credentials/{upstream}"]["put"]["responses"]
    assert "201" in doc["paths"]["/api/tokens"]["post"]["responses"]
    assert "token_hash" not in r.text
    days = next(p for p in doc["paths"]["/api/mcp/sessions/disconnected"]["get"]["parameters"] if p["name"] == "days")
    assert days["schema"]["minimum"] == 1 and days["schema"]["maximum"] == 30
    schemas = doc["components"]["schemas"]
    for name in ("DisconnectedResponse", "SessionSummary", "CostReportResponse", "SqlResponse", "ErrorBody"):
        assert name in schemas
    assert set(schemas["DisconnectStatistics"]["properties"]) == {
        "total_disconnected", "disconnect_reasons", "avg_duration_seconds", "max_duration_seconds",
        "min_duration_seconds"}
