"""An update cannot move a row to another user or tenant — for every role that can update.

Request roles cannot update at all (see the matrix). The system roles that can
(ingest, authn) hold column-level UPDATE grants that leave out every column tying a
row to a tenant or user, so the attempt fails with "permission denied" before any
row is touched. The catalog test at the end derives the same fact for any role
that holds UPDATE anywhere, so a future grant cannot quietly re-open it.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from gateway.store.db import _SET_IDENTITY
from tests.db import seed as S

A_ALICE_S1 = S.sid("acme", "alice", "s1")
A_ALICE_TOKEN = S.tid("acme", "alice")

MOVES = {
    "mcp_gateway_ingest": [
        f"UPDATE gateway.mcp_sessions SET tenant_id = 'globex' WHERE session_id = '{A_ALICE_S1}'",
        f"UPDATE gateway.mcp_sessions SET user_id = 'bob' WHERE session_id = '{A_ALICE_S1}'",
        f"UPDATE gateway.mcp_sessions SET session_key = 'stolen' WHERE session_id = '{A_ALICE_S1}'",
        f"UPDATE gateway.mcp_sessions SET session_id = gen_random_uuid() WHERE session_id = '{A_ALICE_S1}'",
        "UPDATE gateway.usage_daily SET tenant_id = 'globex' WHERE tenant_id = 'acme'",
        "UPDATE gateway.usage_daily SET user_id = 'bob' WHERE user_id = 'alice'",
        "UPDATE gateway.users SET tenant_id = 'globex' WHERE user_id = 'alice'",
        "UPDATE gateway.users SET user_id = 'mallory' WHERE user_id = 'alice'",
        f"UPDATE gateway.mcp_requests SET tenant_id = 'globex' WHERE session_id = '{A_ALICE_S1}'",
        f"UPDATE gateway.mcp_requests SET user_id = 'bob' WHERE session_id = '{A_ALICE_S1}'",
        "UPDATE gateway.tenants SET tenant_id = 'acme2' WHERE tenant_id = 'acme'",
        # an upsert that tries to re-home the conflicting row
        "INSERT INTO gateway.users AS u (tenant_id, user_id) VALUES ('acme', 'alice')"
        " ON CONFLICT (tenant_id, user_id) DO UPDATE SET tenant_id = 'globex'",
        f"INSERT INTO gateway.mcp_sessions AS m (session_id, tenant_id, user_id, session_key)"
        f" VALUES (gen_random_uuid(), 'acme', 'alice', 'key/{A_ALICE_S1}')"
        " ON CONFLICT (tenant_id, session_key) WHERE status <> 'disconnected' DO UPDATE SET user_id = 'bob'",
    ],
    "mcp_gateway_authn": [
        "UPDATE gateway.users SET tenant_id = 'globex' WHERE user_id = 'alice'",
        "UPDATE gateway.users SET user_id = 'mallory' WHERE user_id = 'alice'",
        f"UPDATE gateway.api_tokens SET user_id = 'bob' WHERE token_id = '{A_ALICE_TOKEN}'",
        f"UPDATE gateway.api_tokens SET tenant_id = 'globex' WHERE token_id = '{A_ALICE_TOKEN}'",
        f"UPDATE gateway.api_tokens SET token_hash = sha256('x') WHERE token_id = '{A_ALICE_TOKEN}'",
        f"UPDATE gateway.api_tokens SET role = 'admin' WHERE token_id = '{A_ALICE_TOKEN}'",
        "UPDATE gateway.tenants SET tenant_id = 'acme2' WHERE tenant_id = 'acme'",
        "INSERT INTO gateway.users AS u (tenant_id, user_id) VALUES ('acme', 'alice')"
        " ON CONFLICT (tenant_id, user_id) DO UPDATE SET user_id = 'mallory'",
    ],
}
CASES = [(role, sql) for role, sqls in MOVES.items() for sql in sqls]


@pytest.mark.parametrize(("role", "sql"), CASES,
                         ids=[f"{r.removeprefix('mcp_gateway_')}-{i}" for i, (r, _) in enumerate(CASES)])
def test_update_cannot_move_a_row(runtime: psycopg.Connection, role: str, sql: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        with runtime.transaction(force_rollback=True):
            runtime.execute(_SET_IDENTITY, (role, "", ""))
            runtime.execute(sql)


@pytest.mark.parametrize("role", ["mcp_gateway_ingest", "mcp_gateway_authn"])
def test_allowed_updates_keep_the_row_where_it_is(runtime: psycopg.Connection, role: str) -> None:
    """The columns they may update do not include ownership: after the update the row is where it was."""
    with runtime.transaction(force_rollback=True):
        runtime.execute(_SET_IDENTITY, (role, "", ""))
        row = runtime.execute(
            "UPDATE gateway.users SET last_seen_at = now(), email = 'new@acme.example'"
            " WHERE tenant_id = 'acme' AND user_id = 'alice' RETURNING tenant_id, user_id").fetchall()
    assert row == [("acme", "alice")]


@pytest.mark.parametrize("tenant,user", [("globex", "alice"), ("acme", "bob")])
def test_a_request_cannot_claim_another_owner_than_its_session(runtime: psycopg.Connection,
                                                              tenant: str, user: str) -> None:
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="mcp_requests_session_owner"):
        with runtime.transaction(force_rollback=True):
            runtime.execute(_SET_IDENTITY, ("mcp_gateway_ingest", "", ""))
            runtime.execute(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, status)"
                " VALUES (%s, %s, %s, %s, 'success') ON CONFLICT (tenant_id, id) DO NOTHING",
                (uuid.uuid4(), A_ALICE_S1, tenant, user))


OWNERSHIP_COLUMNS = ("tenant_id", "user_id", "session_id", "session_key", "token_id", "token_hash", "id")


def test_no_role_but_the_owner_may_update_an_ownership_column(seeded_admin: psycopg.Connection) -> None:
    """Catalog-derived: for EVERY role (including ones added later), no UPDATE on tenant_id/user_id/keys."""
    offenders = seeded_admin.execute("""
        SELECT r.rolname, c.oid::regclass::text, a.attname
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          CROSS JOIN pg_roles r
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p')
           AND a.attname = ANY (%s)
           AND NOT r.rolsuper AND NOT pg_has_role(r.oid, c.relowner, 'MEMBER') AND r.rolname NOT LIKE 'pg\\_%%'
           AND has_column_privilege(r.oid, c.oid, a.attnum, 'UPDATE')
         ORDER BY 1, 2, 3""", (list(OWNERSHIP_COLUMNS),)).fetchall()
    assert offenders == []
