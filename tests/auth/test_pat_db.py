"""Personal access tokens in PostgreSQL: create/list/revoke, verification over HTTP, revocation seen
by another OS process within 5 seconds, coalesced last_used_at."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from auth import AuthSettings
from auth.pat import hash_pat, is_well_formed_pat
from auth.provider import GatewayAuth
from gateway.store.db import Database
from gateway.store.tokens import PostgresTokenStore, create_token, list_tokens, parse_duration, revoke_token
from tests.auth.conftest import build_app, free_port, serve, whoami_mcp
from tests.pg import TestDatabase

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def pat_gateway(db: Database) -> AsyncIterator[str]:
    gateway_auth = GatewayAuth(AuthSettings(last_used_flush_interval=0.0, pat_cache_ttl=0.5),
                               token_store=PostgresTokenStore(db))
    async with serve(build_app(gateway_auth)) as url:
        yield url
    await gateway_auth.aclose()


async def whoami_api(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {token}"})


async def test_created_token_is_accepted_and_mapped(db: Database, pat_gateway: str) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="carol", email="carol@acme.test",
                                         name="Carol", role="admin", expires_in=timedelta(days=1),
                                         token_name="laptop")
    assert is_well_formed_pat(token)
    principal = await whoami_mcp(pat_gateway, token)
    assert principal["user_id"] == "carol" and principal["tenant_id"] == "acme"
    assert principal["role"] == "admin" and principal["token_kind"] == "pat"
    assert principal["token_id"] == token_id
    assert principal["email"] == "carol@acme.test" and principal["name"] == "Carol"
    assert principal["expires_at"] is not None


async def test_store_holds_only_the_hash(db: Database, database: TestDatabase) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="dave", expires_in=None)
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute("SELECT token_hash, prefix FROM gateway.api_tokens WHERE token_id = %s",
                           (token_id,)).fetchone()
        dump = str(conn.execute("SELECT t.*, u.* FROM gateway.api_tokens t JOIN gateway.users u"
                                " USING (tenant_id, user_id)").fetchall())
    assert row is not None and bytes(row[0]) == hash_pat(token) and token.startswith(row[1])
    assert token not in dump and token[len(row[1]):] not in dump


async def test_list_never_shows_secrets(db: Database) -> None:
    _, t1 = await create_token(db, tenant_id="acme", user_id="erin", expires_in=parse_duration("30d"))
    _, t2 = await create_token(db, tenant_id="beta", user_id="frank", expires_in=None, role="auditor")
    everything = await list_tokens(db)
    assert {(t.tenant_id, t.user_id) for t in everything} == {("acme", "erin"), ("beta", "frank")}
    only_beta = await list_tokens(db, "beta")
    assert [t.role for t in only_beta] == ["auditor"]
    text = repr(everything)
    assert t1 not in text and t2 not in text and "hash" not in text


async def test_revoke(db: Database, pat_gateway: str) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="gina", expires_in=None)
    async with httpx.AsyncClient() as http:
        assert (await whoami_api(http, pat_gateway, token)).status_code == 200
        assert await revoke_token(db, token_id) is True
        assert await revoke_token(db, token_id) is False  # already revoked
        deadline = time.monotonic() + 5
        while (await whoami_api(http, pat_gateway, token)).status_code == 200:
            assert time.monotonic() < deadline, "revocation not effective within 5 s"
            await asyncio.sleep(0.1)
    with pytest.raises(ValueError):
        await revoke_token(db, "not-a-uuid")


async def test_expired_token_is_refused(db: Database, pat_gateway: str) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="hank", expires_in=timedelta(days=1))
    with psycopg.connect(db.urls.admin, autocommit=True) as admin:  # the token expired a second ago
        admin.execute("UPDATE gateway.api_tokens SET expires_at = now() - interval '1 second'"
                      " WHERE token_id = %s", (token_id,))
    async with httpx.AsyncClient() as http:
        assert (await whoami_api(http, pat_gateway, token)).status_code == 401


async def test_last_used_is_recorded_in_batches(db: Database, database: TestDatabase) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="ivy", expires_in=None)
    store = PostgresTokenStore(db)
    gateway_auth = GatewayAuth(AuthSettings(last_used_flush_interval=3600, pat_cache_ttl=0),
                               token_store=store)
    writes = 0
    original = store.mark_used

    async def counting(used: Mapping[str, datetime]) -> None:
        nonlocal writes
        writes += 1
        await original(used)

    store.mark_used = counting  # type: ignore[method-assign]
    for _ in range(20):
        assert await gateway_auth.verifier.verify_token(token) is not None
    assert writes == 0  # 20 verifications, no write yet
    await gateway_auth.aclose()  # flushes the batch
    assert writes == 1
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute("SELECT last_used_at FROM gateway.api_tokens WHERE token_id = %s", (token_id,)).fetchone()
    assert row is not None and row[0] is not None


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "d", "-1d", "0d", "1.5h", "30 days", "99999d"):
        with pytest.raises(ValueError) as info:
            parse_duration(bad)
        assert "\n" not in str(info.value)


async def test_create_rejects_bad_input(db: Database) -> None:
    with pytest.raises(ValueError):
        await create_token(db, tenant_id="acme", user_id="x", role="root", expires_in=None)
    with pytest.raises(ValueError):
        await create_token(db, tenant_id=" ", user_id="x", expires_in=None)
    assert await list_tokens(db) == []


async def test_revocation_seen_by_another_process_within_5s(db: Database, database: TestDatabase) -> None:
    token_id, token = await create_token(db, tenant_id="acme", user_id="judy", expires_in=None)
    port = free_port()
    env = {**os.environ, "MCP_GATEWAY_APP_DATABASE_URL": database.urls.app, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.auth.pat_server", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:  # wait for the process to serve, and to accept the token
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                try:
                    if (await whoami_api(http, url, token)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "second process did not come up"
                await asyncio.sleep(0.05)
            for _ in range(5):  # warm its verification cache
                assert (await whoami_api(http, url, token)).status_code == 200
            assert await revoke_token(db, token_id)
            revoked_at = time.monotonic()
            while (await whoami_api(http, url, token)).status_code == 200:
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - revoked_at
            assert elapsed < 5.0, f"revocation took {elapsed:.2f}s"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
