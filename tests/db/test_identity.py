"""Identity lives exactly as long as its transaction."""

from __future__ import annotations

from auth import Principal
from gateway.db import Database

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
