"""PAT verification while PostgreSQL is away (a real cut connection): the staleness bound, expiry judged
against the clock, and "unavailable" — never a refusal — for what only the database could decide."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from auth import AuthSettings, StoreUnavailable, TokenRejected
from auth.authenticator import Authenticator
from gateway.store.db import Database, DatabaseUrls
from gateway.store.tokens import PostgresTokenStore, create_token
from tests.netproxy import CuttableProxy
from tests.pg import TestDatabase


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    authenticator: Authenticator
    proxy: CuttableProxy
    clock: Clock


@pytest.fixture
async def setup(database: TestDatabase) -> AsyncIterator[Setup]:
    proxy = CuttableProxy(database.urls.app)
    urls: DatabaseUrls = replace(database.urls, app=proxy.url_through(database.urls.app))
    db = Database(urls, min_size=1, max_size=2)
    await db.open(wait=True)
    clock = Clock()
    settings = AuthSettings(pat_cache_ttl=2, pat_outage_grace=60, store_timeout=0.5, unavailable_retry_after=7,
                            last_used_flush_interval=3600)
    authenticator = Authenticator(settings, token_store=PostgresTokenStore(db, timeout=0.5), clock=clock)
    try:
        yield Setup(authenticator, proxy, clock)
    finally:
        proxy.restore()
        await authenticator.aclose()
        await db.close()
        proxy.close()


async def test_stale_record_served_within_the_grace_then_unavailable(setup: Setup, db: Database) -> None:
    _, known = await create_token(db, tenant_id="acme", user_id="kim")
    _, unseen = await create_token(db, tenant_id="acme", user_id="una")
    assert (await setup.authenticator.authenticate(known)).user_id == "kim"
    setup.proxy.cut()
    setup.clock.now += 30  # stale, within the grace: served at once, refreshed in the background
    started = time.monotonic()
    assert (await setup.authenticator.authenticate(known)).user_id == "kim"
    assert time.monotonic() - started < 0.3
    with pytest.raises(StoreUnavailable) as info:  # never seen: only the database could say
        await setup.authenticator.authenticate(unseen)
    assert info.value.retry_after == 7
    setup.clock.now += 31  # past the grace: no longer served from the record
    with pytest.raises(StoreUnavailable):
        await setup.authenticator.authenticate(known)
    setup.proxy.restore()
    deadline = time.monotonic() + 15
    while True:  # the pool reconnects; then both are verified by the database again
        try:
            assert (await setup.authenticator.authenticate(unseen)).user_id == "una"
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "database not used again after it came back"
            await asyncio.sleep(0.1)
    assert (await setup.authenticator.authenticate(known)).user_id == "kim"


async def test_expiry_is_judged_during_an_outage(setup: Setup, db: Database) -> None:
    _, token = await create_token(db, tenant_id="acme", user_id="eve", expires_in=timedelta(seconds=2))
    assert (await setup.authenticator.authenticate(token)).user_id == "eve"
    setup.proxy.cut()
    deadline = time.monotonic() + 10
    while True:  # the record says when it expires: it stops working then, database or not
        try:
            await setup.authenticator.authenticate(token)
        except TokenRejected as exc:
            assert "expired" in exc.reason
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_malformed_and_unknown_are_still_refused(setup: Setup, db: Database) -> None:
    with pytest.raises(TokenRejected):
        await setup.authenticator.authenticate("mcpgw_" + "A" * 49)  # bad checksum: no lookup needed
    from auth.pat import generate_pat

    with pytest.raises(TokenRejected) as info:  # the database answers: unknown is a refusal
        await setup.authenticator.authenticate(generate_pat())
    assert info.value.reason == "unknown personal access token"


async def test_idle_token_revoked_is_refused_on_its_next_use(setup: Setup, db: Database) -> None:
    """Stale-while-revalidate only when the database is slow: a healthy one decides, however idle the token."""
    from gateway.store.tokens import revoke_token

    token_id, token = await create_token(db, tenant_id="acme", user_id="ida")
    assert (await setup.authenticator.authenticate(token)).user_id == "ida"
    assert await revoke_token(db, token_id)
    setup.clock.now += 50  # idle for a while (within the outage grace)
    with pytest.raises(TokenRejected) as info:
        await setup.authenticator.authenticate(token)
    assert info.value.reason == "revoked personal access token"


async def test_a_token_in_use_is_renewed_before_it_goes_stale(setup: Setup, db: Database) -> None:
    """Steady traffic never waits on the store: late in its fresh period a record is looked up again in
    the background, so it is still fresh after the period has passed, and served from memory."""
    _, token = await create_token(db, tenant_id="acme", user_id="rin")
    assert (await setup.authenticator.authenticate(token)).user_id == "rin"  # read at 1000
    setup.clock.now += 1.6  # 80% of pat_cache_ttl=2
    assert (await setup.authenticator.authenticate(token)).user_id == "rin"  # answered from memory
    setup.clock.now += 1.0  # 2.6 s after the first read: stale unless the background lookup renewed it
    await _until(lambda: setup.authenticator.known_good(token), "the record renewed in the background")


async def test_a_revocation_found_by_the_early_lookup_bites_at_once(setup: Setup, db: Database) -> None:
    from gateway.store.tokens import revoke_token

    token_id, token = await create_token(db, tenant_id="acme", user_id="rev")
    assert (await setup.authenticator.authenticate(token)).user_id == "rev"
    assert await revoke_token(db, token_id)
    setup.clock.now += 1.6  # still within its fresh period: served, and looked up again
    assert (await setup.authenticator.authenticate(token)).user_id == "rev"
    await _until(lambda: not setup.authenticator.known_good(token), "the revocation read in the background")
    with pytest.raises(TokenRejected) as info:  # no later than the fresh period, with no clock moved
        await setup.authenticator.authenticate(token)
    assert info.value.reason == "revoked personal access token"


async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
