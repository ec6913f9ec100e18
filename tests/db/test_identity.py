"""Identity lives exactly as long as its transaction."""

from __future__ import annotations

from auth import Principal
from gateway.store.db import Database

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat")


async def test_identity_is_set_inside_the_transaction(db: Database) -> None:
    async with db.as_principal(ALICE) as conn:
        row = await (await conn.execute(
            "SELECT current_user, current_setting('mcp_gateway.tenant_id'), current_setting('mcp_gateway.user_id')"
        )).fetchone()
    assert row == ("mcp_gateway_member", "acme", "alice")


async def test_identity_does_not_survive_its_transaction(database) -> None:
    # One connection in the pool, so the second borrow is the same backend.
    db = Database(database.urls, min_size=1, max_size=1)
    await db.open(wait=True)
    try:
        await _check_next_borrower_inherits_nothing(db)
    finally:
        await db.close()


async def _check_next_borrower_inherits_nothing(db: Database) -> None:
    async with db.as_principal(ALICE) as conn:
        pid = conn.info.backend_pid
    async with db.pool.connection() as conn:
        assert conn.info.backend_pid == pid
        row = await (await conn.execute(
            "SELECT current_user, nullif(current_setting('mcp_gateway.tenant_id', true), ''),"
            " nullif(current_setting('mcp_gateway.user_id', true), '')"
        )).fetchone()
    assert row == ("mcp_gateway_app", None, None)


async def test_an_error_inside_the_transaction_leaves_nothing_behind(db: Database) -> None:
    try:
        async with db.as_principal(ALICE) as conn:
            await conn.execute("SELECT 1/0")
    except Exception:
        pass
    async with db.pool.connection() as conn:
        row = await (await conn.execute("SELECT current_user, current_setting('mcp_gateway.user_id', true)")).fetchone()
    assert row == ("mcp_gateway_app", "")


# --- identity and row-level security together --------------------------------------------

import psycopg  # noqa: E402
import pytest  # noqa: E402

from tests.db import seed as S  # noqa: E402

AUDITOR = Principal(user_id="audrey", tenant_id="acme", role="auditor", token_kind="pat")
GLOBEX_BOB = Principal(user_id="bob", tenant_id="globex", token_kind="pat")


async def test_helpers_read_identity_only_inside_the_transaction(database) -> None:
    db = Database(database.urls, min_size=1, max_size=1)
    await db.open(wait=True)
    try:
        async with db.as_principal(ALICE) as conn:
            row = await (await conn.execute(
                "SELECT gateway.current_tenant_id(), gateway.current_user_id(), gateway.identity_is_set()")).fetchone()
        assert row == ("acme", "alice", True)
        # The same backend, next as the writer: no caller identity at all.
        async with db.as_system("ingest") as conn:
            row = await (await conn.execute(
                "SELECT current_user, nullif(current_setting('mcp_gateway.tenant_id', true), ''),"
                " nullif(current_setting('mcp_gateway.user_id', true), '')")).fetchone()
        assert row == ("mcp_gateway_ingest", None, None)
    finally:
        await db.close()


async def test_next_borrower_holds_no_privilege_and_sees_no_rows(database, admin_conn) -> None:
    """After an auditor's transaction the same pooled backend reads nothing: not as the bare
    login (no privilege), not after a SET ROLE that forgot the identity (no rows)."""
    S.seed(admin_conn, S.build())
    db = Database(database.urls, min_size=1, max_size=1)
    await db.open(wait=True)
    try:
        async with db.as_principal(AUDITOR) as conn:
            everything = (await (await conn.execute("SELECT count(*) FROM gateway.mcp_requests")).fetchone())[0]
            pid = conn.info.backend_pid
        assert everything > 0
        async with db.pool.connection() as conn:
            assert conn.info.backend_pid == pid
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute("SELECT count(*) FROM gateway.mcp_requests")
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE mcp_gateway_auditor")
                for table in ("tenants", "users", "mcp_sessions", "mcp_requests", "usage_daily"):
                    count = (await (await conn.execute(f"SELECT count(*) FROM gateway.{table}")).fetchone())[0]
                    assert count == 0, table
        # and the next principal sees exactly their own rows, nothing of the auditor's reach
        async with db.as_principal(GLOBEX_BOB) as conn:
            owners = set(await (await conn.execute(
                "SELECT DISTINCT tenant_id, user_id FROM gateway.mcp_requests")).fetchall())
        assert owners == {("globex", "bob")}
    finally:
        await db.close()


async def test_identity_settings_are_never_session_level(database) -> None:
    """set_config(..., true) inside the transaction: after COMMIT the value is '' (reset),
    never a session-level value that a later transaction could still read."""
    db = Database(database.urls, min_size=1, max_size=1)
    await db.open(wait=True)
    try:
        async with db.as_principal(ALICE) as conn:
            pass
        async with db.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT current_setting('role'), current_user, current_setting('mcp_gateway.tenant_id', true),"
                " current_setting('mcp_gateway.user_id', true)")).fetchone()
        assert row == ("none", "mcp_gateway_app", "", "")
    finally:
        await db.close()
