"""A slow, hung or refusing database never stalls calls and never logs anyone out.

Real gateway process, real PostgreSQL, personal access tokens (the token kind that needs the database):
- a known token keeps being answered from its cached record while the token table is locked, the
  cluster is stopped (SIGSTOP) or black-holed, or the app login cannot get a connection;
- a never-seen token gets 503 + Retry-After within the configured bound, never 401 and never a hang;
- once the database answers again, a revocation is honoured within the documented bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from gateway.store.db import APP_LOGIN, Database
from gateway.store.tokens import create_token, revoke_token
from tests.gateway_proc import GatewayProcess, start_gateway
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase
from tests.pg_freeze import postmaster_pid, stopped_cluster
from tests.resilience.conftest import ACCEPT, MODERN, poll

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")
PAT_CACHE_TTL = 0.5
STORE_TIMEOUT = 1.0
RETRY_AFTER = 3
SLACK = 1.5  # scheduling on a shared two-core machine, on top of a bound
REVOCATION_BOUND = PAT_CACHE_TTL + STORE_TIMEOUT + SLACK
ENV = {"MCP_GATEWAY_PAT_CACHE_TTL": str(PAT_CACHE_TTL), "MCP_GATEWAY_STORE_TIMEOUT": str(STORE_TIMEOUT),
       "MCP_GATEWAY_UNAVAILABLE_RETRY_AFTER": str(RETRY_AFTER)}


@dataclass
class Answer:
    status: int
    retry_after: str | None
    seconds: float
    body: str


async def call(http: httpx.AsyncClient, base: str, token: str, text: str = "hi") -> Answer:
    """One sessionless (2026-07-28) tools/call of `echo`."""
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": text},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientInfo": {"name": "stall-test", "version": "1.0"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    started = time.monotonic()
    response = await http.post(base + "/mcp", headers=headers, json=body)
    return Answer(response.status_code, response.headers.get("retry-after"), time.monotonic() - started,
                  response.text[:300])


async def whoami(http: httpx.AsyncClient, base: str, token: str) -> Answer:
    started = time.monotonic()
    response = await http.get(base + "/api/me", headers={"Authorization": f"Bearer {token}"})
    return Answer(response.status_code, response.headers.get("retry-after"), time.monotonic() - started,
                  response.text[:300])


async def sse(http: httpx.AsyncClient, base: str, token: str) -> Answer:
    """The legacy SSE transport's GET: only the status line and headers are read."""
    started = time.monotonic()
    async with http.stream("GET", base + "/sse", headers={"Authorization": f"Bearer {token}",
                                                           "Accept": "text/event-stream"}) as response:
        return Answer(response.status_code, response.headers.get("retry-after"), time.monotonic() - started, "")


@dataclass
class Tokens:
    known: str        # verified before the stall
    to_revoke: str    # verified before the stall, revoked during or after it
    to_revoke_id: str
    unseen: str       # first presented during the stall


@pytest.fixture
async def tokens(db: Database) -> AsyncIterator[Tokens]:
    _, known = await create_token(db, tenant_id="acme", user_id="kim")
    revoke_id, to_revoke = await create_token(db, tenant_id="acme", user_id="rob")
    _, unseen = await create_token(db, tenant_id="acme", user_id="una")
    yield Tokens(known, to_revoke, revoke_id, unseen)


async def known_tokens_keep_working(http: httpx.AsyncClient, base: str, *tokens: str) -> list[Answer]:
    """Calls for longer than the PAT cache TTL (so the cached records are stale): every one answered."""
    answers = []
    end = time.monotonic() + PAT_CACHE_TTL + 1.0
    while time.monotonic() < end:
        for token in tokens:
            answers.append(await call(http, base, token))
    assert all(a.status == 200 and '"isError":false' in a.body for a in answers), \
        [(a.status, a.body) for a in answers if a.status != 200][:3]
    slowest = max(a.seconds for a in answers)
    assert slowest < STORE_TIMEOUT + SLACK, f"a known token waited {slowest:.2f}s on the database"
    return answers


