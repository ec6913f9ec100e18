"""CPU per proxied call: the gateway fronting a bare FastMCP server as an HTTP upstream.

    python bench/upstream_cpu.py [--seconds 5] [--clients 16] [--rounds 2] [--direct on,off] [--era handshake]

Starts one bare FastMCP server (`bench.tools:bare_app`, JSON responses) and, for each `--direct` value, a gateway
with that server configured twice: `up` (protocol "auto": the 2026-07-28 era, sessionless) and `upl` (protocol
"legacy": a handshake-era session). wrk posts `tools/call` for `up_echo` / `upl_echo` (and `echo` straight at
the bare server, the baseline); every server runs on core 1, wrk on core 0. Reported per call: the gateway
process's CPU, the upstream process's CPU, and calls/s. CPU is read from /proc/PID/stat around each run,
so it needs no load-generator accounting and is robust on a shared machine (wall-clock rates are not).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    CLIENT_CPU,
    SERVER_CPU,
    Proc,
    bench_database,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--direct", default="on,off",
                        help="comma-separated: on, off (MCP_GATEWAY_UPSTREAM_DIRECT_CALLS)")
    parser.add_argument("--era", default="handshake", help="the callers' era at the gateway: handshake | modern")
    args = parser.parse_args()
    require_wrk()
    era = {"handshake": "handshake", "modern": "2026-07-28"}[args.era]
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-bench-upcpu-"))
    pinned = "servers on core 1, wrk on core 0" if pin(0) else "not pinned"
    print(f"upstream CPU per call — echo, {args.clients} clients, {args.rounds} x {args.seconds:g} s, {pinned};"
          f" logs in {logs}\n", flush=True)
    procs: list[Proc] = []
    with bench_database() as db:
        token = create_token(db)
        try:
            bare = start_bare(logs, cpu=SERVER_CPU, name="bare-upstream")
            procs.append(bare)
            config = logs / "gateway.toml"
            config.write_text("[quotas]\n[quotas.roles.member]\ncalls_per_minute = 100000000\n\n"
                              f'[[upstreams]]\nname = "up"\nurl = "{bare.url}/mcp"\n\n'
                              f'[[upstreams]]\nname = "upl"\nurl = "{bare.url}/mcp"\nprotocol = "legacy"\n')
            gateways = {}
            for direct in [v for v in args.direct.split(",") if v]:
                gw = start_gateway(db, logs, cpu=SERVER_CPU, name=f"gateway-direct-{direct}",
                                   extra_env={"MCP_GATEWAY_CONFIG": str(config), "MCP_GATEWAY_UPSTREAM_DIRECT_CALLS":
                                              "true" if direct == "on" else "false"})
                procs.append(gw)
                gateways[direct] = gw
            cells: list[tuple[str, Proc, str, bool]] = [("bare, called directly", bare, "echo", False)]
            for direct, gw in gateways.items():
                cells += [(f"gateway, direct calls {direct}, upstream 2026-07-28", gw, "up_echo", True),
                          (f"gateway, direct calls {direct}, upstream handshake", gw, "upl_echo", True)]
            sessions = {id(p): initialize_sessions(p.url, args.clients, "" if p is bare else token)
                        for p in {id(p): p for _, p, _, _ in cells}.values()}
            results: dict[str, list[tuple[float, float, float]]] = {label: [] for label, *_ in cells}
            for _label, proc, tool, is_gw in cells:  # warm-up: imports, listings, pools
                run_wrk(proc.url, era=era, connections=args.clients, seconds=2, token=token if is_gw else "",
                        sessions=sessions[id(proc)], cpu=CLIENT_CPU, script_dir=logs, tool=tool)
            for rnd in range(args.rounds):
                for label, proc, tool, is_gw in (cells if rnd % 2 == 0 else list(reversed(cells))):
                    if is_gw:
                        settle(proc)
                    before = cpu_seconds(proc.popen.pid), cpu_seconds(bare.popen.pid)
                    result = run_wrk(proc.url, era=era, connections=args.clients, seconds=args.seconds,
                                     token=token if is_gw else "", sessions=sessions[id(proc)], cpu=CLIENT_CPU,
                                     script_dir=logs, tool=tool)
                    after = cpu_seconds(proc.popen.pid), cpu_seconds(bare.popen.pid)
                    if result.failed or not result.requests:
                        raise SystemExit(f"{label}: {result.failed} failed calls of {result.requests}")
                    calls = result.requests
                    own = (after[0] - before[0]) / calls * 1e3
                    upstream = (after[1] - before[1]) / calls * 1e3 if is_gw else own
                    results[label].append((result.rps, own if is_gw else 0.0, upstream))
            print(f"{'':50} {'calls/s':>8} {'gateway ms CPU/call':>20} {'upstream ms CPU/call':>21}")
            for label, rows in results.items():
                print(f"{label:50} {median([r[0] for r in rows]):8.0f} {median([r[1] for r in rows]):20.2f}"
                      f" {median([r[2] for r in rows]):21.2f}")
        finally:
            for proc in procs:
                proc.stop()


if __name__ == "__main__":
    main()
