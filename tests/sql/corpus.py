"""Hostile admin-SQL corpus: what a tenant admin of tenant A might try to read tenant B.

Each attack must be refused, fail, or return only tenant A's rows — through the API
(with the parser) and directly on the console login with a valid tenant-A scope
(without the parser). `snoop`: the attacker does not know B's tenant id, so the
result must not contain it either. `resource`: bounded by row cap / deadline.
`blocked`: refused by the parser AND failing in the database without it (the second wall:
migrations/012_console_side_channels.sql). `refused`: refused by the parser (the database
allows it, harmlessly).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    name: str
    sql: str
    snoop: bool = False
    resource: bool = False
    blocked: bool = False
    refused: bool = False


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

B_PROBE = "'globex'"  # B's tenant id: what a counter oracle would confirm


def _blocked(name: str, sql: str, resource: bool = False) -> Attack:
    return Attack(name, sql, resource=resource, blocked=True)


# Walking around the parser, and side channels: each must be refused by the parser and fail
# in the database too (permission denied, or no such function/operator/collation/method).
WALL: list[Attack] = [
    # attribute notation: x.f is f(x)
    _blocked("attr_sleep", "SELECT x.pg_sleep FROM unnest(ARRAY[3.0::float8]) x", resource=True),
    _blocked("attr_sleep_paren", "SELECT (x).pg_sleep FROM unnest(ARRAY[3.0::float8]) x", resource=True),
    _blocked("attr_sleep_quoted", 'SELECT x."pg_sleep" FROM unnest(ARRAY[3.0::float8]) AS x', resource=True),
    _blocked("attr_sleep_in_where", "SELECT 1 FROM unnest(ARRAY[3.0::float8]) x WHERE x.pg_sleep IS NULL",
             resource=True),
    _blocked("attr_cancel_all", "SELECT count(p.pg_cancel_backend) FROM generate_series(1, 4194304) p"),
    _blocked("attr_terminate", "SELECT p.pg_terminate_backend FROM unnest(ARRAY[1, 2, 3]) p"),
    _blocked("attr_advisory", "SELECT k.pg_advisory_lock FROM unnest(ARRAY[42::bigint]) k"),
    _blocked("attr_try_advisory", "SELECT k.pg_try_advisory_lock FROM unnest(ARRAY[42::bigint]) k"),
    _blocked("attr_lo_unlink", "SELECT o.lo_unlink FROM unnest(ARRAY[1::oid]) o"),
    _blocked("attr_lo_get", "SELECT o.lo_get FROM unnest(ARRAY[1::oid]) o"),
    _blocked("attr_txid_status", "SELECT x.txid_status FROM unnest(ARRAY[1::bigint]) x"),
    _blocked("attr_relation_size", "SELECT r.pg_relation_size FROM unnest(ARRAY['gateway.mcp_sessions'::regclass]) r"),
    _blocked("attr_numscans", "SELECT r.pg_stat_get_numscans"
                              " FROM unnest(ARRAY['gateway.mcp_requests'::regclass::oid]) r"),
    _blocked("attr_xact_returned", "SELECT r.pg_stat_get_xact_tuples_returned"
                                   " FROM unnest(ARRAY['gateway.mcp_sessions_pkey'::regclass::oid]) r"),
    _blocked("attr_read_file", "SELECT f.pg_read_file FROM unnest(ARRAY['/etc/passwd']) f"),
    # statistics counters: the index-probing oracle
    _blocked("xact_tuples_returned",
             "SELECT count(*) FROM gateway.mcp_sessions WHERE user_id >= 'zz';"
             " SELECT pg_stat_get_xact_tuples_returned('gateway.mcp_sessions_tenant_user'::regclass)"),
    _blocked("xact_tuples_fetched", "SELECT pg_stat_get_xact_tuples_fetched('gateway.mcp_requests'::regclass)"),
    _blocked("tuples_returned", "SELECT pg_stat_get_tuples_returned(c.oid) FROM pg_class c"
                                " WHERE c.relnamespace = 'gateway'::regnamespace"),
    _blocked("live_tuples", "SELECT pg_stat_get_live_tuples('gateway.mcp_requests'::regclass)"),
    _blocked("numscans_qualified", "SELECT pg_catalog.pg_stat_get_numscans('gateway.mcp_requests'::regclass)"),
    _blocked("blocks_fetched", "SELECT pg_stat_get_blocks_fetched('gateway.users'::regclass)"),
    _blocked("db_tuples", "SELECT pg_stat_get_db_tup_inserted(oid) FROM pg_database"),
    _blocked("stat_user_tables", "SELECT relname, n_live_tup, idx_tup_fetch FROM pg_stat_user_tables"),
    _blocked("stat_user_indexes", "SELECT * FROM pg_stat_user_indexes"),
    _blocked("stat_xact_tables", "SELECT * FROM pg_stat_xact_user_tables"),
    _blocked("statio_indexes", "SELECT * FROM pg_statio_user_indexes"),
    _blocked("stat_database", "SELECT tup_inserted, xact_commit FROM pg_stat_database"),
    _blocked("stat_all_tables_qualified", "SELECT * FROM pg_catalog.pg_stat_all_tables"),
    _blocked("stat_statements", "SELECT query FROM pg_stat_statements"),
    _blocked("pg_stats_values", "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'mcp_requests'"),
    _blocked("reltuples", "SELECT relname, reltuples FROM pg_class WHERE relnamespace = 'gateway'::regnamespace"),
    _blocked("relpages", "SELECT sum(relpages) FROM pg_class"),
    _blocked("pg_class_star", "SELECT * FROM pg_class WHERE relname = 'mcp_requests'"),
    _blocked("pg_class_whole_row", "SELECT to_jsonb(c) FROM pg_class c WHERE relname = 'mcp_requests'"),
    # sizes grow with other tenants' rows
    _blocked("relation_size", "SELECT pg_relation_size('gateway.mcp_requests')"),
    _blocked("total_relation_size", "SELECT pg_total_relation_size('gateway.mcp_sessions')"),
    _blocked("table_size", "SELECT pg_table_size('gateway.users')"),
    _blocked("indexes_size", "SELECT pg_indexes_size('gateway.mcp_requests')"),
    _blocked("database_size", "SELECT pg_database_size(current_database())"),
    _blocked("relation_size_fork", "SELECT pg_relation_size('gateway.mcp_requests', 'main')"),
    # other transactions and backends
    _blocked("locks", "SELECT locktype, relation, pid FROM pg_locks"),
    _blocked("lock_status", "SELECT * FROM pg_lock_status()"),
    _blocked("prepared_xacts", "SELECT * FROM pg_prepared_xacts"),
    _blocked("blocking_pids", "SELECT pg_blocking_pids(1)"),
    _blocked("txid_current", "SELECT txid_current()"),
    _blocked("txid_snapshot", "SELECT txid_current_snapshot()"),
    _blocked("current_snapshot", "SELECT pg_current_snapshot()"),
    _blocked("xact_status", "SELECT pg_xact_status('3'::xid8)"),
    _blocked("txid_status", "SELECT txid_status(3)"),
    _blocked("visible_in_snapshot", "SELECT pg_visible_in_snapshot('3'::xid8, '10:20:'::pg_snapshot)"),
    _blocked("wal_lsn", "SELECT pg_current_wal_lsn()"),
    _blocked("wal_insert_lsn", "SELECT pg_current_wal_insert_lsn()"),
    _blocked("export_snapshot", "SELECT pg_export_snapshot()"),
    _blocked("commit_timestamp", "SELECT pg_last_committed_xact()"),
    _blocked("notification_queue", "SELECT pg_notification_queue_usage()"),
    # SQL given as text
    _blocked("table_to_xml", "SELECT table_to_xml('gateway.mcp_requests', true, false, '')"),
    _blocked("schema_to_xml", "SELECT schema_to_xml('gateway', true, false, '')"),
    _blocked("database_to_xml", "SELECT database_to_xml(true, false, '')"),
    _blocked("cursor_to_xml", "SELECT cursor_to_xml('c', 10, true, false, '')"),
    _blocked("query_to_xmlschema", "SELECT query_to_xmlschema('SELECT 1', true, false, '')"),
    _blocked("ts_stat", "SELECT * FROM ts_stat('SELECT to_tsvector(tool_name) FROM gateway.mcp_requests')"),
    _blocked("ts_rewrite", "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')"),
    _blocked("xpath_over_query", "SELECT xpath('//text()', query_to_xml('SELECT tenant_id FROM gateway.tenants',"
                                 " true, false, ''))"),
    _blocked("dblink_exec", "SELECT dblink_exec('dbname=postgres', 'SELECT 1')"),
    # settings, sleep, locks, notify, signals
    _blocked("set_config_search_path", "SELECT set_config('search_path', 'public', true)"),
    _blocked("set_config_in_order_by", "SELECT 1 ORDER BY set_config('statement_timeout', '0', true)"),
    _blocked("sleep_until", "SELECT pg_sleep_until(now() + interval '3 seconds')", resource=True),
    _blocked("sleep_for", "SELECT pg_sleep_for('3 seconds')", resource=True),
    _blocked("sleep_unicode_name", 'SELECT U&"\\0070g_sleep"(3)', resource=True),
    _blocked("sleep_where_false", "SELECT pg_sleep(3) FROM gateway.users WHERE false"),
    _blocked("sleep_in_cte", "WITH x AS MATERIALIZED (SELECT pg_sleep(3)) SELECT * FROM x", resource=True),
    _blocked("sleep_lateral", "SELECT * FROM (VALUES (3.0::float8)) v(x), LATERAL (SELECT pg_sleep(v.x)) s",
             resource=True),
    _blocked("sleep_rows_from", "SELECT * FROM ROWS FROM (pg_sleep(3))", resource=True),
    _blocked("sleep_in_window", "SELECT row_number() OVER (ORDER BY pg_try_advisory_lock(1)) FROM gateway.users"),
    _blocked("advisory_in_filter", "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(1)) FROM gateway.users"),
    _blocked("advisory_within_group",
             "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY pg_try_advisory_xact_lock(2)) FROM gateway.users"),
    _blocked("advisory_shared", "SELECT pg_advisory_lock_shared(7)"),
    _blocked("advisory_xact", "SELECT pg_advisory_xact_lock(7)"),
    _blocked("advisory_in_subselect_order", "SELECT 1 ORDER BY (SELECT pg_try_advisory_lock(7))"),
    _blocked("notify", "SELECT pg_notify('gateway', 'hello')"),
    _blocked("listening_channels", "SELECT * FROM pg_listening_channels()"),
    _blocked("cancel_self", "SELECT pg_cancel_backend(pg_backend_pid())"),
    _blocked("terminate_self", "SELECT pg_terminate_backend(pg_backend_pid(), 1)"),
    _blocked("reload_conf", "SELECT pg_reload_conf()"),
    _blocked("log_memory", "SELECT pg_log_backend_memory_contexts(pg_backend_pid())"),
    # files and large objects
    _blocked("read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')"),
    _blocked("stat_file", "SELECT pg_stat_file('postgresql.conf')"),
    _blocked("ls_waldir", "SELECT * FROM pg_ls_waldir()"),
    _blocked("lo_creat", "SELECT lo_creat(-1)"),
    _blocked("lo_from_bytea", "SELECT lo_from_bytea(0, 'stolen')"),
    _blocked("lo_put", "SELECT lo_put(1, 0, 'x')"),
    _blocked("loread", "SELECT loread(0, 10)"),
    # other ways to name or reach a function
    _blocked("operator_foreign_schema", "SELECT 'a' OPERATOR(public.~~~) 'b'"),
    _blocked("order_using_foreign_operator", "SELECT 1 ORDER BY 1 USING OPERATOR(public.<<<)"),
    _blocked("collate_foreign", "SELECT tool_name COLLATE public.evil FROM gateway.mcp_requests"),
    _blocked("tablesample_method", "SELECT * FROM gateway.mcp_requests TABLESAMPLE system_rows(5)"),
    _blocked("cast_foreign_type", "SELECT 'x'::public.evil_type"),
    _blocked("json_table", "SELECT * FROM JSON_TABLE('[1]'::jsonb, '$[*]' COLUMNS (x int PATH '$')) jt"),
    Attack("pgcrypto_schema", "SELECT public.gen_random_bytes(16)", refused=True),
    _blocked("private_schema_function", "SELECT mcp_gateway_private.nothing()"),
    Attack("scope_helper", "SELECT gateway.console_scope()", refused=True),
    # refused by the parser only: harmless in the database (its own transaction, its own settings)
    Attack("own_xid", "SELECT pg_current_xact_id()", refused=True),
    Attack("read_scope_setting", "SELECT current_setting('mcp_gateway.console_scope', true)", refused=True),
    Attack("param_ref", "SELECT $1", refused=True),
]
CORPUS = CORPUS + WALL
