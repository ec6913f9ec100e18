"""Migrations: concurrent runs serialise, each file is applied exactly once, an edited
applied file is refused by name, a second run applies nothing and leaves the
policies and privileges exactly as they were."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gateway.errors import UserError
from gateway.store.migrate import MIGRATIONS_DIR, migrate
from tests.db import lint
from tests.helpers.wait import wait_for
from tests.pg import TestDatabase

MIGRATION_FILES = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))


@pytest.fixture
def empty_db(db_factory) -> Iterator[str]:
    """A brand-new, unmigrated database; yields its admin URL."""
    name = f"{db_factory.prefix}_empty_{uuid.uuid4().hex[:8]}"
    with db_factory._maintenance() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield db_factory._db_url(name)
    finally:
        with db_factory._maintenance() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def ledger(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT filename, count(*) FROM mcp_gateway_meta.migrations"
                            " GROUP BY filename ORDER BY filename").fetchall()


def security_snapshot(url: str) -> list[tuple]:
    """Policies, RLS flags and every ACL of schema gateway: what policies/ maintains."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("""
            SELECT 'policy', p.polrelid::regclass::text || '.' || p.polname,
                   concat_ws(' | ', p.polpermissive::text, p.polcmd::text, p.polroles::text,
                             pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
             WHERE c.relnamespace = 'gateway'::regnamespace
            UNION ALL
            SELECT 'relation', c.oid::regclass::text,
                   concat_ws(' | ', c.relrowsecurity::text, c.relforcerowsecurity::text, c.relacl::text)
              FROM pg_class c WHERE c.relnamespace = 'gateway'::regnamespace
            UNION ALL
            SELECT 'column', c.oid::regclass::text || '.' || a.attname, a.attacl::text
              FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE c.relnamespace = 'gateway'::regnamespace AND a.attacl IS NOT NULL
            UNION ALL
            SELECT 'function', p.oid::regprocedure::text, p.proacl::text
              FROM pg_proc p WHERE p.pronamespace = 'gateway'::regnamespace
            ORDER BY 1, 2""").fetchall()


def test_concurrent_migrate_threads_apply_each_file_once(empty_db: str) -> None:
    barrier = threading.Barrier(4)
    reports, errors = [], []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            reports.append(migrate(empty_db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(reports) == 4
    assert sorted(len(r.applied) for r in reports) == [0, 0, 0, len(MIGRATION_FILES)]
    assert all(sorted(r.applied + r.already) == MIGRATION_FILES for r in reports)
    assert ledger(empty_db) == [(name, 1) for name in MIGRATION_FILES]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert lint.all_problems(conn) == []


def test_concurrent_migrate_processes(empty_db: str) -> None:
    code = "import sys; from gateway.store.migrate import migrate; print(len(migrate(sys.argv[1]).applied))"
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert sorted(int(out) for out, _ in results) == [0, 0, len(MIGRATION_FILES)]
    assert ledger(empty_db) == [(name, 1) for name in MIGRATION_FILES]


def test_second_migrate_applies_nothing_and_changes_nothing(empty_db: str) -> None:
    first = migrate(empty_db)
    assert first.applied == MIGRATION_FILES
    before = security_snapshot(empty_db)
    second = migrate(empty_db)
    assert second.applied == []
    assert second.already == MIGRATION_FILES
    assert second.policies == first.policies and second.policies  # policies re-applied every time...
    assert security_snapshot(empty_db) == before                   # ...idempotently
    assert ledger(empty_db) == [(name, 1) for name in MIGRATION_FILES]


def test_an_edited_applied_migration_is_refused_by_name(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(empty_db, migrations_dir=copy)
    edited = copy / "002_identity.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    (copy / "099_later.sql").write_text("CREATE TABLE gateway.later (x int);\n")
    with pytest.raises(UserError, match=r"002_identity\.sql") as info:
        migrate(empty_db, migrations_dir=copy)
    assert "edited" in str(info.value)
    assert "099_later.sql" not in dict(ledger(empty_db))  # nothing after the refusal ran
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('gateway.later')").fetchone() == (None,)


def test_a_failing_migration_names_the_file_and_is_not_recorded(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    (copy / "099_broken.sql").write_text("CREATE TABLE gateway.half (x int);\nSELECT no_such_function();\n")
    with pytest.raises(UserError, match=r"099_broken\.sql"):
        migrate(empty_db, migrations_dir=copy)
    assert "099_broken.sql" not in dict(ledger(empty_db))
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('gateway.half')").fetchone() == (None,)  # rolled back


def test_a_policy_file_chosen_as_a_deadlock_victim_is_run_again(database: TestDatabase, tmp_path: Path) -> None:
    """Policies run at every start, beside replicas that are serving. Before: a deadlock with their work
    failed the start with exit 2 (seen in CI: `policies/030_console.sql failed: deadlock detected`)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "010_locks.sql").write_text(
        "LOCK TABLE gateway.mcp_sessions IN ACCESS EXCLUSIVE MODE;\n"
        "LOCK TABLE gateway.mcp_requests IN ACCESS EXCLUSIVE MODE;\n")
    holder = psycopg.connect(database.admin_url)  # a replica's transaction: the second table, then the first
    result: dict[str, object] = {}
    try:
        holder.execute("SET deadlock_timeout = '30s'")  # the migration's backend detects the cycle
        holder.execute("LOCK TABLE gateway.mcp_requests IN ACCESS EXCLUSIVE MODE")

        def run() -> None:
            try:
                result["report"] = migrate(database.admin_url, policies_dir=policies)
            except UserError as exc:
                result["error"] = str(exc)
        migrating = threading.Thread(target=run)
        migrating.start()
        with psycopg.connect(database.admin_url, autocommit=True) as watcher:
            wait_for(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mcp-gateway migrate'"
                " AND wait_event_type = 'Lock'").fetchone()[0], 20, "the migration to wait for the second table")
        holder.execute("LOCK TABLE gateway.mcp_sessions IN ACCESS EXCLUSIVE MODE")  # the cycle; the file aborts
        holder.commit()
        migrating.join(30)
    finally:
        holder.close()
    assert "error" not in result, result
    assert "010_locks.sql" in result["report"].policies  # type: ignore[attr-defined]
