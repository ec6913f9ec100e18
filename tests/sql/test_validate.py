"""The parser layer alone (no database): exactly one SELECT, no dangerous functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mcp.sqlconsole import QueryRefused, validate_sql
from gateway.mcp.sqlguard import ALLOWED_FUNCTIONS
from tests.sql.corpus import CORPUS

ALLOWED = [
    "SELECT 1",
    "select * from gateway.mcp_requests where tenant_id = 'acme' order by 1 limit 5",
    "WITH t AS (SELECT tool_name, count(*) n FROM gateway.mcp_requests GROUP BY 1) SELECT * FROM t ORDER BY n DESC",
    "SELECT user_id FROM gateway.users UNION ALL SELECT user_id FROM gateway.mcp_sessions",
    "VALUES (1), (2)",
    "TABLE gateway.tenants",
    "SELECT date_trunc('day', \"timestamp\"), sum(estimated_cost) FROM gateway.mcp_requests GROUP BY 1",
    "SELECT '%s', '{}', $$set_config$$ AS not_a_call",
    "SELECT * FROM gateway.get_disconnected_sessions(7, 50)",
    "SELECT generate_series(1, 3)",
    "-- comment\nSELECT 1 /* trailing */",
    # the allow-list covers what reports need
    "SELECT extract(day FROM now()), substring('abc' FROM 1 FOR 2), trim(' x '), now() AT TIME ZONE 'UTC'",
    "SELECT tool_name, count(*) FILTER (WHERE status = 'error'), percentile_cont(0.5) WITHIN GROUP"
    " (ORDER BY duration_ms), row_number() OVER (PARTITION BY tool_name ORDER BY 1)"
    " FROM gateway.mcp_requests GROUP BY tool_name",
    "SELECT r.timestamp, r.status, t.name FROM gateway.mcp_requests r JOIN gateway.tenants t USING (tenant_id)",
    "SELECT * FROM json_to_record('{\"a\": 1}') AS t(a int, b text)",
    "SELECT * FROM gateway.mcp_requests TABLESAMPLE bernoulli(10) REPEATABLE (1)",
    "SELECT 1 ORDER BY 1 USING <",
    "SELECT 1 = ANY (SELECT 1), 'a' ~~ 'b', 1 BETWEEN 0 AND 2, 'a' SIMILAR TO 'b', NULLIF(1, 2), GREATEST(1, 2)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) CYCLE n SET c USING p"
    " SELECT * FROM r",
    "SELECT * FROM XMLTABLE('/a' PASSING CAST('<a/>' AS xml) COLUMNS c int PATH 'b')",
    "SELECT * FROM ROWS FROM (generate_series(1, 2), unnest(ARRAY[1])) AS t(a, b)",
    "SELECT * FROM gateway.users u, LATERAL (SELECT u.user_id) x",
    "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'gateway'::regnamespace",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'gateway'",
    "SELECT 'x' COLLATE \"C\", (ARRAY[1, 2])[1], ROW(1, 2)::record, x.y FROM (SELECT ROW(1) AS x) s(x)",
    "SELECT 1;",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_plain_selects_are_accepted(sql: str) -> None:
    validate_sql(sql)


@pytest.mark.parametrize("sql,reason", [
    ("SELECT 1; SELECT 2", "only a single SELECT is allowed"),
    ("SET ROLE x", "only a single SELECT is allowed"),
    ("RESET ROLE", "only a single SELECT is allowed"),
    ("DO $$ BEGIN END $$", "only a single SELECT is allowed"),
    ("CALL p()", "only a single SELECT is allowed"),
    ("COPY t TO STDOUT", "only a single SELECT is allowed"),
    ("LOCK t", "only a single SELECT is allowed"),
    ("LISTEN x", "only a single SELECT is allowed"),
    ("PREPARE p AS SELECT 1", "only a single SELECT is allowed"),
    ("EXPLAIN SELECT 1", "only a single SELECT is allowed"),
    ("SHOW ALL", "only a single SELECT is allowed"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data-modifying statements are not allowed"),
    ("WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT 1",
     "data-modifying statements are not allowed"),
    ("SELECT * INTO x FROM t", "SELECT INTO is not allowed"),
    ("SELECT * FROM t FOR UPDATE", "FOR UPDATE/SHARE is not allowed"),
    ("SELECT * FROM (SELECT 1 FROM t FOR KEY SHARE) s", "FOR UPDATE/SHARE is not allowed"),
    ("SELECT set_config('role', 'x', true)", "function set_config is not allowed"),
    ("SELECT \"SET_CONFIG\"('role', 'x', true)", "function set_config is not allowed"),
    ("SELECT x FROM t WHERE EXISTS (SELECT pg_catalog.set_config('a', 'b', true))",
     "function set_config is not allowed"),
    ("SELECT coalesce(null, lower(set_config('a', 'b', true)))", "function set_config is not allowed"),
    ("SELECT pg_sleep_until(now())", "function pg_sleep_until is not allowed"),
    ("SELECT dblink_connect('x')", "function dblink_connect is not allowed"),
    ("SELECT lo_get(1)", "function lo_get is not allowed"),
    ("SELECT pg_read_binary_file('x')", "function pg_read_binary_file is not allowed"),
    ("SELECT pg_cancel_backend(1)", "function pg_cancel_backend is not allowed"),
    ("SELECT pg_try_advisory_xact_lock(1)", "function pg_try_advisory_xact_lock is not allowed"),
    ("SELECT pg_current_xact_id()", "function pg_current_xact_id is not allowed"),
    ("SELECT setval('s', 1)", "function setval is not allowed"),
    ("SELECT * FROM ROWS FROM (set_config('a', 'b', true))", "function set_config is not allowed"),
    ("SELECT count(*) FILTER (WHERE set_config('a', 'b', true) = 'b') FROM t", "function set_config is not allowed"),
    ("SELECT ts_stat('SELECT 1')", "function ts_stat is not allowed"),
    ("SELECT x.pg_sleep FROM unnest(ARRAY[1.0]) x", "function pg_sleep is not allowed (attribute notation"),
    ("SELECT (x).pg_cancel_backend FROM unnest(ARRAY[1]) x", "function pg_cancel_backend is not allowed"),
    ("SELECT t.txid_status FROM t", "function txid_status is not allowed"),
    ("SELECT 1 OPERATOR(public.+) 1", "operator public.+ is not allowed"),
    ("SELECT 1 ORDER BY 1 USING OPERATOR(public.<)", "operator public.< is not allowed"),
    ("SELECT 'x'::public.citext", "type public.citext is not allowed"),
    ("SELECT 'x'::gateway.t", "type gateway.t is not allowed"),
    ("SELECT 'a' COLLATE public.x", "collation public.x is not allowed"),
    ("SELECT * FROM t TABLESAMPLE system_rows(1)", "TABLESAMPLE method system_rows is not allowed"),
    ("SELECT public.digest('x', 'sha256')", "function public.digest is not allowed"),
    ("SELECT pg_catalog.pg_sleep(1)", "function pg_sleep is not allowed"),
    ("SELECT $1", "parameters ($1) are not allowed"),
    ("SELECT JSON_OBJECT('a': 1)", "JsonObjectConstructor is not allowed"),
    ("SELECT * FROM mcp_gateway_private.console_keys", "relation mcp_gateway_private.console_keys is not allowed"),
    ("SELECT * FROM pg_stat_user_tables", "relation pg_stat_user_tables is not allowed"),
    ("SELECT * FROM pg_catalog.pg_locks", "relation pg_locks is not allowed"),
    ("SELECT reltuples FROM pg_class", "column reltuples is not allowed"),
    ("SELECT c.* FROM pg_class c", "pg_class's whole row is not allowed"),
    ("SELECT to_jsonb(c) FROM pg_class c", "pg_class's whole row is not allowed"),
    ("SELECT pg_class::text FROM pg_class", "pg_class's whole row is not allowed"),
    ("SELECT pg_relation_size('gateway.mcp_requests')", "function pg_relation_size is not allowed"),
    ("SELECT U&\"\\0070g_sleep\"(1)", "function pg_sleep is not allowed"),
    ("SELECT 1\x00; DROP TABLE t", "the query contains a NUL character"),
    ("   ", "the query is empty"),
    ("SELEC 1", "syntax error"),
])
def test_refusals_name_the_reason(sql: str, reason: str) -> None:
    with pytest.raises(QueryRefused) as info:
        validate_sql(sql)
    assert reason in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("sql", ["SELECT " + "(" * 5000 + "1" + ")" * 5000,
                                 "SELECT " + "(SELECT " * 3000 + "1" + ")" * 3000,
                                 "SELECT " + " + ".join(["1"] * 20000)])
def test_deep_or_huge_queries_are_answered_not_crashing(sql: str) -> None:
    try:
        validate_sql(sql)
    except QueryRefused as exc:
        assert "\n" not in str(exc)


def test_the_corpus_is_big_enough_and_mostly_refused_by_the_parser() -> None:
    assert len(CORPUS) >= 30
    refused = 0
    for attack in CORPUS:
        try:
            validate_sql(attack.sql)
        except QueryRefused:
            refused += 1
    assert refused >= 45


DENIED_NAMES = ["pg_sleep", "set_config", "pg_cancel_backend", "pg_terminate_backend", "pg_advisory_lock",
                "pg_notify", "query_to_xml", "ts_stat", "lo_get", "pg_read_file", "pg_stat_get_numscans",
                "pg_relation_size", "txid_current", "pg_current_wal_lsn", "dblink"]
POSITIONS = [
    "SELECT {f}(1)", "SELECT * FROM {f}(1)", "SELECT * FROM ROWS FROM ({f}(1))", "SELECT 1 WHERE {f}(1) IS NULL",
    "SELECT count(*) FILTER (WHERE {f}(1) IS NULL) FROM t", "SELECT row_number() OVER (ORDER BY {f}(1))",
    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY {f}(1)) FROM t", "WITH x AS (SELECT {f}(1)) SELECT 1",
    "SELECT * FROM t, LATERAL (SELECT {f}(t.a)) s", "SELECT 1 ORDER BY (SELECT {f}(1))", "SELECT x.{f} FROM t x",
    "SELECT (x).{f} FROM t x", "SELECT CASE WHEN true THEN {f}(1) END", "SELECT ARRAY[{f}(1)]",
    "SELECT 1 LIMIT (SELECT {f}(1))", "SELECT coalesce(NULL, {f}(1))", "VALUES ({f}(1))",
    "SELECT pg_catalog.{f}(1)", "SELECT \"{f}\"(1)", "SELECT 1 FROM t GROUP BY {f}(1)",
    "SELECT 1 = ANY (SELECT {f}(1))", "SELECT EXISTS (SELECT {f}(1))",
]


@given(name=st.sampled_from(DENIED_NAMES), position=st.sampled_from(POSITIONS),
       upper=st.booleans(), spaces=st.sampled_from(["", " ", "\n", "/* c */"]))
def test_a_denied_function_is_refused_in_every_position(name: str, position: str, upper: bool,
                                                        spaces: str) -> None:
    if "{f}(" not in position and name in ("txid_current", "pg_current_wal_lsn"):
        return  # attribute notation calls one-argument functions only: these take none
    sql = position.format(f=name.upper() if upper and "\"" not in position else name)
    sql = sql.replace("(", spaces + "(", 1)
    with pytest.raises(QueryRefused, match="is not allowed"):
        validate_sql(sql)


@given(name=st.sampled_from(sorted(ALLOWED_FUNCTIONS - {"unnest", "generate_series"})),
       position=st.sampled_from(POSITIONS[:10]))
def test_allowed_functions_are_not_refused_for_their_name(name: str, position: str) -> None:
    try:
        validate_sql(position.format(f=name))
    except QueryRefused as exc:
        assert f"function {name} is not allowed" not in str(exc)
