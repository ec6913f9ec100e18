"""Calls per second of `mcp-gateway serve --workers N`, per worker count.

    python bench/workers.py [--workers 1,2] [--connections 16] [--seconds 5] [--rounds 1]

Each cell starts `serve --workers N --tools bench.tools:mcp` (not pinned: the workers need the cores),
opens C handshake-era sessions (initialize on whichever worker accepts; later requests on other workers
adopt the session, gateway/mcp/session_sharing.py) and drives `tools/call echo` on them with wrk (C
connections, round-robin over the sessions). wrk, PostgreSQL and the workers share the machine's cores,
so figures are indicative: compare the rows of one run, not runs on different machines. After each cell
the rows in gateway.mcp_requests are checked against the calls wrk saw answered.

Database: MCP_GATEWAY_DATABASE_URL if set (a scratch database), else an embedded cluster in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench._harness import (
    PY,
    bench_database,
    cores,
    create_token,
    free_port,
    initialize_sessions,
    require_wrk,
    run_wrk,
    start,
    wait_for,
)


def _rows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()
    assert row is not None  # count(*) always answers one row
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    require_wrk()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    results: dict[int, list[float]] = {n: [] for n in counts}
    failures: dict[int, int] = dict.fromkeys(counts, 0)
    with bench_database() as db, tempfile.TemporaryDirectory(prefix="mcpgw-bench-workers-") as tmp:
        token = create_token(db)
        for round_no in range(args.rounds):
            order = counts if round_no % 2 == 0 else list(reversed(counts))
            for n in order:
                port = free_port()
                env = dict(db.env, MCP_GATEWAY_PORT=str(port), MCP_GATEWAY_HOST="127.0.0.1",
                           MCP_GATEWAY_INSTANCE_ID=f"bench-{port}")
                proc = start(f"workers{n}", [PY, "-m", "gateway.cli", "serve", "--tools", "bench.tools:mcp",
                                             "--workers", str(n), "--no-migrate"], env, port, Path(tmp))
                try:
                    with psycopg.connect(db.admin_url, autocommit=True) as conn:
                        before = _rows(conn)
                        sessions = initialize_sessions(proc.url, args.connections, token)
                        result = run_wrk(proc.url, era="handshake", connections=args.connections,
                                         seconds=args.seconds, token=token, sessions=sessions, script_dir=Path(tmp))
                        served = result.requests - result.failed
                        def stored(conn: psycopg.Connection = conn, floor: int = before + served) -> bool:
                            return _rows(conn) >= floor
                        wait_for(stored, 60, "rows for every answered call")
                        rows = _rows(conn) - before
                finally:
                    code = proc.stop()
                results[n].append(result.rps)
                failures[n] += result.failed
                # rows >= answered: calls still in flight when wrk stops are served and stored too
                print(f"round {round_no + 1}: {n} worker(s): {result.rps:8.1f} calls/s  p50 {result.p50_ms:.1f} ms"
                      f"  p99 {result.p99_ms:.1f} ms  failed {result.failed}  rows {rows} (answered {served})"
                      f"  exit {code}", flush=True)
    print(f"\n{cores()} core(s) shared by wrk, PostgreSQL and the gateway; indicative figures only.")
    print(f"{'workers':>8} {'calls/s (median)':>17} {'failed':>7}")
    for n in counts:
        print(f"{n:>8} {statistics.median(results[n]):>17.1f} {failures[n]:>7}")


if __name__ == "__main__":
    main()
