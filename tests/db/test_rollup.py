"""gateway.usage_daily equals a GROUP BY over gateway.mcp_requests, however requests arrive.

Requests are written the way the tracking writer writes them: as mcp_gateway_ingest,
`INSERT ... ON CONFLICT (tenant_id, id) DO NOTHING`, in batches, retried batches included.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from gateway.store.db import _SET_IDENTITY, Database

TENANTS = {"acme": ("alice", "bob"), "globex": ("alice", "carol")}
ROLLUP_FROM_REQUESTS = """
    SELECT tenant_id, user_id, ("timestamp" AT TIME ZONE 'UTC')::date, coalesce(tool_name, ''),
           coalesce(client_type, ''), count(*), count(*) FILTER (WHERE status = 'error'),
           count(*) FILTER (WHERE status = 'denied'), sum(prompt_tokens), sum(completion_tokens),
           sum(estimated_cost), sum(duration_ms)
      FROM gateway.mcp_requests GROUP BY 1, 2, 3, 4, 5"""
ROLLUP = """
    SELECT tenant_id, user_id, day, tool_name, client_type, calls, errors, denied, prompt_tokens,
           completion_tokens, cost, duration_ms
      FROM gateway.usage_daily"""
INSERT = (
    "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status, duration_ms,"
    " prompt_tokens, completion_tokens, estimated_cost, client_type, \"timestamp\")"
    " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::float8[], %s::int[], %s::int[], %s::numeric[], %s::text[], %s::timestamptz[])"
    " ON CONFLICT (tenant_id, id) DO NOTHING")


def _sessions(admin: psycopg.Connection) -> dict[tuple[str, str], uuid.UUID]:
    sessions = {}
    for tenant, users in TENANTS.items():
        admin.execute("INSERT INTO gateway.tenants (tenant_id) VALUES (%s)", (tenant,))
        for user in users:
            admin.execute("INSERT INTO gateway.users (tenant_id, user_id) VALUES (%s, %s)", (tenant, user))
            sessions[(tenant, user)] = session = uuid.uuid4()
            admin.execute("INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, session_key)"
                          " VALUES (%s, %s, %s, %s)", (session, tenant, user, f"k/{session}"))
    return sessions


def _random_requests(rng: random.Random, sessions: dict, n: int) -> list[tuple]:
    # Around two UTC midnights, so local-time day boundaries would disagree with UTC ones.
    midnight = datetime(2026, 11, 20, tzinfo=UTC)
    out = []
    for _ in range(n):
        (tenant, user), session = rng.choice(list(sessions.items()))
        at = midnight + timedelta(days=rng.choice((0, 1)), minutes=rng.randint(-180, 180),
                                  microseconds=rng.randint(0, 999999))
        out.append((uuid.UUID(int=rng.getrandbits(128)), session, tenant, user,
                    rng.choice(("search", "fetch", "echo", None)),
                    rng.choice(("success", "success", "error", "denied")),
                    rng.randint(0, 20000) / 4, rng.randint(0, 5000), rng.randint(0, 5000),
                    Decimal(rng.randint(0, 10**6)) / Decimal(10**8), rng.choice(("claude-code", "cursor", None)), at))
    return out


def _columns(rows: list[tuple]) -> tuple[list, ...]:
    return tuple(list(col) for col in zip(*rows, strict=True))


def _assert_rollup_matches(admin: psycopg.Connection) -> None:
    expected = {r[:5]: r[5:] for r in admin.execute(ROLLUP_FROM_REQUESTS)}
    actual = {r[:5]: r[5:] for r in admin.execute(ROLLUP)}
    assert actual.keys() == expected.keys()
    for key, exp in expected.items():
        got = actual[key]
        assert got[:6] == exp[:6], key           # counts, tokens and cost: exact
        assert got[6] == pytest.approx(exp[6]), key  # float duration: summation order may differ


async def test_rollup_equals_group_by_over_requests(db: Database, admin_conn: psycopg.Connection) -> None:
    rng = random.Random(20261122)
    sessions = _sessions(admin_conn)
    written: list[tuple] = []
    for batch_no in range(6):
        batch = _random_requests(rng, sessions, 60)
        if written:  # a retried slice of earlier batches, and duplicates inside the batch
            batch += rng.sample(written, 15)
        batch += batch[:5]
        rng.shuffle(batch)
        async with db.as_system("ingest") as conn:
            # The session time zone must not matter: the day is the UTC date.
            await conn.execute("SELECT set_config('TimeZone', %s, true)",
                               (("Pacific/Kiritimati", "America/Adak", "UTC")[batch_no % 3],))
            await conn.execute(INSERT, _columns(batch))
        written += batch
        _assert_rollup_matches(admin_conn)
    unique = {r[0] for r in written}
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()[0] == len(unique)
    assert admin_conn.execute("SELECT sum(calls) FROM gateway.usage_daily").fetchone()[0] == len(unique)
    assert admin_conn.execute("SELECT count(*) FROM gateway.usage_daily WHERE tool_name = ''"
                              " OR client_type = ''").fetchone()[0] > 0  # NULLs rolled up under ''


async def test_a_duplicate_insert_is_not_double_counted(db: Database, admin_conn: psycopg.Connection) -> None:
    sessions = _sessions(admin_conn)
    request = _random_requests(random.Random(1), sessions, 1)
    for _ in range(3):  # the writer retries the same batch
        async with db.as_system("ingest") as conn:
            cur = await conn.execute(INSERT, _columns(request))
    assert cur.rowcount == 0
    assert admin_conn.execute("SELECT sum(calls) FROM gateway.usage_daily").fetchone() == (1,)
    _assert_rollup_matches(admin_conn)


def test_day_is_the_utc_date(admin_conn: psycopg.Connection, database) -> None:
    sessions = _sessions(admin_conn)
    (tenant, user), session = next(iter(sessions.items()))
    with psycopg.connect(database.urls.app, autocommit=True) as conn, conn.transaction():
        conn.execute(_SET_IDENTITY, ("mcp_gateway_ingest", "", ""))
        conn.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
        # 23:30 UTC on the 20th is already the 21st in Tokyo: the rollup day must be the 20th.
        conn.execute("INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, status, \"timestamp\")"
                     " VALUES (gen_random_uuid(), %s, %s, %s, 'error', '2026-11-20 23:30:00+00')"
                     " ON CONFLICT (tenant_id, id) DO NOTHING", (session, tenant, user))
    assert admin_conn.execute("SELECT day::text, tool_name, client_type, calls, errors FROM gateway.usage_daily"
                              ).fetchall() == [("2026-11-20", "", "", 1, 1)]


def test_concurrent_writers_keep_the_rollup_exact(admin_conn: psycopg.Connection, database) -> None:
    """Four writers at once on the same rollup keys (disjoint request ids, like replicas)."""
    sessions = _sessions(admin_conn)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(database.urls.app, autocommit=True) as conn:
                barrier.wait(timeout=30)
                for _ in range(8):
                    batch = _random_requests(rng, sessions, 40)
                    with conn.transaction():
                        conn.execute(_SET_IDENTITY, ("mcp_gateway_ingest", "", ""))
                        conn.execute(INSERT, _columns(batch))
                        conn.execute(INSERT, _columns(batch[:10]))  # a retry inside the same transaction
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert admin_conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()[0] == 4 * 8 * 40
    _assert_rollup_matches(admin_conn)
