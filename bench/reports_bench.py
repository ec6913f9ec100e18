"""Cost-report benchmark: 10 million request rows, 50 tenants x 20 users.

    python bench/reports_bench.py [--rows 10000000] [--runs 30] [--keep]

Runs against MCP_GATEWAY_DATABASE_URL, or the embedded cluster in MCP_GATEWAY_DATA_DIR
(started if needed). It creates its own database `mcp_gateway_bench` on that server
(dropped at the end unless --keep; reused, without reloading, when kept with the same
row count), migrates it, loads sessions and requests with INSERT ... SELECT
generate_series in batches (the rollup trigger fills gateway.usage_daily per statement),
then times, as a tenant admin under row-level security (Database.as_principal):

  rollup   gateway.store.reports.cost_report(group_by="user", since="30d")  (reads usage_daily)
  raw      the same per-user report computed from gateway.mcp_requests

and prints p50/p95 of each and the ratio. Target: rollup p50 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auth import Principal
from gateway.settings import Settings
from gateway.store.db import APP_LOGIN, CONSOLE_LOGIN, Database, DatabaseUrls, resolve_urls, url_password, with_user
from gateway.store.migrate import migrate
from gateway.store.reports import cost_report, resolve_range

BENCH_DB = "mcp_gateway_bench"
TENANTS = 50
USERS = 20
SESSIONS_PER_USER = 30
DAYS = 90            # requests spread over the last 90 days: a 30-day report reads a third
BATCH = 1_000_000

RAW_REPORT = (
    "SELECT tenant_id, user_id, count(*), count(*) FILTER (WHERE status = 'error'),"
    " count(*) FILTER (WHERE status = 'denied'), sum(prompt_tokens), sum(completion_tokens),"
    " sum(prompt_tokens) + sum(completion_tokens), sum(estimated_cost)"
    " FROM gateway.mcp_requests WHERE \"timestamp\" >= %s AND \"timestamp\" < %s"
    " GROUP BY tenant_id, user_id ORDER BY 9 DESC, tenant_id, user_id"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_database(admin_url: str, rows: int, keep: bool) -> tuple[str, bool]:
    """Create (or reuse) the bench database; returns (its admin URL, needs_load)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone()
        if exists and keep:
            bench_url = with_user(admin_url, _user_of(admin_url), dbname=BENCH_DB)
            try:
                with psycopg.connect(bench_url, autocommit=True) as bench:
                    count = bench.execute("SELECT sum(calls) FROM gateway.usage_daily").fetchone()
                if count and count[0] == rows:
                    log(f"reusing {BENCH_DB} ({rows:,} rows already loaded)")
                    return bench_url, False
            except psycopg.Error:
                pass
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    return with_user(admin_url, _user_of(admin_url), dbname=BENCH_DB), True


def _user_of(url: str) -> str:
    import getpass

    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(url).get("user") or getpass.getuser())


def load(bench_url: str, rows: int) -> float:
    started = time.monotonic()
    with psycopg.connect(bench_url, autocommit=True) as conn:
        conn.execute("INSERT INTO gateway.tenants (tenant_id, name)"
                     " SELECT format('t%%s', lpad(t::text, 2, '0')), format('Tenant %%s', t)"
                     " FROM generate_series(0, %s) t", (TENANTS - 1,))
        conn.execute("INSERT INTO gateway.users (tenant_id, user_id, email, role)"
                     " SELECT format('t%%s', lpad(t::text, 2, '0')), format('u%%s', lpad(u::text, 2, '0')),"
                     " format('u%%s@t%%s.example', u, t), CASE WHEN u = 0 THEN 'admin' ELSE 'member' END"
                     " FROM generate_series(0, %s) t, generate_series(0, %s) u", (TENANTS - 1, USERS - 1))
        conn.execute(
            "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, client_type, client_version,"
            " protocol_version, transport, status, connected_at, last_activity, disconnected_at, total_duration,"
            " disconnect_reason, session_key)"
            " SELECT md5(format('s/%%s/%%s/%%s', t, u, k))::uuid, format('t%%s', lpad(t::text, 2, '0')),"
            " format('u%%s', lpad(u::text, 2, '0')), (ARRAY['claude-code','cursor','vscode'])[1 + k %% 3], '1.0',"
            " '2025-11-25', 'streamable-http', 'disconnected',"
            " now() - (k * 3 + 3) * interval '1 day', now() - (k * 3) * interval '1 day',"
            " now() - (k * 3) * interval '1 day', 3 * 86400, 'client_disconnect', format('bench/%%s/%%s/%%s', t, u, k)"
            " FROM generate_series(0, %s) t, generate_series(0, %s) u, generate_series(0, %s) k",
            (TENANTS - 1, USERS - 1, SESSIONS_PER_USER - 1))
        done = 0
        while done < rows:
            n = min(BATCH, rows - done)
            t0 = time.monotonic()
            # Row i: tenant i % 50, user (i / 50) % 20, in time order (oldest first, as a gateway writes
            # them) over DAYS days; its session is the one of that user whose 3-day window holds it.
            conn.execute(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, method, tool_name, status,"
                " duration_ms, prompt_tokens, completion_tokens, estimated_cost, client_type, \"timestamp\")"
                " SELECT md5('r' || i)::uuid,"
                "  md5(format('s/%%s/%%s/%%s', i %% 50, (i / 50) %% 20, least(age_s / 259200, 29)))::uuid,"
                "  format('t%%s', lpad((i %% 50)::text, 2, '0')), format('u%%s', lpad(((i / 50) %% 20)::text, 2, '0')),"
                "  'tools/call', 'tool_' || (i %% 12),"
                "  CASE WHEN i %% 50 = 7 THEN 'error' WHEN i %% 97 = 3 THEN 'denied' ELSE 'success' END,"
                "  (i %% 500)::float8, (i %% 1000)::int, (i %% 300)::int, ((i %% 1000) * 0.000003)::numeric(18, 8),"
                "  (ARRAY['claude-code','cursor','vscode'])[1 + least(age_s / 259200, 29) %% 3],"
                "  now() - age_s * interval '1 second'"
                " FROM (SELECT i, 30 + ((%s - 1 - i) * (%s * 86400 - 60)) / %s AS age_s"
                "       FROM generate_series(%s::bigint, %s::bigint) i) g",
                (rows, DAYS, rows, done, done + n - 1))
            done += n
            log(f"  loaded {done:,}/{rows:,} requests ({time.monotonic() - t0:.1f} s for this batch)")
        conn.execute("ANALYZE")
    return time.monotonic() - started


