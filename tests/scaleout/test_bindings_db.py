"""gateway.mcp_protocol_sessions: who may read and write session bindings, and how they are looked up."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth import Principal
from gateway.mcp.session_sharing import BindingStore, owner_hash
from gateway.store.db import Database
from tests.pg import TestDatabase

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}


def _principal(user: str, tenant: str = "acme", role: str = "member") -> Principal:
    return Principal(user_id=user, tenant_id=tenant, role=role, token_kind="jwt_hs")  # type: ignore[arg-type]


async def test_bindings_are_found_only_under_their_own_tenant_and_ended_once(db: Database) -> None:
    store = BindingStore(db, "test-instance", idle_timeout=1800)
    alice = _principal("alice")
    await store.record(alice, "s" * 32, owner_hash(alice, "cred"), "2025-11-25", INIT)
    found = await store.lookup("acme", "s" * 32)
    assert found is not None and found.user_id == "alice" and found.init_params == INIT and not found.ended
    assert await store.lookup("globex", "s" * 32) is None  # another tenant: unknown, whatever the id
    assert await store.lookup("acme", "t" * 32) is None
    await store.end("acme", "s" * 32, "client_disconnect")
    ended = await store.lookup("acme", "s" * 32)
    assert ended is not None and ended.ended
    # A second record for the same id never replaces the first owner.
    mallory = _principal("mallory")
    await store.record(mallory, "s" * 32, owner_hash(mallory, "cred"), "2025-11-25", INIT)
    store._cache.clear()
    again = await store.lookup("acme", "s" * 32)
    assert again is not None and again.user_id == "alice"


@pytest.mark.parametrize("role", ["member", "admin", "auditor"])
async def test_request_roles_cannot_read_or_write_bindings(db: Database, role: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with db.as_principal(_principal("alice", role=role)) as conn:
            await conn.execute("SELECT count(*) FROM gateway.mcp_protocol_sessions")


async def test_ingest_cannot_move_or_delete_a_binding(db: Database) -> None:
    store = BindingStore(db, "test-instance", idle_timeout=1800)
    await store.record(_principal("alice"), "u" * 32, owner_hash(_principal("alice"), None), "2025-11-25", INIT)
    for sql in ("UPDATE gateway.mcp_protocol_sessions SET tenant_id = 'globex'",
                "UPDATE gateway.mcp_protocol_sessions SET owner_hash = owner_hash",
                "UPDATE gateway.mcp_protocol_sessions SET user_id = 'mallory'",
                "DELETE FROM gateway.mcp_protocol_sessions"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with db.as_system("ingest") as conn:
                await conn.execute(sql)


def test_the_sql_console_login_cannot_see_bindings(database: TestDatabase) -> None:
    with psycopg.connect(database.urls.console, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM gateway.mcp_protocol_sessions")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
       st.one_of(st.none(), st.text(max_size=60)), st.one_of(st.none(), st.text(max_size=60)),
       st.text(min_size=1, max_size=20))
def test_owner_hash_separates_credentials_and_users(user: str, tenant: str, cred_a: str | None, cred_b: str | None,
                                                    other_user: str) -> None:
    # Bindings are looked up under the caller's tenant; within it, the hash must separate users and the
    # SDK's credential identity (JSON text, so never a raw newline).
    cred_a = cred_a.replace("\n", " ") if cred_a else cred_a
    cred_b = cred_b.replace("\n", " ") if cred_b else cred_b
    owner = _principal(user, tenant)
    assert (owner_hash(owner, cred_a) == owner_hash(owner, cred_b)) == ((cred_a or "") == (cred_b or ""))
    if other_user != user:
        assert owner_hash(_principal(other_user, tenant), cred_a) != owner_hash(owner, cred_a)


async def test_what_has_expired_is_dropped_and_touches_keep_their_interval(db: Database) -> None:
    # Every open session used to keep its cached binding (init params and all) and its touch time until
    # 50,000 had piled up; now what can no longer be used goes, and nothing a request sees changes.
    now = [1000.0]
    store = BindingStore(db, "test-instance", idle_timeout=1800, clock=lambda: now[0])
    alice = _principal("alice")
    ids = [c * 32 for c in "abc"]
    for session_id in ids:
        await store.record(alice, session_id, owner_hash(alice, "cred"), "2025-11-25", INIT)
    for session_id in ids[:2]:
        assert await store.lookup("acme", session_id) is not None
        assert store.due_for_touch("acme", session_id)
    assert store.cached("acme", ids[0]) is not None and not store.due_for_touch("acme", ids[0])
    now[0] += 1.5
    assert await store.lookup("acme", ids[2]) is not None and store.due_for_touch("acme", ids[2])
    now[0] += 1.0  # the first two bindings were read 2.5 s ago: past BINDING_CACHE, gone
    assert store.cached("acme", ids[0]) is None and len(store._cache) == 1
    assert store.cached("acme", ids[2]) is not None
    now[0] += 56.0  # 58.5 s after the first touches: not due yet
    assert not store.due_for_touch("acme", ids[0]) and len(store._touched) == 3
    now[0] += 2.0  # 60.5 s: the first two are due again, and the third (57 s) still is not
    assert store.due_for_touch("acme", ids[0]) and store.due_for_touch("acme", ids[1])
    assert not store.due_for_touch("acme", ids[2])
    assert store.cached("acme", ids[2]) is None and len(store._cache) == 0
    # a binding read again is cached again, and found fresh
    found = await store.lookup("acme", ids[1])
    assert found is not None and store.cached("acme", ids[1]) is not None


async def test_known_ended_answers_as_the_cached_binding_would(db: Database) -> None:
    # The fast path asks `known_ended` on every request of a session of this process, in place of building
    # the aged binding `cached` returns: the two must agree in every state a binding can be in.
    now = [1000.0]
    store = BindingStore(db, "test-instance", idle_timeout=1800, clock=lambda: now[0])
    alice = _principal("alice")
    live, gone, here, unknown = (c * 32 for c in "lgxu")

    def agree(session_id: str) -> bool | None:
        binding = store.cached("acme", session_id)
        ended = store.known_ended("acme", session_id)
        assert ended == (None if binding is None else binding.ended), session_id
        return ended

    for session_id in (live, gone, here):
        await store.record(alice, session_id, owner_hash(alice, "cred"), "2025-11-25", INIT)
    await store.end("acme", gone, "client_disconnect")
    for session_id in (live, gone, here):
        assert await store.lookup("acme", session_id) is not None
    store.ended_here("acme", here)
    assert [agree(s) for s in (live, gone, here, unknown)] == [False, True, True, None]
    assert store.known_ended("globex", live) is None  # another tenant's id is not this tenant's session
    now[0] += 5.0  # past BINDING_CACHE: only what this process ended itself is still known
    assert [agree(s) for s in (live, gone, here, unknown)] == [None, None, True, None]