async def unseen_token_gets_503(http: httpx.AsyncClient, base: str, token: str) -> None:
    for check in (call, whoami, sse):
        answer = await check(http, base, token)
        assert answer.status == 503, (check.__name__, answer)
        assert answer.retry_after == str(RETRY_AFTER), answer
        assert answer.seconds < STORE_TIMEOUT + SLACK, f"{check.__name__}: 503 after {answer.seconds:.2f}s"


async def until_status(http: httpx.AsyncClient, base: str, token: str, status: int, timeout: float) -> float:
    """Seconds until a call with `token` answers `status` (polling); fails after `timeout`."""
    started = time.monotonic()
    while True:
        answer = await call(http, base, token)
        if answer.status == status:
            return time.monotonic() - started
        assert answer.status in (200, 401, 503), answer  # never a 5xx other than 503, never a hang
        assert time.monotonic() - started < timeout, f"still {answer.status} after {timeout}s: {answer.body}"


async def warm(http: httpx.AsyncClient, base: str, tokens: Tokens) -> None:
    for token in (tokens.known, tokens.to_revoke):
        answer = await call(http, base, token)
        assert answer.status == 200, answer


@contextmanager
def gateway_on(database: TestDatabase, tmp_path: Path, **env: str) -> Iterator[GatewayProcess]:
    gateway = start_gateway(database, tmp_path, args=TOOLS, **ENV, **env)  # type: ignore[arg-type]
    try:
        yield gateway
    finally:
        gateway.stop()


async def test_locked_token_table(database: TestDatabase, tmp_path: Path, tokens: Tokens, db: Database) -> None:
    with gateway_on(database, tmp_path) as gateway, psycopg.connect(database.admin_url) as locker:
        async with httpx.AsyncClient(timeout=30) as http:
            await warm(http, gateway.base_url, tokens)
            locker.execute("LOCK TABLE gateway.api_tokens IN ACCESS EXCLUSIVE MODE")
            # Revoked inside the locking transaction: visible only when the lock is released.
            locker.execute("UPDATE gateway.api_tokens SET revoked_at = now() WHERE token_id = %s",
                           (tokens.to_revoke_id,))
            await known_tokens_keep_working(http, gateway.base_url, tokens.known, tokens.to_revoke)
            await unseen_token_gets_503(http, gateway.base_url, tokens.unseen)

            def lookups_waiting() -> int:
                with psycopg.connect(database.admin_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = %s AND wait_event_type = 'Lock'",
                        (f"mcp-gateway test-{gateway.port}",)).fetchone()
                return int(row[0]) if row else 0

            # The database gives the lookups up too (statement_timeout): nothing waits on the lock for ever.
            await poll(lambda: lookups_waiting() == 0, STORE_TIMEOUT + SLACK, "lookups to stop waiting")
            locker.commit()
            elapsed = await until_status(http, gateway.base_url, tokens.to_revoke, 401, REVOCATION_BOUND)
            print(f"revocation honoured {elapsed:.2f}s after the lock was released")
            await until_status(http, gateway.base_url, tokens.unseen, 200, REVOCATION_BOUND)
            assert (await call(http, gateway.base_url, tokens.known)).status == 200


async def test_one_lookup_per_token_while_locked(database: TestDatabase, tmp_path: Path, tokens: Tokens) -> None:
    """Single flight: 20 requests for one unknown token wait on one query, not 20 (nor 20 pool slots)."""
    with gateway_on(database, tmp_path) as gateway, psycopg.connect(database.admin_url) as locker:
        async with httpx.AsyncClient(timeout=30) as http:
            await warm(http, gateway.base_url, tokens)
            locker.execute("LOCK TABLE gateway.api_tokens IN ACCESS EXCLUSIVE MODE")
            calls = [asyncio.create_task(call(http, gateway.base_url, tokens.unseen)) for _ in range(20)]
            waiting: list[int] = []
            with psycopg.connect(database.admin_url, autocommit=True) as watcher:
                while not all(c.done() for c in calls):
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = %s AND wait_event_type = 'Lock'",
                        (f"mcp-gateway test-{gateway.port}",)).fetchone()
                    waiting.append(int(row[0]) if row else 0)
                    await asyncio.sleep(0.02)
            answers = [c.result() for c in calls]
            locker.rollback()
            assert {a.status for a in answers} == {503}, [a.status for a in answers]
            assert max(waiting) == 1, waiting
            assert max(a.seconds for a in answers) < STORE_TIMEOUT + SLACK
            await until_status(http, gateway.base_url, tokens.unseen, 200, REVOCATION_BOUND)


