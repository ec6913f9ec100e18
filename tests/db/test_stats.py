"""The reporting views and functions: their columns (the REST API builds on them),
their values, their ordering and their argument checks."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from decimal import Decimal

import psycopg
import pytest

from gateway.store.db import _SET_IDENTITY
from tests.db import seed as S

SESSION_COLUMNS = [
    "session_id", "tenant_id", "user_id", "user_email", "user_name", "client_type", "client_version",
    "protocol_version", "transport", "status", "connected_at", "last_activity", "disconnected_at",
    "total_duration", "disconnect_reason", "session_key", "mcp_session_id", "instance_id",
]
SESSION_STATS_COLUMNS = [
    *SESSION_COLUMNS, "request_count", "error_count", "denied_count", "prompt_tokens", "completion_tokens",
    "total_tokens", "total_cost", "avg_duration_ms", "max_duration_ms", "first_request_at", "last_request_at"]
USER_STATS_COLUMNS = [
    "tenant_id", "user_id", "email", "name", "role", "total_sessions", "active_sessions", "total_requests",
    "error_count", "denied_count", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost",
    "avg_duration_ms", "first_activity", "last_activity",
]
SUMMARY_COLUMNS = [
    "user_id", "total_sessions", "active_sessions", "total_requests", "error_count", "denied_count",
    "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "first_activity", "last_activity",
    "top_tool", "top_tool_calls",
]
DISCONNECTED_STATS_COLUMNS = [
    "total_disconnected", "disconnect_reasons", "avg_duration_seconds", "max_duration_seconds",
    "min_duration_seconds", "period_start", "period_end",
]


@contextmanager
def as_(conn: psycopg.Connection, role: str, tenant: str, user: str):
    with conn.transaction(force_rollback=True):
        conn.execute(_SET_IDENTITY, (role, tenant, user))
        yield conn


def admin_of(conn, tenant="acme"):
    return as_(conn, "mcp_gateway_tenant_admin", tenant, "carol")


def auditor_of(conn):
    return as_(conn, "mcp_gateway_auditor", "acme", "audrey")


def columns(conn: psycopg.Connection, sql: str) -> list[str]:
    cur = conn.execute(sql + " LIMIT 0")
    return [d.name for d in cur.description]


def test_columns(runtime: psycopg.Connection, seeded_admin: psycopg.Connection) -> None:
    table_columns = [r[0] for r in seeded_admin.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'gateway.mcp_sessions'::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum")]
    assert table_columns == SESSION_COLUMNS  # "all session columns": the view must follow the table
    with auditor_of(runtime) as c:
        assert columns(c, "SELECT * FROM gateway.mcp_session_stats") == SESSION_STATS_COLUMNS
        assert columns(c, "SELECT * FROM gateway.mcp_user_stats") == USER_STATS_COLUMNS
        for fn in ("get_disconnected_sessions()", "get_user_sessions('alice')", "get_active_mcp_clients()"):
            assert columns(c, f"SELECT * FROM gateway.{fn}") == SESSION_STATS_COLUMNS, fn
        assert columns(c, "SELECT * FROM gateway.get_user_activity_summary('alice')") == SUMMARY_COLUMNS
        assert columns(c, "SELECT * FROM gateway.get_disconnected_session_stats()") == DISCONNECTED_STATS_COLUMNS


REPORTING_FUNCTIONS = ("get_disconnected_sessions", "get_disconnected_session_stats", "get_user_sessions",
                       "get_user_activity_summary", "get_active_mcp_clients",
                       "current_tenant_id", "current_user_id", "identity_is_set")


def test_reporting_functions_are_stable_invokers(seeded_admin: psycopg.Connection) -> None:
    rows = seeded_admin.execute(
        "SELECT proname, provolatile, prosecdef FROM pg_proc WHERE pronamespace = 'gateway'::regnamespace"
        " AND proname = ANY (%s) ORDER BY 1", (list(REPORTING_FUNCTIONS),)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(REPORTING_FUNCTIONS)
    assert all(v == "s" and not definer for _, v, definer in rows), rows


def _session_expect(data: S.Seed, s: S.Session) -> tuple:
    reqs = [r for r in data.requests if r.session == s.id]
    return (len(reqs), sum(r.status == "error" for r in reqs), sum(r.status == "denied" for r in reqs),
            sum(r.prompt_tokens for r in reqs), sum(r.completion_tokens for r in reqs),
            sum(r.prompt_tokens + r.completion_tokens for r in reqs), sum(r.cost for r in reqs),
            pytest.approx(sum(r.duration_ms for r in reqs) / len(reqs)), max(r.duration_ms for r in reqs),
            min(data.now - r.ago for r in reqs), max(data.now - r.ago for r in reqs))


def test_session_stats_values(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    with auditor_of(runtime) as c:
        got = {r[0]: r[1:] for r in c.execute(
            "SELECT session_id, request_count, error_count, denied_count, prompt_tokens, completion_tokens,"
            " total_tokens, total_cost, avg_duration_ms, max_duration_ms, first_request_at, last_request_at"
            " FROM gateway.mcp_session_stats")}
    assert got.keys() == {s.id for s in seed_data.sessions}
    for s in seed_data.sessions:
        assert got[s.id] == _session_expect(seed_data, s), s


def test_session_without_requests_has_zeros(runtime: psycopg.Connection, seeded_admin: psycopg.Connection) -> None:
    with seeded_admin.transaction(force_rollback=True):
        seeded_admin.execute("INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, session_key)"
                             " VALUES ('00000000-0000-0000-0000-00000000000e', 'acme', 'bob', 'empty')")
        row = seeded_admin.execute(
            "SELECT request_count, error_count, total_tokens, total_cost, avg_duration_ms, first_request_at"
            " FROM gateway.mcp_session_stats WHERE session_id = '00000000-0000-0000-0000-00000000000e'").fetchone()
    assert row == (0, 0, 0, Decimal(0), None, None)


def test_user_stats_values(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    with admin_of(runtime, "globex") as c:
        got = {r[0]: r[1:] for r in c.execute(
            "SELECT user_id, email, role, total_sessions, active_sessions, total_requests, error_count,"
            " denied_count, prompt_tokens, completion_tokens, total_tokens, total_cost, avg_duration_ms,"
            " first_activity, last_activity FROM gateway.mcp_user_stats")}
    assert got.keys() == set(S.USERS)
    for user, role in S.USERS.items():
        sessions = [s for s in seed_data.sessions if s.tenant == "globex" and s.user == user]
        reqs = [r for r in seed_data.requests if r.tenant == "globex" and r.user == user]
        assert got[user] == (
            f"{user}@globex.example", role, len(sessions), sum(s.status != "disconnected" for s in sessions),
            len(reqs), sum(r.status == "error" for r in reqs), sum(r.status == "denied" for r in reqs),
            sum(r.prompt_tokens for r in reqs), sum(r.completion_tokens for r in reqs),
            sum(r.prompt_tokens + r.completion_tokens for r in reqs), sum(r.cost for r in reqs),
            pytest.approx(sum(r.duration_ms for r in reqs) / len(reqs)),
            min(seed_data.now - s.connected_ago for s in sessions),
            max(seed_data.now - (s.disconnected_ago or S.timedelta(minutes=1)) for s in sessions),
        ), user


def test_disconnected_sessions_newest_first_and_limited(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    ended = {s.id: s.disconnected_ago for s in seed_data.sessions if s.disconnected_ago is not None}
    expected = sorted((s for s in seed_data.sessions if s.status == "disconnected" and ended[s.id].days < 30),
                      key=lambda s: ended[s.id])
    with auditor_of(runtime) as c:
        got = [r[0] for r in c.execute("SELECT session_id FROM gateway.get_disconnected_sessions(30, 200)")]
        first = [r[0] for r in c.execute("SELECT session_id FROM gateway.get_disconnected_sessions(30, 1)")]
        row = c.execute("SELECT request_count, disconnect_reason, total_duration"
                        " FROM gateway.get_disconnected_sessions(7, 1)").fetchone()
    assert [c.disconnected_ago for c in expected] == sorted(ended[c.id] for c in expected)
    assert [s.disconnected_ago for s in expected][:2] == [S.timedelta(days=1)] * 2
    assert set(got) == {s.id for s in expected} and len(got) == len(expected)
    assert [next(s for s in seed_data.sessions if s.id == i).disconnected_ago for i in got] == \
        [s.disconnected_ago for s in expected]
    assert len(first) == 1 and first[0] in {s.id for s in expected if s.disconnected_ago.days == 1}
    newest = next(s for s in seed_data.sessions if s.id == first[0])
    assert row == (sum(1 for r in seed_data.requests if r.session == newest.id), "client_disconnect",
                   pytest.approx(2 * 3600))


def test_disconnected_session_stats(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    ended = {s.id: s.disconnected_ago for s in seed_data.sessions if s.disconnected_ago is not None}
    within = [s for s in seed_data.sessions if s.status == "disconnected" and ended[s.id].days < 7
              and s.tenant == "acme"]
    durations = [(s.connected_ago - ended[s.id]).total_seconds() for s in within]
    with admin_of(runtime) as c:
        row = c.execute("SELECT total_disconnected, disconnect_reasons, avg_duration_seconds,"
                        " max_duration_seconds, min_duration_seconds, period_end - period_start"
                        " FROM gateway.get_disconnected_session_stats(7)").fetchone()
    assert row == (len(within), dict(Counter(s.reason for s in within)),
                   pytest.approx(sum(durations) / len(durations)), max(durations), min(durations),
                   S.timedelta(days=7))


def test_user_sessions_and_summary(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    mine = sorted((s for s in seed_data.sessions if s.tenant == "globex" and s.user == "alice"),
                  key=lambda s: s.connected_ago)
    reqs = [r for r in seed_data.requests if r.tenant == "globex" and r.user == "alice"]
    tools = Counter(r.tool for r in reqs if r.tool)
    top = sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    with auditor_of(runtime) as c:
        ids = [r[0] for r in c.execute("SELECT session_id FROM gateway.get_user_sessions('alice', 'globex')")]
        summary = c.execute("SELECT * FROM gateway.get_user_activity_summary('alice', 'globex')").fetchall()
        both = c.execute("SELECT total_sessions FROM gateway.get_user_activity_summary('alice')").fetchall()
        nobody = c.execute("SELECT * FROM gateway.get_user_activity_summary('nobody')").fetchall()
    assert ids == [s.id for s in mine]  # newest first
    assert summary == [(
        "alice", len(mine), sum(s.status != "disconnected" for s in mine), len(reqs),
        sum(r.status == "error" for r in reqs), sum(r.status == "denied" for r in reqs),
        sum(r.prompt_tokens for r in reqs), sum(r.completion_tokens for r in reqs),
        sum(r.prompt_tokens + r.completion_tokens for r in reqs), sum(r.cost for r in reqs),
        min(seed_data.now - s.connected_ago for s in mine),
        max(seed_data.now - (s.disconnected_ago or S.timedelta(minutes=1)) for s in mine),
        top[0], top[1])]
    assert both == [(2 * len(mine),)]  # the auditor sees alice in both tenants
    assert nobody == [("nobody", 0, 0, 0, 0, 0, 0, 0, 0, Decimal(0), None, None, None, None)]


def test_active_clients_most_recent_first(runtime: psycopg.Connection, seed_data: S.Seed) -> None:
    with admin_of(runtime) as c:
        rows = c.execute("SELECT session_id, status, client_type, client_version, user_id, connected_at,"
                         " last_activity, request_count FROM gateway.get_active_mcp_clients()").fetchall()
    open_ = {s.id for s in seed_data.sessions if s.tenant == "acme" and s.status != "disconnected"}
    assert {r[0] for r in rows} == open_
    assert all(r[1] in ("active", "idle") and r[2] == "claude-code" and r[3] == "1.2.3" for r in rows)
    assert [r[6] for r in rows] == sorted((r[6] for r in rows), reverse=True)


BAD_ARGUMENTS = [
    ("get_disconnected_sessions(0, 50)", "days must be between 1 and 30 (got 0)"),
    ("get_disconnected_sessions(31, 50)", "days must be between 1 and 30 (got 31)"),
    ("get_disconnected_sessions(-5)", "days must be between 1 and 30 (got -5)"),
    ("get_disconnected_sessions(NULL, 50)", "days must be between 1 and 30 (got null)"),
    ("get_disconnected_sessions(7, 0)", "limit must be between 1 and 200 (got 0)"),
    ("get_disconnected_sessions(7, 201)", "limit must be between 1 and 200 (got 201)"),
    ("get_disconnected_sessions(7, NULL)", "limit must be between 1 and 200 (got null)"),
    ("get_disconnected_session_stats(31)", "days must be between 1 and 30 (got 31)"),
    ("get_disconnected_session_stats(0)", "days must be between 1 and 30 (got 0)"),
]


@pytest.mark.parametrize(("call", "message"), BAD_ARGUMENTS, ids=[c for c, _ in BAD_ARGUMENTS])
def test_out_of_range_arguments_are_refused(runtime: psycopg.Connection, call: str, message: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:  # SQLSTATE 22023
        with as_(runtime, "mcp_gateway_member", "acme", "alice") as c:
            c.execute(f"SELECT * FROM gateway.{call}")
    assert info.value.sqlstate == "22023"
    assert info.value.diag.message_primary == message


@pytest.mark.parametrize("call", ["get_disconnected_sessions(1, 1)", "get_disconnected_sessions(30, 200)",
                                  "get_disconnected_session_stats(1)", "get_disconnected_session_stats(30)"])
def test_boundary_arguments_are_accepted(runtime: psycopg.Connection, call: str) -> None:
    with as_(runtime, "mcp_gateway_member", "acme", "alice") as c:
        c.execute(f"SELECT * FROM gateway.{call}").fetchall()
