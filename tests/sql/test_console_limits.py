"""Console fairness and memory, on a real PostgreSQL with the real console (in process).

Fairness: one tenant flooding the console must not delay another tenant's small query by
more than 0.5 s over its own baseline, measured in the same test; time spent waiting for a
connection is not charged to a query's deadline.

Memory: measured with tracemalloc around the console's own work (streaming, converting and
rendering the JSON body), not RSS. On a 2-core machine shared with other test runs, RSS moves
by tens of MiB with allocator arenas and other threads; tracemalloc counts exactly the Python
objects the answer costs. What it does not see is libpq's buffer, which holds one row at a
time (single-row mode), and a row is bounded by the value cap × the number of columns.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc

import psycopg
import pytest

from gateway.mcp.console_slots import FairSlots, SlotsBusy
from gateway.mcp.sqlconsole import ConsoleBusy, ConsoleLimits, SqlConsole
from gateway.store.db import Database
from tests.pg import TestDatabase

A, B, C = "acme", "globex", "initech"
SMALL = "SELECT count(*) FROM gateway.users"
FLOOD = "SELECT count(*) FROM generate_series(1, 2000000) g WHERE g % 7 = 3"


@pytest.fixture
def seeded(database: TestDatabase) -> TestDatabase:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for tenant in (A, B, C):
            conn.execute("INSERT INTO gateway.tenants (tenant_id) VALUES (%s)", (tenant,))
            conn.execute("INSERT INTO gateway.users (tenant_id, user_id, role) VALUES (%s, 'u', 'admin')", (tenant,))
    return database


async def _timed(console: SqlConsole, tenant: str, sql: str) -> float:
    started = time.monotonic()
    result = await console.execute_scoped(tenant, sql)
    assert result.rows == [[1]] or sql == FLOOD
    return time.monotonic() - started


async def test_a_flooding_tenant_does_not_starve_another(seeded: TestDatabase, db: Database) -> None:
    console = SqlConsole(seeded.urls, db, limits=ConsoleLimits(deadline=60, slots=4, slots_per_tenant=2,
                                                               queue_per_tenant=100))
    await _timed(console, B, SMALL)  # warm up (key, guard)
    baseline = max(statistics.median([await _timed(console, B, SMALL) for _ in range(3)]), 0.01)

    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            await console.execute_scoped(A, FLOOD)

    flooders = [asyncio.create_task(flood()) for _ in range(12)]
    try:
        deadline = time.monotonic() + 30
        while console.slots.waiting(("tenant", A)) < 5:  # A holds its share and queues behind itself
            assert time.monotonic() < deadline, "the flood never filled the console"
            await asyncio.sleep(0.01)
        assert console.slots.running(("tenant", A)) == 2
        during = [await _timed(console, B, SMALL) for _ in range(3)]
        other = await _timed(console, C, SMALL)
    finally:
        stop.set()
        await asyncio.gather(*flooders, return_exceptions=True)
    assert max(during) <= baseline + 0.5, f"baseline {baseline:.3f}s, during the flood {during}"
    assert other <= baseline + 0.5, f"baseline {baseline:.3f}s, a third tenant {other:.3f}s"


async def test_time_queued_is_not_charged_to_the_deadline(seeded: TestDatabase, db: Database) -> None:
    console = SqlConsole(seeded.urls, db, limits=ConsoleLimits(deadline=0.5, slots=1, slots_per_tenant=1))
    await console.execute_scoped(B, SMALL)
    async with console.slots.slot(("tenant", A)):  # A holds the only connection...
        waiting = asyncio.create_task(console.execute_scoped(B, SMALL))
        while console.slots.waiting(("tenant", B)) == 0:
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)  # ...for twice B's deadline
    result = await waiting  # B's query then runs with its whole deadline
    assert result.rows == [[1]]


async def test_a_tenant_with_too_many_queued_queries_is_told_busy(seeded: TestDatabase, db: Database) -> None:
    console = SqlConsole(seeded.urls, db, limits=ConsoleLimits(slots=1, slots_per_tenant=1, queue_per_tenant=1,
                                                               queue_timeout=5))
    async with console.slots.slot(("tenant", A)):
        first = asyncio.create_task(console.execute_scoped(A, SMALL))
        while console.slots.waiting(("tenant", A)) == 0:
            await asyncio.sleep(0.005)
        with pytest.raises(ConsoleBusy, match="already waiting"):
            await console.execute_scoped(A, SMALL)
    assert (await first).rows == [[1]]


async def test_free_slots_go_round_robin_and_respect_shares() -> None:
    slots = FairSlots(total=2, per_key=2, queue_per_key=10)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(key: str) -> None:
        async with slots.slot(key):
            order.append(key)
            await gate.wait()

    holders = [asyncio.create_task(job("a")), asyncio.create_task(job("a"))]
    await asyncio.sleep(0)
    queued = [asyncio.create_task(job(k)) for k in ("a", "a", "a", "b", "c")]
    await asyncio.sleep(0)
    assert slots.running("a") == 2 and slots.waiting("a") == 3
    gate.set()
    await asyncio.gather(*holders, *queued)
    assert order[:2] == ["a", "a"]
    assert order[2:5] == ["a", "b", "c"] or sorted(order[2:5]) == ["a", "b", "c"]
    assert order.index("b") < 5 and order.index("c") < 5  # b and c did not wait for all of a's queue
    with pytest.raises(ValueError):
        FairSlots(total=0, per_key=1, queue_per_key=1)


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = FairSlots(total=1, per_key=1, queue_per_key=5)
    async with slots.slot("a"):
        waiter = asyncio.create_task(slots.slot("b").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.waiting("b") == 0
    async with slots.slot("c"):
        assert slots.running("c") == 1
    with pytest.raises(SlotsBusy):
        async with slots.slot("x", timeout=0.01):
            async with slots.slot("y", timeout=0.05):
                pass


BUDGET = 2 * 1024 * 1024
MEMORY_QUERIES = [
    "SELECT repeat('x', 1000) || g FROM generate_series(1, 200000) g",            # many medium rows
    "SELECT g, g * 2, g::text, now(), g::numeric / 3 FROM generate_series(1, 1000000) g",  # many small values
    "SELECT repeat('y', 50000000)",                                                # one huge value
    "SELECT repeat(chr(1), 100000) FROM generate_series(1, 200)",                  # JSON escapes 6x
    "SELECT jsonb_build_object('k', repeat('z', 5000), 'n', g) FROM generate_series(1, 20000) g",
    "SELECT array_agg(g) FROM generate_series(1, 3000000) g",                      # one big array
]


@pytest.mark.parametrize("sql", MEMORY_QUERIES)
async def test_an_answer_costs_at_most_twice_its_byte_budget(seeded: TestDatabase, db: Database, sql: str) -> None:
    console = SqlConsole(seeded.urls, db, limits=ConsoleLimits(byte_budget=BUDGET, value_cap=256 * 1024,
                                                               row_cap=1_000_000, deadline=60))
    await console.execute_scoped(A, SMALL)  # warm up: key, adapters, guard
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = await console.execute_scoped(A, sql)
        body = result.json_body()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert result.truncated is True
    assert len(body) <= BUDGET
    assert peak <= 2 * BUDGET, f"peak {peak / 1024 / 1024:.1f} MiB for a {BUDGET / 1024 / 1024:.0f} MiB budget"
