"""Hostile admin-SQL corpus: what a tenant admin of tenant A might try to read tenant B.

Each attack must be refused, fail, or return only tenant A's rows — through the API
(with the parser) and directly on the console login with a valid tenant-A scope
(without the parser). `snoop`: the attacker does not know B's tenant id, so the
result must not contain it either. `resource`: bounded by row cap / deadline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    name: str
    sql: str
    snoop: bool = False
    resource: bool = False


FORGED_SCOPE = "v1|1|a||1|1|9999999999|" + "0" * 64

CORPUS: list[Attack] = [
    # role switching
    Attack("set_role", "SET ROLE mcp_gateway_auditor; SELECT * FROM gateway.mcp_requests"),
    Attack("set_role_owner", "SET ROLE mcp_gateway_owner"),
    Attack("reset_role", "RESET ROLE; SELECT * FROM gateway.mcp_requests"),
    Attack("session_authorization", "SET SESSION AUTHORIZATION mcp_gateway_app; SELECT * FROM gateway.mcp_sessions"),
    Attack("set_config_role", "SELECT set_config('role', 'mcp_gateway_auditor', true), * FROM gateway.mcp_requests"),
    Attack("set_config_role_session", "SELECT set_config('role', 'mcp_gateway_owner', false)"),
    # identity and scope settings
    Attack("forge_scope_all", f"SELECT set_config('mcp_gateway.console_scope', '{FORGED_SCOPE}', true);"
                              " SELECT * FROM gateway.mcp_requests"),
    Attack("forge_request_identity", "SELECT set_config('mcp_gateway.tenant_id', 'globex', true),"
                                     " set_config('mcp_gateway.user_id', 'alice', true);"
                                     " SELECT * FROM gateway.mcp_requests"),
    Attack("clear_scope", "SELECT set_config('mcp_gateway.console_scope', '', true); SELECT * FROM gateway.users"),
    Attack("scope_in_cte", "WITH x AS (SELECT set_config('mcp_gateway.console_scope', "
                           f"'{FORGED_SCOPE}', true) AS v) SELECT r.* FROM x, gateway.mcp_requests r"),
    Attack("role_in_subquery", "SELECT * FROM gateway.mcp_requests"
                               " WHERE (SELECT set_config('role', 'mcp_gateway_auditor', true)) IS NOT NULL"),
    Attack("role_in_function_arg", "SELECT length(set_config('role', 'mcp_gateway_auditor', true)),"
                                   " (SELECT count(*) FROM gateway.mcp_requests)"),
    Attack("scope_in_case", "SELECT CASE WHEN true THEN set_config('mcp_gateway.console_scope', "
                            f"'{FORGED_SCOPE}', true) END, r.* FROM gateway.mcp_requests r"),
    Attack("casing_comments", "SeLeCt/**/SET_CONFIG/* x */ ( 'role' , 'mcp_gateway_auditor' , TRUE ),\n\t"
                              "(SELECT count(*) FROM gateway.mcp_sessions)"),
    Attack("quoted_name", 'SELECT "set_config"(\'role\', \'mcp_gateway_auditor\', true)'),
    Attack("qualified_name", "SELECT pg_catalog.set_config('role', 'mcp_gateway_auditor', true)"),
    Attack("dollar_quoting", "SELECT set_config($$role$$, $q$mcp_gateway_auditor$q$, true)"),
    Attack("statement_timeout_off", "SELECT set_config('statement_timeout', '0', true)"),
    Attack("read_write", "SELECT set_config('transaction_read_only', 'off', true)"),
    Attack("current_setting", "SELECT current_setting('mcp_gateway.console_scope')"),
    # multiple statements, transaction control
    Attack("two_selects", "SELECT 1; SELECT * FROM gateway.mcp_requests"),
    Attack("commit_then_select", "COMMIT; SELECT * FROM gateway.mcp_requests"),
    Attack("set_local", "SET LOCAL statement_timeout = 0; SELECT 1"),
    Attack("reset_all", "RESET ALL; SELECT * FROM gateway.mcp_sessions"),
    # writes
    Attack("delete_in_cte", "WITH d AS (DELETE FROM gateway.mcp_requests RETURNING *) SELECT * FROM d"),
    Attack("update_in_cte", "WITH u AS (UPDATE gateway.mcp_sessions SET user_name = 'x' RETURNING *) SELECT * FROM u"),
    Attack("insert_in_cte", "WITH i AS (INSERT INTO gateway.tenants (tenant_id) VALUES ('evil') RETURNING *)"
                            " SELECT * FROM i"),
    Attack("select_into", "SELECT * INTO TEMP stolen FROM gateway.mcp_requests"),
    Attack("for_update", "SELECT * FROM gateway.mcp_sessions FOR UPDATE"),
    Attack("for_share_subquery", "SELECT * FROM (SELECT * FROM gateway.users FOR SHARE) u"),
    Attack("copy_out", "COPY gateway.mcp_requests TO STDOUT"),
    Attack("copy_query", "COPY (SELECT * FROM gateway.mcp_requests) TO '/tmp/stolen.csv'"),
    Attack("do_block", "DO $$BEGIN PERFORM set_config('role', 'mcp_gateway_auditor', false); END$$"),
    Attack("lock", "LOCK TABLE gateway.mcp_requests"),
    Attack("listen", "LISTEN gateway"),
    Attack("prepare", "PREPARE p AS SELECT * FROM gateway.mcp_requests"),
    Attack("create_function", "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    Attack("alter_role", "ALTER ROLE mcp_gateway_console BYPASSRLS"),
    Attack("explain_analyze", "EXPLAIN ANALYZE SELECT * FROM gateway.mcp_requests"),
    # functions that are not allowed
    Attack("pg_sleep", "SELECT pg_sleep(30)", resource=True),
    Attack("pg_sleep_for", "SELECT pg_sleep_for('30 seconds')", resource=True),
    Attack("advisory_lock", "SELECT pg_advisory_lock(42)"),
    Attack("txid", "SELECT txid_current()"),
    Attack("nextval", "SELECT nextval('gateway.nothing')"),
    Attack("read_file", "SELECT pg_read_file('/etc/passwd')"),
    Attack("ls_dir", "SELECT pg_ls_dir('.')"),
    Attack("lo_import", "SELECT lo_import('/etc/passwd')"),
    Attack("dblink", "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(x int)"),
    Attack("terminate", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    Attack("query_to_xml_set_config",
           "SELECT query_to_xml('SELECT set_config(''role'', ''mcp_gateway_auditor'', true)', true, true, '')"),
    Attack("query_to_xml_read", "SELECT query_to_xml('SELECT * FROM gateway.mcp_requests', true, true, '')"),
    # bombs
    Attack("series_bomb", "SELECT generate_series(1, 1000000000) AS n", resource=True),
    Attack("recursive_bomb", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
           resource=True),
    Attack("cross_join_bomb", "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
           resource=True),
    # catalog snooping for other tenants' ids
    Attack("stat_activity", "SELECT datname, usename, application_name, query FROM pg_stat_activity", snoop=True),
    Attack("backend_activity", "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
           snoop=True),
    Attack("pg_stats", "SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats"
                       " WHERE schemaname = 'gateway'", snoop=True),
    Attack("pg_stats_ext", "SELECT * FROM pg_stats_ext", snoop=True),
    Attack("pg_class", "SELECT relname, reltuples FROM pg_class WHERE relnamespace = 'gateway'::regnamespace",
           snoop=True),
    Attack("policies", "SELECT * FROM pg_policies", snoop=True),
    Attack("all_tenants", "SELECT tenant_id FROM gateway.tenants UNION SELECT tenant_id FROM gateway.users"
                          " UNION SELECT tenant_id FROM gateway.usage_daily", snoop=True),
    Attack("views", "SELECT * FROM gateway.mcp_session_stats", snoop=True),
    Attack("user_stats", "SELECT * FROM gateway.mcp_user_stats", snoop=True),
    Attack("functions", "SELECT * FROM gateway.get_disconnected_sessions(30, 200)", snoop=True),
    Attack("user_sessions_other_tenant", "SELECT * FROM gateway.get_user_sessions('alice', 'globex')"),
    Attack("active_clients", "SELECT * FROM gateway.get_active_mcp_clients()", snoop=True),
    Attack("error_leak", "SELECT 1 / (CASE WHEN tool_name LIKE 'zz%' THEN 0 ELSE 1 END) FROM gateway.mcp_requests"),
    Attack("cast_leak", "SELECT user_id::int FROM gateway.mcp_requests", snoop=True),
    Attack("instances", "SELECT * FROM gateway.instances", snoop=True),
    Attack("token_hash", "SELECT token_hash FROM gateway.api_tokens"),
    Attack("migrations_meta", "SELECT * FROM mcp_gateway_meta.migrations", snoop=True),
    # the HMAC key
    Attack("key_table", "SELECT * FROM mcp_gateway_private.console_keys"),
    Attack("key_via_function", "SELECT gateway.console_scope(), gateway.console_tenant(), "
                               "gateway.console_all_tenants()"),
    Attack("request_identity_helpers", "SELECT gateway.current_tenant_id()"),
]
