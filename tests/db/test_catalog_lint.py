"""Catalog lint: fails the build when a security invariant of schema gateway breaks.

`test_lint_check[...]` runs each check on a freshly migrated database. The
`test_lint_catches[...]` cases prove each check is not vacuous: they introduce the
violation in a transaction (rolled back), and the lint must name it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.db import lint


@pytest.fixture(scope="module")
def lint_db(db_factory):
    database = db_factory.create()
    yield database
    db_factory.drop(database)


@pytest.fixture
def conn(lint_db) -> Iterator[psycopg.Connection]:
    with psycopg.connect(lint_db.admin_url, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("name", list(lint.CHECKS))
def test_lint_check(conn: psycopg.Connection, name: str) -> None:
    assert lint.CHECKS[name](conn) == []


AS_OWNER = "SET LOCAL ROLE mcp_gateway_owner; "
VIOLATIONS = {
    "table-without-force": ("ALTER TABLE gateway.instances NO FORCE ROW LEVEL SECURITY",
                            "gateway.instances: row level security not FORCEd"),
    "table-without-enable": ("ALTER TABLE gateway.mcp_requests DISABLE ROW LEVEL SECURITY",
                             "gateway.mcp_requests: row level security not ENABLEd"),
    "new-tenant-table-bare": (AS_OWNER + "CREATE TABLE gateway.lint_bad (tenant_id text, user_id text)",
                              "gateway.lint_bad: has no policies"),
    "new-tenant-table-unfenced": (AS_OWNER + "CREATE TABLE gateway.lint_bad (tenant_id text, user_id text)",
                                  "gateway.lint_bad: no RESTRICTIVE tenant fence"),
    "new-tenant-table-unindexed": (AS_OWNER + "CREATE TABLE gateway.lint_bad (tenant_id text, user_id text)",
                                   "gateway.lint_bad: no index leading with tenant_id"),
    "index-not-leading-with-tenant": (
        AS_OWNER + "CREATE INDEX lint_i ON gateway.mcp_requests (tool_name, tenant_id)",
        "gateway.mcp_requests: index gateway.lint_i does not lead with tenant_id"),
    "unique-not-leading-with-tenant": (
        AS_OWNER + "ALTER TABLE gateway.mcp_sessions ADD CONSTRAINT lint_u UNIQUE (session_id)",
        "gateway.mcp_sessions: index gateway.lint_u does not lead with tenant_id"),
    "expression-index": (
        AS_OWNER + "CREATE INDEX lint_i ON gateway.users (lower(tenant_id))",
        "gateway.users: index gateway.lint_i does not lead with tenant_id"),
    "fence-dropped": ("DROP POLICY rls_tenant_fence ON gateway.mcp_requests",
                      "gateway.mcp_requests: no RESTRICTIVE tenant fence"),
    "policy-unwrapped-helper": (
        "CREATE POLICY lint_p ON gateway.mcp_requests FOR SELECT TO mcp_gateway_member"
        " USING (user_id = gateway.current_user_id())", "gateway.current_user_id() not wrapped"),
    "policy-current-setting": (
        "CREATE POLICY lint_p ON gateway.mcp_requests FOR SELECT TO mcp_gateway_member"
        " USING (user_id = current_setting('mcp_gateway.user_id'))", "reads current_setting directly"),
    "policy-two-roles-permissive": (
        "CREATE POLICY lint_p ON gateway.mcp_requests FOR SELECT TO mcp_gateway_member, mcp_gateway_auditor"
        " USING (true)", "must name exactly one role"),
    "policy-for-public": ("CREATE POLICY lint_p ON gateway.mcp_requests FOR SELECT USING (false)",
                          "applies to PUBLIC"),
    "policy-write-for-request-role": (
        "CREATE POLICY lint_p ON gateway.mcp_requests FOR INSERT TO mcp_gateway_tenant_admin WITH CHECK (true)",
        "a write policy for a request role"),
    "view-not-invoker": (AS_OWNER + "CREATE VIEW gateway.lint_v AS SELECT 1 AS x",
                         "gateway.lint_v: view without security_invoker"),
    "view-invoker-reset": ("ALTER VIEW gateway.mcp_user_stats RESET (security_invoker)",
                           "gateway.mcp_user_stats: view without security_invoker"),
    "matview": (AS_OWNER + "CREATE MATERIALIZED VIEW gateway.lint_mv AS SELECT 1 AS x",
                "gateway.lint_mv: materialized view"),
    "role-bypassrls": ("ALTER ROLE mcp_gateway_ingest BYPASSRLS", "role mcp_gateway_ingest has BYPASSRLS"),
    "role-superuser": ("ALTER ROLE mcp_gateway_member SUPERUSER", "role mcp_gateway_member has SUPERUSER"),
    "role-createrole": ("ALTER ROLE mcp_gateway_app CREATEROLE", "role mcp_gateway_app has CREATEROLE"),
    "role-createdb": ("ALTER ROLE mcp_gateway_console CREATEDB", "role mcp_gateway_console has CREATEDB"),
    "login-inherits": ("ALTER ROLE mcp_gateway_app INHERIT", "mcp_gateway_app is a login with INHERIT"),
    "member-of-owner": ("GRANT mcp_gateway_owner TO mcp_gateway_ingest",
                        "role mcp_gateway_ingest is a member of mcp_gateway_owner"),
    "request-role-delete": ("GRANT DELETE ON gateway.mcp_requests TO mcp_gateway_member",
                            "gateway.mcp_requests: DELETE granted to mcp_gateway_member"),
    "request-role-truncate": ("GRANT TRUNCATE ON gateway.usage_daily TO mcp_gateway_auditor",
                              "gateway.usage_daily: TRUNCATE granted to mcp_gateway_auditor"),
    "request-role-insert": ("GRANT INSERT ON gateway.mcp_sessions TO mcp_gateway_tenant_admin",
                            "gateway.mcp_sessions: INSERT granted to mcp_gateway_tenant_admin"),
    "request-role-column-update": ("GRANT UPDATE (name) ON gateway.users TO mcp_gateway_member",
                                   "gateway.users.name: UPDATE granted to mcp_gateway_member"),
    "system-role-delete": ("GRANT DELETE ON gateway.instances TO mcp_gateway_ingest",
                           "gateway.instances: DELETE granted to mcp_gateway_ingest"),
    "oauth-delete-live-grants": ("GRANT DELETE ON gateway.oauth_grants TO mcp_gateway_oauth",
                                 "gateway.oauth_grants: DELETE granted to mcp_gateway_oauth"),
    "oauth-delete-unbounded": ("DROP POLICY oauth_as_delete ON gateway.oauth_pending;"
                               " CREATE POLICY oauth_as_delete ON gateway.oauth_pending FOR DELETE"
                               " TO mcp_gateway_oauth USING (true)",
                               "lets mcp_gateway_oauth delete rows that have not expired"),
    "oauth-secret-to-member": ("GRANT SELECT (secret_hash) ON gateway.oauth_clients TO mcp_gateway_member",
                               "gateway.oauth_clients.secret_hash: SELECT granted to mcp_gateway_member"),
    "console-write": ("GRANT UPDATE ON gateway.mcp_sessions TO mcp_gateway_console",
                      "gateway.mcp_sessions: UPDATE granted to mcp_gateway_console"),
    "public-select": ("GRANT SELECT ON gateway.mcp_requests TO PUBLIC",
                      "gateway.mcp_requests: SELECT granted to PUBLIC"),
    "write-via-membership": ("CREATE ROLE lint_writer; GRANT INSERT ON gateway.mcp_requests TO lint_writer;"
                             " GRANT lint_writer TO mcp_gateway_auditor",
                             "gateway.mcp_requests: mcp_gateway_auditor can write to it"),
    "definer-function": (AS_OWNER + "CREATE FUNCTION gateway.lint_f() RETURNS int LANGUAGE sql SECURITY DEFINER"
                         " AS 'SELECT 1'; REVOKE ALL ON FUNCTION gateway.lint_f() FROM PUBLIC",
                         "gateway.lint_f(): SECURITY DEFINER and not on the allow-list"),
    "definer-without-search-path": (
        AS_OWNER + "CREATE FUNCTION gateway.lint_f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
        "gateway.lint_f(): SECURITY DEFINER without SET search_path"),
    "function-public-execute": ("GRANT EXECUTE ON FUNCTION gateway.get_active_mcp_clients() TO PUBLIC",
                                "gateway.get_active_mcp_clients(): PUBLIC may execute it"),
    "table-owned-by-superuser": ("CREATE TABLE gateway.lint_su (x int)",
                                 "relation gateway.lint_su is owned by"),
    "view-owned-by-superuser": ("ALTER VIEW gateway.mcp_session_stats OWNER TO CURRENT_USER",
                                "relation gateway.mcp_session_stats is owned by"),
    "money-as-float": (AS_OWNER + "ALTER TABLE gateway.usage_daily ADD COLUMN extra_cost double precision",
                       "gateway.usage_daily.extra_cost: money as double precision"),
}


class _Rollback(Exception):
    pass


def problems_with(conn: psycopg.Connection, sql: str) -> list[str]:
    found: list[str] = []
    try:
        with conn.transaction():
            conn.execute(sql.encode())
            conn.execute("RESET ROLE")
            found = lint.all_problems(conn)
            raise _Rollback
    except _Rollback:
        pass
    return found


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_lint_catches(conn: psycopg.Connection, case: str) -> None:
    sql, expected = VIOLATIONS[case]
    found = problems_with(conn, sql)
    assert any(expected in p for p in found), f"lint missed {case!r}; it said: {found}"
    assert lint.all_problems(conn) == []  # rolled back


def test_an_index_the_console_cannot_read_may_lead_with_anything(conn: psycopg.Connection) -> None:
    """api_tokens (token_hash): the console has no privilege on token_hash, so no predicate reaches it."""
    assert lint.check_tenant_indexes_lead_with_tenant_id(conn) == []
    found = problems_with(conn, "GRANT SELECT (token_hash) ON gateway.api_tokens TO mcp_gateway_console")
    assert any("api_tokens_token_hash_key does not lead with tenant_id" in p for p in found), found


def test_console_select_grants_are_allowed(conn: psycopg.Connection) -> None:
    """The console (admin SQL) will get SELECT-only grants in a later issue: not a lint failure."""
    found = problems_with(conn, "GRANT USAGE ON SCHEMA gateway TO mcp_gateway_console;"
                                " GRANT SELECT ON gateway.mcp_requests, gateway.mcp_user_stats TO mcp_gateway_console")
    assert found == []
