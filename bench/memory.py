"""Resident memory of a gateway process holding many open handshake-era sessions.

    python bench/memory.py [--sessions 1000] [--calls-per-session 1]

Starts `mcp-gateway serve --tools bench.tools:mcp` (personal access token, tracking on), opens
`--sessions` protocol sessions with raw httpx `initialize` + `notifications/initialized` (kept open:
never DELETEd), makes `--calls-per-session` tool calls in each (so each also holds an analytics session),
and reads VmRSS from /proc/PID/status: at start, after the sessions, and per session. Goal: < 500 MB
with 1,000 sessions. Database: MCP_GATEWAY_DATABASE_URL if set, else an embedded cluster in a temporary
directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench._harness import (
    bench_database,
    call_echo,
    cores,
    create_token,
    initialize_sessions,
    rss_kb,
    settle,
    start_gateway,
    wait_for,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--calls-per-session", type=int, default=1)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-bench-logs-"))
    with bench_database() as db:
        token = create_token(db)
        # one principal holds every session here: lift the per-principal cap (default 100) above the count
        gateway = start_gateway(db, logs,
                                extra_env={"MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL": str(args.sessions + 10)})
        try:
            pid = gateway.popen.pid
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                       "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
            with httpx.Client(timeout=30) as http:
                # one warm-up session and call: imports, tokenizer and pools are not session cost (the
                # tokenizer loads at the writer's first flush, after the call: wait for it)
                warm = initialize_sessions(gateway.url, 1, token, keep_client=http)
                call_echo(http, gateway.url, token, warm[0], 2)
                settle(gateway)
                baseline = rss_kb(pid)
                t0 = time.monotonic()
                sessions = initialize_sessions(gateway.url, args.sessions, token, keep_client=http)
                opened = time.monotonic() - t0
                after_open = rss_kb(pid)
                for n, sid in enumerate(sessions):
                    for i in range(args.calls_per_session):
                        call_echo(http, gateway.url, token, sid, n * 1000 + i + 2)
                after_calls = rss_kb(pid)
                expected = (1 + args.sessions) * (1 if args.calls_per_session else 0)

                def analytics_sessions() -> int:
                    with psycopg.connect(db.admin_url) as conn:
                        row = conn.execute("SELECT count(*) FROM gateway.mcp_sessions WHERE status <> 'disconnected'")
                        return int(row.fetchone()[0])  # type: ignore[index]

                if expected:
                    wait_for(lambda: analytics_sessions() >= expected, 60, "analytics sessions to be stored")
                open_now = analytics_sessions()
                still_open = http.post(gateway.url + "/mcp", headers=headers | {"Mcp-Session-Id": sessions[0]},
                                       json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code
        finally:
            gateway.stop()
    per_session = (after_calls - baseline) / max(args.sessions, 1)
    print(f"\nmcp-gateway memory — {cores()} cores, one gateway process, {args.sessions} open handshake-era "
          f"sessions ({args.calls_per_session} echo call(s) each)\n")
    print("| moment | VmRSS MB |")
    print("|---|---|")
    print(f"| after start and one warm-up call | {baseline / 1024:.1f} |")
    print(f"| {args.sessions} sessions initialized ({opened:.1f} s) | {after_open / 1024:.1f} |")
    print(f"| ... and {args.calls_per_session} call(s) in each | {after_calls / 1024:.1f} |")
    print(f"\nper session: {per_session:.1f} KB; open analytics sessions in the database: {open_now}; "
          f"first session still answers: HTTP {still_open}. Goal: < 500 MB -> "
          f"{'met' if after_calls < 500 * 1024 else 'NOT met'}")


if __name__ == "__main__":
    main()