@contextmanager
def sigstopped(database: TestDatabase) -> Iterator[None]:
    postmaster = postmaster_pid(database.admin_url)
    if postmaster is None:
        pytest.skip("the PostgreSQL server does not run on this machine (use the black-hole variant)")
    with stopped_cluster(postmaster):
        yield


async def _stalled(database: TestDatabase, tmp_path: Path, tokens: Tokens, db: Database,
                   stall: Callable[[], AbstractContextManager[Any]], **env: str) -> None:
    with gateway_on(database, tmp_path, **env) as gateway:
        async with httpx.AsyncClient(timeout=30) as http:
            await warm(http, gateway.base_url, tokens)
            with stall():
                await known_tokens_keep_working(http, gateway.base_url, tokens.known, tokens.to_revoke)
                await unseen_token_gets_503(http, gateway.base_url, tokens.unseen)
                assert (await call(http, gateway.base_url, tokens.known)).status == 200
            # Resumed: a revocation now is honoured within the bound; the new token gets in.
            await revoke_token(db, tokens.to_revoke_id)
            # Lookups that were cut off while the server was stopped unwind first (psycopg's cancel).
            elapsed = await until_status(http, gateway.base_url, tokens.to_revoke, 401, REVOCATION_BOUND + 10)
            print(f"revocation honoured {elapsed:.2f}s after it was made")
            await until_status(http, gateway.base_url, tokens.unseen, 200, 20)
        assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


async def test_stopped_cluster(database: TestDatabase, tmp_path: Path, tokens: Tokens, db: Database) -> None:
    await _stalled(database, tmp_path, tokens, db, lambda: sigstopped(database))


async def test_black_holed_database(database: TestDatabase, tmp_path: Path, tokens: Tokens, db: Database) -> None:
    proxy = CuttableProxy(database.urls.app)

    @contextmanager
    def frozen() -> Iterator[None]:
        proxy.freeze()
        try:
            yield
        finally:
            proxy.thaw()

    try:
        await _stalled(database, tmp_path, tokens, db, frozen,
                       MCP_GATEWAY_APP_DATABASE_URL=proxy.url_through(database.urls.app))
    finally:
        proxy.close()


async def test_connections_refused_is_503_never_401(database: TestDatabase, tmp_path: Path, tokens: Tokens,
                                                    admin_conn: psycopg.Connection) -> None:
    with gateway_on(database, tmp_path) as gateway:
        async with httpx.AsyncClient(timeout=30) as http:
            await warm(http, gateway.base_url, tokens)
            try:
                # The app login may open no new connection ("too many connections for role"), and the
                # pool's open ones are gone: every checkout fails or times out.
                admin_conn.execute(f"ALTER ROLE {APP_LOGIN} CONNECTION LIMIT 0")
                admin_conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE datname = current_database() AND application_name = %s",
                                   (f"mcp-gateway test-{gateway.port}",))
                await known_tokens_keep_working(http, gateway.base_url, tokens.known)
                for _ in range(3):
                    await unseen_token_gets_503(http, gateway.base_url, tokens.unseen)
            finally:
                admin_conn.execute(f"ALTER ROLE {APP_LOGIN} CONNECTION LIMIT -1")
            await until_status(http, gateway.base_url, tokens.unseen, 200, 30)