async def measure(urls: DatabaseUrls, runs: int) -> dict[str, list[float]]:
    admin = Principal(user_id="u00", tenant_id="t07", role="admin", token_kind="pat")
    auditor = Principal(user_id="audit", tenant_id="t00", role="auditor", token_kind="pat")
    first, last = resolve_range("30d", None)
    timings: dict[str, list[float]] = {"rollup": [], "raw": [], "rollup_auditor": []}
    async with Database(urls, min_size=1, max_size=2) as db:
        await db.pool.wait(timeout=30)
        checked = False
        for i in range(runs + 2):  # two warm-up rounds
            t0 = time.perf_counter()
            report = await cost_report(db, admin, since=first, until=last, group_by="user")
            t1 = time.perf_counter()
            async with db.as_principal(admin) as conn:
                raw = await (await conn.execute(
                    RAW_REPORT, (first.isoformat() + "T00:00:00Z", last.isoformat() + "T23:59:59.999999Z"))).fetchall()
            t2 = time.perf_counter()
            await cost_report(db, auditor, since=first, until=last, group_by="user")
            t3 = time.perf_counter()
            if not checked:
                rolled = {(r["tenant_id"], r["user_id"]): (r["calls"], r["cost"]) for r in report.rows}
                direct = {(r[0], r[1]): (r[2], f"{r[8]:.8f}") for r in raw}
                assert rolled == direct, "rollup and raw reports differ"
                assert {k[0] for k in rolled} == {"t07"}, "RLS: a tenant admin saw another tenant"
                checked = True
            if i >= 2:
                timings["rollup"].append((t1 - t0) * 1000)
                timings["raw"].append((t2 - t1) * 1000)
                timings["rollup_auditor"].append((t3 - t2) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help=f"keep (and reuse) the {BENCH_DB} database")
    args = parser.parse_args()
    settings = Settings()
    base = resolve_urls(settings)
    password = url_password(base.admin)
    bench_url, needs_load = prepare_database(base.admin, args.rows, args.keep)
    urls = DatabaseUrls(admin=bench_url, app=with_user(bench_url, APP_LOGIN, password),
                        console=with_user(bench_url, CONSOLE_LOGIN, password), derived_logins=True,
                        embedded=base.embedded)
    try:
        load_seconds = None
        if needs_load:
            migrate(bench_url, login_password=password if base.derived_logins else None)
            log(f"loading {args.rows:,} requests ({TENANTS} tenants x {USERS} users) ...")
            load_seconds = load(bench_url, args.rows)
        with psycopg.connect(bench_url, autocommit=True) as conn:
            counts = conn.execute("SELECT (SELECT count(*) FROM gateway.mcp_requests),"
                                  " (SELECT sum(calls) FROM gateway.usage_daily),"
                                  " (SELECT count(*) FROM gateway.usage_daily)").fetchone()
        assert counts is not None
        timings = asyncio.run(measure(urls, args.runs))
    finally:
        if not args.keep:
            with psycopg.connect(base.admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    rollup50, raw50 = statistics.median(timings["rollup"]), statistics.median(timings["raw"])
    print()
    print(f"requests: {counts[0]:,}   usage_daily rows: {counts[2]:,}   rollup calls: {int(counts[1]):,}"
          + (f"   load: {load_seconds:.0f} s" if load_seconds is not None else ""))
    print(f"30-day per-user cost report, tenant admin of t07 under RLS, {args.runs} runs:")
    print(f"{'query':<34}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'rollup (gateway.usage_daily)':<34}{rollup50:>10.1f}{p(timings['rollup'], 0.95):>10.1f}")
    print(f"{'raw (gateway.mcp_requests)':<34}{raw50:>10.1f}{p(timings['raw'], 0.95):>10.1f}")
    print(f"{'rollup, auditor (all 50 tenants)':<34}{statistics.median(timings['rollup_auditor']):>10.1f}"
          f"{p(timings['rollup_auditor'], 0.95):>10.1f}")
    print(f"raw / rollup (p50): {raw50 / rollup50:.0f}x   target rollup p50 < 100 ms: "
          f"{'met' if rollup50 < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
