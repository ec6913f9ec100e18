"""Without a superuser the second wall is missing: migrate warns, health_check and doctor say so."""

from __future__ import annotations

import psycopg

from gateway.cli.doctor import console_check
from gateway.store.console_hardening import open_channels
from gateway.store.migrate import migrate
from tests.pg import DatabaseFactory


def test_a_superuser_migrate_closes_every_channel(db_factory: DatabaseFactory) -> None:
    database = db_factory.create()
    try:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            assert open_channels(conn) == []
        assert migrate(database.admin_url).warnings == []
    finally:
        db_factory.drop(database)


def test_open_channels_make_migrate_warn_loudly(db_factory: DatabaseFactory) -> None:
    database = db_factory.create()
    try:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            # what a database migrated without a superuser looks like: PostgreSQL's defaults
            conn.execute("GRANT EXECUTE ON FUNCTION pg_sleep(float8), pg_stat_get_xact_tuples_returned(oid),"
                         " set_config(text, text, boolean) TO PUBLIC")
            conn.execute("GRANT SELECT ON pg_stat_activity TO PUBLIC")
            assert open_channels(conn) == ["statistics counters", "set_config", "pg_sleep", "pg_stat_activity"]
        warnings = migrate(database.admin_url).warnings
        assert len(warnings) == 1 and "side channels are open" in warnings[0] and "superuser" in warnings[0]
    finally:
        db_factory.drop(database)


def test_doctor_warns_when_the_gateway_reports_open_channels() -> None:
    assert console_check({"console_side_channels": "closed"}) == []
    assert console_check({}) == []
    [check] = console_check({"console_side_channels": "open: pg_sleep, set_config"})
    assert check.name == "console" and check.status == "warn" and "pg_sleep" in check.detail
    assert check.fix is not None and "superuser" in check.fix
