"""Migration 013: clear analytics session keys become hashes; open sessions are unique per (tenant, key)."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest

from gateway.store.migrate import MIGRATIONS_DIR

MIGRATION = (MIGRATIONS_DIR / "013_hashed_session_key.sql").read_text()


def test_clear_keys_written_before_are_hashed(admin_conn: psycopg.Connection) -> None:
    """Re-run the migration over a row written the old way (it is idempotent): the clear key is gone."""
    admin_conn.execute("INSERT INTO gateway.tenants VALUES ('a/b'); INSERT INTO gateway.users (tenant_id, user_id)"
                       " VALUES ('a/b', 'c')")
    raw = "a/b/c|mcp|0123456789abcdef0123456789abcdef"
    admin_conn.execute("INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, session_key)"
                       " VALUES (%s, 'a/b', 'c', %s)", (uuid.uuid4(), raw))
    with admin_conn.transaction():
        admin_conn.execute("SET LOCAL ROLE mcp_gateway_owner")
        admin_conn.execute(MIGRATION)
    assert admin_conn.execute("SELECT session_key FROM gateway.mcp_sessions").fetchall() == [
        (hashlib.sha256(raw.encode()).hexdigest(),)]
    assert admin_conn.execute("SELECT relforcerowsecurity FROM pg_class"
                              " WHERE oid = 'gateway.mcp_sessions'::regclass").fetchone() == (True,)


def test_open_session_keys_are_unique_per_tenant(admin_conn: psycopg.Connection) -> None:
    definition = admin_conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'gateway'"
                                    " AND indexname = 'mcp_sessions_open_key'").fetchone()
    assert definition is not None and "(tenant_id, session_key)" in definition[0]
    admin_conn.execute("INSERT INTO gateway.tenants VALUES ('t1'), ('t2'); INSERT INTO gateway.users"
                       " (tenant_id, user_id) VALUES ('t1', 'u'), ('t2', 'u')")
    insert = "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, session_key) VALUES (%s, %s, 'u', 'k')"
    admin_conn.execute(insert, (uuid.uuid4(), "t1"))
    admin_conn.execute(insert, (uuid.uuid4(), "t2"))  # the same key in another tenant is another session
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin_conn.execute(insert, (uuid.uuid4(), "t1"))
