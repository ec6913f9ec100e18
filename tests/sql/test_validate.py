"""The parser layer alone (no database): exactly one SELECT, no dangerous functions."""

from __future__ import annotations

import pytest

from gateway.sqlconsole import QueryRefused, validate_sql
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
