"""How many tracking records per second the writer puts into PostgreSQL.

    python bench/ingest.py [--records 200000] [--users 200] [--repeat 3]

Drives `gateway.tracking.writer.TrackingWriter.submit()` at full speed with synthetic `ToolCalled` records
(`--users` principals, one analytics session each, small JSON arguments and results so token counting
and cost run as in production) against a real, migrated database — the same code path, pool, login
(mcp_gateway_app as the ingest role) and row-level security the gateway uses. The producer keeps at
most `--window` records queued (the gateway's queue never exceeds what calls produce), so the figure is
what the writer sustains, not how fast a deque grows. rows/s = records / (time from first submit until
the last one is committed). A second line gives the writer's own CPU per record (this process's CPU
minus the producer's, measured separately).

Database: MCP_GATEWAY_DATABASE_URL if set (a scratch database), else an embedded cluster in a temporary
directory (fsync on: its defaults). Goal: >= 20,000 records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench._harness import bench_database, cores
from gateway.settings import Settings
from gateway.store.db import Database, resolve_urls
from gateway.tracking.middleware import session_key
from gateway.tracking.records import SessionOpened, ToolCalled
from gateway.tracking.writer import TrackingWriter, utcnow


def make_records(n: int, users: int) -> tuple[list[SessionOpened], list[ToolCalled]]:
    sessions = []
    for u in range(users):
        sessions.append(SessionOpened(
            session_id=uuid.uuid4(), session_key=session_key(f"t{u % 10}", f"user{u}", "client", "bench", "1"),
            tenant_id=f"t{u % 10}",
            user_id=f"user{u}", user_email=f"user{u}@example.com", user_name=f"User {u}", user_role="member",
            client_type="bench", client_version="1", protocol_version="2026-07-28", transport="streamable-http",
            mcp_session_id=None, at=utcnow()))
    calls = []
    for i in range(n):
        s = sessions[i % users]
        calls.append(ToolCalled(
            id=uuid.uuid4(), session_id=s.session_id, session_key=s.session_key, tenant_id=s.tenant_id,
            user_id=s.user_id, tool_name=("echo", "search_docs", "add")[i % 3], status="success" if i % 50 else "error",
            error_message=None if i % 50 else "ToolError: boom", duration_ms=1.5 + (i % 7), at=utcnow(),
            client_type="bench", arguments={"text": f"hello number {i}", "limit": 10},
            result_text=f"result text for call {i}: the quick brown fox jumps over the lazy dog"))
    return sessions, calls


async def run_once(urls, records: int, users: int, window: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    sessions, calls = make_records(records, users)
    db = Database(urls, min_size=2, max_size=4, application_name="mcp-gateway bench-ingest")
    await db.open(wait=True)
    writer = TrackingWriter(db, instance_id=f"bench-ingest-{uuid.uuid4().hex[:6]}", flush_interval=1.0,
                            flush_rows=2000, queue_max=10 * window + records, spill_dir=None)
    await writer.start()
    try:
        for s in sessions:
            writer.submit(s)
        cpu0, t0 = time.process_time(), time.perf_counter()
        produce_cpu = 0.0
        i = 0
        while i < records:
            if writer.backlog < window:
                p0 = time.process_time()
                end = min(records, i + 1000)
                for record in calls[i:end]:
                    writer.submit(record)
                i = end
                produce_cpu += time.process_time() - p0
            await asyncio.sleep(0)
        deadline = time.monotonic() + 300
        while writer.stats.written < records:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {writer.stats.written}/{records} written in 300 s: {writer.stats}")
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await writer.stop()
        await db.close()
    # Only this run's rows: the database may hold earlier runs' (and, with MCP_GATEWAY_DATABASE_URL,
    # earlier invocations') rows, which a table-wide count would add to this run's.
    async with await psycopg.AsyncConnection.connect(urls.admin) as conn:
        cur = await conn.execute("SELECT count(*), count(DISTINCT id) FROM gateway.mcp_requests"
                                 " WHERE session_id = ANY(%s)", ([s.session_id for s in sessions],))
        stored, distinct = await cur.fetchone() or (0, 0)
    return {"rows_per_s": records / elapsed, "seconds": elapsed, "flushes": writer.stats.flushes,
            "writer_cpu_us": 1e6 * (cpu - produce_cpu) / records, "batch": records / max(writer.stats.flushes, 1),
            "submitted": records, "written": writer.stats.written, "stored": stored, "distinct": distinct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--window", type=int, default=20_000, help="most records queued at once (default 20000)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    with bench_database() as db:
        settings = Settings(data_dir=db.data_dir, database_url=db.env.get("MCP_GATEWAY_DATABASE_URL"))
        urls = resolve_urls(settings)
        for n in range(args.repeat):
            results.append(asyncio.run(run_once(urls, args.records, args.users, args.window)))
            print(f"run {n + 1}/{args.repeat}: {results[-1]['rows_per_s']:.0f} rows/s", file=sys.stderr)
    print(f"\nmcp-gateway tracking ingest — {cores()} cores (writer, producer and PostgreSQL share them), "
          f"{args.records} records x {args.repeat} runs, {args.users} users\n")
    print("| run | records/s | seconds | flushes | records/flush | writer CPU us/record | submitted | written "
          "| stored (distinct) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(results, 1):
        print(f"| {n} | {r['rows_per_s']:.0f} | {r['seconds']:.2f} | {r['flushes']:.0f} | {r['batch']:.0f} "
              f"| {r['writer_cpu_us']:.1f} | {r['submitted']} | {r['written']} | {r['stored']} ({r['distinct']}) |")
    best = statistics.median(r["rows_per_s"] for r in results)
    print(f"\nmedian {best:.0f} records/s (goal >= 20,000); each run's rows counted by its own sessions")
    wrong = [n for n, r in enumerate(results, 1)
             if not r["submitted"] == r["written"] == r["stored"] == r["distinct"]]
    if wrong:
        sys.exit(f"ingest: rows written/stored differ from the records submitted in run(s) {wrong}")


if __name__ == "__main__":
    main()
