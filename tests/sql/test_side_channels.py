"""No counter the console login can read moves with another tenant's rows (migration 012).

`test_no_counter_moves_with_another_tenants_rows` runs the detector (tests/sql/side_channels.py)
on a migrated database. `test_the_detector_finds_the_known_side_channel` proves it is not
vacuous: on a database where the statistics functions are granted back to the console login
and an index leads with a key column instead of tenant_id (what PostgreSQL and migrations
before 012 gave), it must find the counters that move.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.api.seed import A, B, seed
from tests.pg import DatabaseFactory, TestDatabase
from tests.sql.side_channels import Detector


@pytest.fixture(scope="module")
def seeded(db_factory: DatabaseFactory) -> Iterator[TestDatabase]:
    database = db_factory.create()
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        seed(conn)
        conn.execute("ANALYZE")
    yield database
    db_factory.drop(database)


def test_no_counter_moves_with_another_tenants_rows(seeded: TestDatabase) -> None:
    detector = Detector(seeded.admin_url, seeded.urls.console, A, B)
    assert len(detector.probes) >= 5, detector.probes  # B's keys in sessions, requests, users, tokens...
    assert detector.columns, "no catalog column enumerated: the detector would be vacuous"
    stats = [f for f in detector.functions if f.startswith(("pg_stat_get", "pg_relation_size", "pg_table_size"))]
    assert stats == [], f"statistics/size functions executable by the console login: {stats}"
    assert detector.moving_counters() == {}


def test_the_detector_finds_the_known_side_channel(db_factory: DatabaseFactory) -> None:
    database = db_factory.create()
    try:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            seed(conn)
            conn.execute("CREATE INDEX lint_probe_user ON gateway.mcp_requests (user_id)")
            conn.execute("ANALYZE")
            for (signature,) in conn.execute("SELECT oid::regprocedure::text FROM pg_proc"
                                             " WHERE proname LIKE 'pg\\_stat\\_get\\_%'").fetchall():
                conn.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO mcp_gateway_console")
        moving = Detector(database.admin_url, database.urls.console, A, B).moving_counters()
        assert any("pg_stat_get_xact_tuples_returned" in label for label in moving), moving
    finally:
        db_factory.drop(database)
