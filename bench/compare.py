"""mcp-gateway side by side with bare FastMCP: one command, one table per question.

    python bench/compare.py [--clients 1,16,64] [--seconds 5] [--rounds 3] [--eras handshake,modern]
                            [--scenarios mounted,upstream] [--scenario-clients 16] [--memory 5000]

Throughput (always): the same `echo` tool served by
  bare JSON       FastMCP's `http_app(json_response=True)` under uvicorn: the baseline every ratio divides by
  bare SSE        FastMCP's default, every answer an SSE stream
  gateway         `mcp-gateway serve --tools bench.tools:mcp`: personal token, tracking, access, quotas
                  (a rate limit and a budget no call reaches), metrics and the per-call log line all on
  gateway, fast path off   the same with MCP_GATEWAY_FAST_PATH=false
for both protocol eras (handshake sessions; 2026-07-28 sessionless) and each client count. wrk drives the
load from core 0, every server runs alone on core 1 (taskset); the variants alternate within every cell
and the order turns every round; figures are medians over rounds, and "rounds' ratios" the lowest and highest
of the per-round ratios (how far a cell swings on a shared machine). CPU per call is the server process's
user+system time over the calls wrk counted; RSS is the server's VmRSS after the run. DB CPU per call (the
gateways only) is what the embedded PostgreSQL cluster used from the start of a run until the gateway's
writer had stored its last call, over the same calls: bare FastMCP stores nothing, and the cluster shares
the machine's two cores with the servers and wrk. What the cluster uses with every gateway idle (measured
for 5 s before each table) is taken off; "n/a" for a database elsewhere.

--scenarios adds: `mounted` — a user's server with its own middleware (`bench.tools:mcp_with_middleware`),
bare vs mounted in the gateway; `upstream` — the gateway fronting that bare server over HTTP (the tool is
`up_echo`) vs calling the bare server directly; each at `--scenario-clients` (16 unless told). --memory N
opens N handshake-era sessions (one call each) on bare JSON and on the gateway and reports RSS at start
and per session.

After the run the gateway's rows are counted against the calls it answered (rows == calls).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import nan
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench._harness import (
    CLIENT_CPU,
    SERVER_CPU,
    BenchDatabase,
    Proc,
    WrkResult,
    bench_database,
    call_echo,
    cluster_cpu_seconds,
    cores,
    cpu_seconds,
    create_token,
    initialize_sessions,
    median,
    pin,
    require_wrk,
    rss_kb,
    run_wrk,
    settle,
    start_bare,
    start_gateway,
)

ERAS = {"handshake": "handshake", "modern": "2026-07-28"}
# Limits every gateway variant enforces (and no benchmark call reaches): quotas cost what they cost.
CONFIG = """
[quotas]
[quotas.roles.member]
calls_per_minute = 100000000
daily_budget = 1000000.0
"""


@dataclass
class Variant:
    label: str
    proc: Proc
    gateway: bool
    tool: str = "echo"
    sessions: list[str] | None = None


@dataclass
class Sample:
    result: WrkResult
    cpu_us: float
    db_cpu_us: float | None = None  # the embedded cluster's CPU per call, for a gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eras", default="handshake,modern")
    parser.add_argument("--scenarios", default="", help="comma-separated: mounted, upstream")
    parser.add_argument("--scenario-clients", default="16", help="client counts for the scenarios' tables")
    parser.add_argument("--memory", type=int, default=0, help="open this many sessions to measure memory")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    eras = [e for e in args.eras.split(",") if e]
    scenarios = [s for s in args.scenarios.split(",") if s]
    scenario_clients = [int(c) for c in args.scenario_clients.split(",")]
    require_wrk()
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-bench-logs-"))
    config = logs / "gateway.toml"
    config.write_text(CONFIG)
    pinned = "server on core 1, wrk on core 0 (taskset)" if pin(0) else "not pinned"
    print(f"mcp-gateway vs bare FastMCP — echo tool, {cores()} cores, {pinned}; {args.rounds} rounds x "
          f"{args.seconds:g} s per cell, variants interleaved, medians; logs in {logs}\n", flush=True)
    with bench_database() as db:
        token = create_token(db)

        def gateway(name: str, tools: str = "bench.tools:mcp", **env: str) -> Proc:
            return start_gateway(db, logs, cpu=SERVER_CPU, name=name, tools=tools,
                                 extra_env={"MCP_GATEWAY_CONFIG": str(config), **env})

        procs: list[Proc] = []
        try:
            variants = [
                Variant("bare JSON", _track(procs, start_bare(logs, cpu=SERVER_CPU, name="bare-json")), False),
                Variant("bare SSE", _track(procs, start_bare(logs, cpu=SERVER_CPU, app="bench.tools:bare_sse_app",
                                                             name="bare-sse")), False),
                Variant("gateway", _track(procs, gateway("gateway")), True),
                Variant("gateway, fast path off", _track(procs, gateway("gateway-nofast",
                                                                         MCP_GATEWAY_FAST_PATH="false")), True),
            ]
            samples = run_table(variants, eras, clients, args, token, logs, db)
            print_table("Throughput", variants, samples, eras, clients, baseline="bare JSON")
            for name in scenarios:
                extra = scenario(name, db, logs, config, token, procs)
                result = run_table(extra, eras, scenario_clients, args, token, logs, db)
                print_table(f"Scenario: {name}", extra, result, eras, scenario_clients, baseline=extra[0].label)
            for proc in procs:
                if proc.name.startswith("gateway"):
                    settle(proc)
            rows = _count_rows(db)
            low, high = SERVED.counted, SERVED.counted + SERVED.uncounted_at_most
            verdict = "holds" if low <= rows <= high else "DOES NOT HOLD"
            print(f"rows == calls {verdict}: {rows} rows in gateway.mcp_requests; wrk counted {low} answered calls "
                  f"and stops each run with at most one call per connection in flight (<= {high}).\n", flush=True)
        finally:
            for proc in procs:
                proc.stop()
        if args.memory:
            memory(db, logs, token, args.memory)


def _track(procs: list[Proc], proc: Proc) -> Proc:
    procs.append(proc)
    return proc


def scenario(name: str, db: BenchDatabase, logs: Path, config: Path, token: str, procs: list[Proc]) -> list[Variant]:
    if name == "mounted":
        bare = _track(procs, start_bare(logs, cpu=SERVER_CPU, app="bench.tools:bare_middleware_app", name="bare-mw"))
        gw = _track(procs, start_gateway(db, logs, cpu=SERVER_CPU, name="gateway-mounted",
                                         tools="bench.tools:mcp_with_middleware",
                                         extra_env={"MCP_GATEWAY_CONFIG": str(config)}))
        return [Variant("bare, user's server with middleware", bare, False),
                Variant("gateway, that server mounted", gw, True)]
    if name == "upstream":
        bare = _track(procs, start_bare(logs, cpu=SERVER_CPU, name="bare-upstream"))
        up_config = config.with_name("upstream.toml")
        up_config.write_text(config.read_text() + f'\n[[upstreams]]\nname = "up"\nurl = "{bare.url}/mcp"\n')
        # The upstream shares core 1 with the gateway: both processes' CPU is the cost of a call.
        gw = _track(procs, start_gateway(db, logs, cpu=SERVER_CPU, name="gateway-upstream", tools="bench.tools:mcp",
                                         extra_env={"MCP_GATEWAY_CONFIG": str(up_config)}))
        gw.extra["also"] = str(bare.popen.pid)
        return [Variant("bare, called directly", bare, False),
                Variant("gateway, fronting it as an upstream", gw, True, tool="up_echo")]
    raise SystemExit(f"unknown scenario {name!r}: mounted, upstream")


@dataclass
class Served:
    """Calls wrk counted on gateways, and how many more may have been answered uncounted (in flight at a stop)."""

    counted: int = 0
    uncounted_at_most: int = 0

    def add(self, result: WrkResult, connections: int) -> None:
        self.counted += result.requests
        self.uncounted_at_most += connections


SERVED = Served()


def run_table(variants: list[Variant], eras: list[str], clients: list[int], args: argparse.Namespace, token: str,
              logs: Path, db: BenchDatabase) -> dict[tuple[str, int, str], list[Sample]]:
    for v in variants:
        v.sessions = initialize_sessions(v.proc.url, max(clients), token)
        for era in eras:  # warm-up: imports, tokenizer, pools, caches
            warm = run_wrk(v.proc.url, era=era, connections=max(clients), seconds=2, token=token,
                           sessions=v.sessions, cpu=CLIENT_CPU, script_dir=logs, tool=v.tool)
            if v.gateway:
                SERVED.add(warm, max(clients))
    for v in variants:
        if v.gateway:
            settle(v.proc)
    idle = cluster_idle_rate(db)
    if idle is not None:
        print(f"(PostgreSQL with every gateway idle: {1e3 * idle:.1f} ms CPU a second, taken off \"DB CPU\")\n")
    samples: dict[tuple[str, int, str], list[Sample]] = {}
    started = time.monotonic()
    for rnd in range(args.rounds):
        order = variants if rnd % 2 == 0 else list(reversed(variants))
        for era in eras:
            for c in clients:
                for v in order:
                    sample = measure(v, era, c, args.seconds, token, logs, db, idle or 0.0)
                    samples.setdefault((era, c, v.label), []).append(sample)
                    if v.gateway:
                        SERVED.add(sample.result, c)
        print(f"  round {rnd + 1}/{args.rounds} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return samples


def cluster_idle_rate(db: BenchDatabase, seconds: float = 5.0) -> float | None:
    """CPU seconds a second the cluster uses with no calls (heartbeats, the gateways' refreshes, its own
    background work): not any call's cost, and most of the cluster's CPU at a few hundred calls a second."""
    before, started = cluster_cpu_seconds(db), time.monotonic()
    if before is None:
        return None
    time.sleep(seconds)  # the interval measured, not a wait for something
    after = cluster_cpu_seconds(db)
    assert after is not None
    return (after - before) / (time.monotonic() - started)


def measure(v: Variant, era: str, connections: int, seconds: float, token: str, logs: Path,
            db: BenchDatabase, db_idle: float = 0.0) -> Sample:
    if v.gateway:
        settle(v.proc)  # what earlier runs queued is stored: it does not bill this one
    pids = [v.proc.popen.pid] + ([int(v.proc.extra["also"])] if "also" in v.proc.extra else [])
    before = sum(cpu_seconds(p) for p in pids)
    db_before, db_started = (cluster_cpu_seconds(db) if v.gateway else None), time.monotonic()
    result = run_wrk(v.proc.url, era=era, connections=connections, seconds=seconds, token=token,
                     sessions=(v.sessions or [])[:connections], cpu=CLIENT_CPU, script_dir=logs, tool=v.tool)
    used = sum(cpu_seconds(p) for p in pids) - before
    if result.failed:
        print(f"warning: {v.label} {era} c={connections}: {result.failed} failed calls", file=sys.stderr)
    calls = max(result.requests, 1)
    db_used = None
    if db_before is not None:
        settle(v.proc)  # the run's last calls stored: their inserts are the run's too
        db_after = cluster_cpu_seconds(db)
        assert db_after is not None
        db_used = 1e6 * (db_after - db_before - db_idle * (time.monotonic() - db_started)) / calls
    return Sample(result, 1e6 * used / calls, db_used)


def print_table(title: str, variants: list[Variant], samples: dict[tuple[str, int, str], list[Sample]],
                eras: list[str], clients: list[int], *, baseline: str) -> None:
    print(f"{title} (ratio: calls/s over {baseline}'s, round by round)\n")
    print("| era | clients | variant | calls/s | ratio | rounds' ratios | p50 ms | p99 ms | CPU us/call | CPU ratio "
          "| DB CPU us/call | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for era in eras:
        for c in clients:
            base = samples[(era, c, baseline)]
            for v in variants:
                s = samples[(era, c, v.label)]
                ratios = [x.result.rps / b.result.rps for x, b in zip(s, base, strict=True) if b.result.rps]
                cpu = median([x.cpu_us for x in s])
                db_cpu = [x.db_cpu_us for x in s if x.db_cpu_us is not None]
                db_column = f"{median(db_cpu):.0f}" if db_cpu else ("n/a" if v.gateway else "—")
                print(f"| {ERAS[era]} | {c} | {v.label} | {median([x.result.rps for x in s]):.0f} "
                      f"| {median(ratios):.2f} | {min(ratios, default=nan):.2f}–{max(ratios, default=nan):.2f} "
                      f"| {median([x.result.p50_ms for x in s]):.2f} | {median([x.result.p99_ms for x in s]):.2f} "
                      f"| {cpu:.0f} | {cpu / median([b.cpu_us for b in base]):.2f} | {db_column} "
                      f"| {rss_kb(v.proc.popen.pid) / 1024:.0f} |")
    failed = sum(x.result.failed for v in samples.values() for x in v)
    print(f"\nfailed calls (non-200, isError, socket errors): {failed}\n", flush=True)


def memory(db: BenchDatabase, logs: Path, token: str, count: int) -> None:
    """RSS at start and per open session, bare JSON vs the gateway (each alone, one call per session)."""
    rows = []
    starters: list[tuple[str, Callable[[], Proc]]] = [
        ("bare JSON", lambda: start_bare(logs, name="bare-mem")),
        # one principal holds every session here: lift the per-principal cap (default 100) above the count
        ("gateway", lambda: start_gateway(db, logs, name="gateway-mem",
                                          extra_env={"MCP_GATEWAY_MAX_SESSIONS_PER_PRINCIPAL": str(count + 10)})),
    ]
    for label, starter in starters:
        proc = starter()
        try:
            with httpx.Client(timeout=30) as http:
                first = initialize_sessions(proc.url, 1, token, keep_client=http)
                call_echo(http, proc.url, token, first[0], 1)
                if proc.name.startswith("gateway"):
                    settle(proc)  # its writer's first flush loads the tokenizer: start cost, not session cost
                at_start = rss_kb(proc.popen.pid)
                sessions = initialize_sessions(proc.url, count, token, keep_client=http)
                for n, sid in enumerate(sessions):
                    call_echo(http, proc.url, token, sid, n + 2)
                after = rss_kb(proc.popen.pid)
        finally:
            proc.stop()
        rows.append((label, at_start, after))
    print(f"Memory: {count} open handshake-era sessions, one echo call each\n")
    print("| server | RSS at start MB | RSS with sessions MB | per session KB | per-session ratio |")
    print("|---|---|---|---|---|")
    base_per = (rows[0][2] - rows[0][1]) / count
    for label, at_start, after in rows:
        per = (after - at_start) / count
        print(f"| {label} | {at_start / 1024:.0f} | {after / 1024:.0f} | {per:.1f} | {per / base_per:.2f} |")
    print(flush=True)


def _count_rows(db: BenchDatabase) -> int:
    with psycopg.connect(db.admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()
        return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
