"""What mcp-gateway adds to a tool call: the same `echo` tool, bare FastMCP vs through the gateway.

    python bench/overhead.py [--clients 1,16] [--seconds 5] [--rounds 3] [--ablate]

(a) bare: `bench.tools:bare_app` — FastMCP's `http_app(json_response=True)` under uvicorn, no auth, no tracking.
(b) gateway: `mcp-gateway serve --tools bench.tools:mcp` — personal access token, tracking to PostgreSQL,
    row-level security; JSON responses on /mcp (the default).
Both are uvicorn on 127.0.0.1, pinned to core 1 (taskset, when there are >= 2 cores); wrk is pinned to
core 0. Load: wrk with a Lua script POSTing `tools/call` (a) in the handshake era, round-robin over C
sessions opened with initialize (one per connection), and (b) as 2026-07-28 sessionless requests with
the headers `fastmcp.Client` sends (MCP-Protocol-Version, Mcp-Method, Mcp-Name, `_meta` in params).
A and B alternate within every cell and the order flips every round; figures are medians over rounds.
Server CPU per call (utime+stime of the server process / calls) is printed too: it moves less than
throughput when other work shares the machine.

Database: MCP_GATEWAY_DATABASE_URL if set (use a scratch database), else an embedded cluster in a
temporary directory. After the run the rows in gateway.mcp_requests are checked against the calls served.

--ablate adds a table: the gateway with one part at a time switched off (bench/ablate_serve.py), to show
where the added cost goes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench._harness import (
    CLIENT_CPU,
    SERVER_CPU,
    BenchDatabase,
    Proc,
    WrkResult,
    bench_database,
    cores,
    cpu_seconds,
    create_token,
    initialize_sessions,
    median,
    pin,
    require_wrk,
    run_wrk,
    settle,
    start_bare,
    start_gateway,
)

ERAS = {"handshake": "handshake (Mcp-Session-Id)", "modern": "2026-07-28 (sessionless)"}
ABLATIONS = [
    ("", "gateway, everything on"),
    ("log", "- per-call JSON log line"),
    ("track", "- tracking middleware (no records)"),
    ("access", "- access-policy middleware"),
    ("metrics", "- Prometheus ASGI wrapper"),
    ("mount", "- mounting (echo registered on the gateway)"),
    ("log,track,access,metrics,mount", "- all five (auth + routing remain)"),
]


@dataclass
class Sample:
    result: WrkResult
    cpu_us_per_call: float


def measure(proc: Proc, *, era: str, connections: int, seconds: float, token: str, sessions: list[str],
            script_dir: Path, gateway: bool) -> Sample:
    if gateway:
        settle(proc)
    before = cpu_seconds(proc.popen.pid)
    result = run_wrk(proc.url, era=era, connections=connections, seconds=seconds, token=token,
                     sessions=sessions[:connections], cpu=CLIENT_CPU, script_dir=script_dir)
    used = cpu_seconds(proc.popen.pid) - before
    return Sample(result, 1e6 * used / max(result.requests, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,16", help="comma-separated connection counts (default 1,16)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating A/B rounds (default 3)")
    parser.add_argument("--eras", default="handshake,modern")
    parser.add_argument("--ablate", action="store_true", help="also attribute the overhead to the gateway's parts")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    eras = [e for e in args.eras.split(",") if e]
    require_wrk()
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-bench-logs-"))
    started = time.monotonic()
    with bench_database() as db:
        token = create_token(db)
        bare = start_bare(logs, cpu=SERVER_CPU)
        gateway = start_gateway(db, logs, cpu=SERVER_CPU)
        served = 0
        try:
            sessions = {"bare": initialize_sessions(bare.url, max(clients), token),
                        "gateway": initialize_sessions(gateway.url, max(clients), token)}
            servers = {"bare": bare, "gateway": gateway}
            for name, proc in servers.items():  # warm-up: imports, tokenizer, pools, caches
                for era in eras:
                    warm = run_wrk(proc.url, era=era, connections=max(clients), seconds=2, token=token,
                                   sessions=sessions[name], cpu=CLIENT_CPU, script_dir=logs)
                    served += warm.requests if name == "gateway" else 0
            samples: dict[tuple[str, int, str], list[Sample]] = {}
            for rnd in range(args.rounds):
                order = ["bare", "gateway"] if rnd % 2 == 0 else ["gateway", "bare"]
                for era in eras:
                    for c in clients:
                        for name in order:
                            s = measure(servers[name], era=era, connections=c, seconds=args.seconds, token=token,
                                        sessions=sessions[name], script_dir=logs, gateway=name == "gateway")
                            samples.setdefault((era, c, name), []).append(s)
                            served += s.result.requests if name == "gateway" else 0
                            if s.result.failed:
                                print(f"warning: {name} {era} c={c}: {s.result.failed} failed calls", file=sys.stderr)
                print(f"round {rnd + 1}/{args.rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            settle(gateway)
            rows = count_rows(db)
            ablation = run_ablation(db, logs, token, args) if args.ablate else None
        finally:
            gateway.stop()
            bare.stop()
    print_report(samples, eras, clients, args, rows, served, ablation)


def count_rows(db: BenchDatabase) -> int:
    with psycopg.connect(db.admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()
        return int(row[0]) if row else 0


def run_ablation(db: BenchDatabase, logs: Path, token: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """C=16 handshake era; every variant alternates with the others each round."""
    procs: dict[str, Proc] = {}
    out: dict[str, list[Sample]] = {}
    try:
        for parts, _ in ABLATIONS:
            procs[parts] = start_gateway(db, logs, cpu=SERVER_CPU, ablate=parts or "", name=f"ablate-{parts or 'full'}")
        sessions = {parts: initialize_sessions(p.url, 16, token) for parts, p in procs.items()}
        for parts, proc in procs.items():
            run_wrk(proc.url, era="handshake", connections=16, seconds=2, token=token, sessions=sessions[parts],
                    cpu=CLIENT_CPU, script_dir=logs)
        for rnd in range(args.rounds):
            names = list(procs) if rnd % 2 == 0 else list(reversed(procs))
            for parts in names:
                out.setdefault(parts, []).append(measure(
                    procs[parts], era="handshake", connections=16, seconds=args.seconds, token=token,
                    sessions=sessions[parts], script_dir=logs, gateway=True))
            print(f"ablation round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proc in procs.values():
            proc.stop()
    return [(parts, median([s.result.rps for s in out[parts]]), median([s.cpu_us_per_call for s in out[parts]]))
            for parts, _ in ABLATIONS]


def print_report(samples: dict[tuple[str, int, str], list[Sample]], eras: list[str], clients: list[int],
                 args: argparse.Namespace, rows: int, served: int,
                 ablation: list[tuple[str, float, float]] | None) -> None:
    pinned = "server on core 1, wrk on core 0 (taskset)" if pin(0) else "not pinned"
    print(f"\nmcp-gateway overhead — echo tool, {cores()} cores, {pinned}; "
          f"{args.rounds} alternating rounds x {args.seconds:g} s, medians\n")
    head = ("| era | clients | bare req/s | gateway req/s | ratio | bare p50 ms | gateway p50 ms | added p50 ms "
            "| bare p99 ms | gateway p99 ms | added p99 ms | bare CPU us/call | gateway CPU us/call |")
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for era in eras:
        for c in clients:
            b, g = samples[(era, c, "bare")], samples[(era, c, "gateway")]
            b_rps, g_rps = median([s.result.rps for s in b]), median([s.result.rps for s in g])
            ratio = median([gs.result.rps / bs.result.rps for bs, gs in zip(b, g, strict=True) if bs.result.rps])
            b50, g50 = median([s.result.p50_ms for s in b]), median([s.result.p50_ms for s in g])
            b99, g99 = median([s.result.p99_ms for s in b]), median([s.result.p99_ms for s in g])
            bcpu, gcpu = median([s.cpu_us_per_call for s in b]), median([s.cpu_us_per_call for s in g])
            print(f"| {ERAS.get(era, era)} | {c} | {b_rps:.0f} | {g_rps:.0f} | {ratio:.2f} | {b50:.2f} | {g50:.2f} "
                  f"| {g50 - b50:+.2f} | {b99:.2f} | {g99:.2f} | {g99 - b99:+.2f} | {bcpu:.0f} | {gcpu:.0f} |")
    failed = sum(s.result.failed for v in samples.values() for s in v)
    print(f"\nfailed calls (non-200, isError, socket errors): {failed}")
    print(f"gateway rows in gateway.mcp_requests: {rows} for {served} calls wrk counted "
          f"(wrk does not count calls still in flight when it stops, so rows may exceed it by up to the "
          f"connection count per run)")
    if ablation:
        full = ablation[0]
        print("\nWhere the gateway's cost goes (handshake era, 16 clients; one part switched off at a time)\n")
        print("| variant | req/s | CPU us/call | CPU saved us/call |")
        print("|---|---|---|---|")
        for (_parts, rps, cpu), (_, label) in zip(ablation, ABLATIONS, strict=True):
            print(f"| {label} | {rps:.0f} | {cpu:.0f} | {full[2] - cpu:+.0f} |")


if __name__ == "__main__":
    main()
