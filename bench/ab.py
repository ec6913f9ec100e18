"""This checkout's gateway against another revision's, both against bare FastMCP, in fresh process sets.

    python bench/ab.py BASE [--sets 3] [--rounds 2] [--clients 1,16] [--seconds 5] [--era handshake]
                            [--quotas none|both|head] [--tools bench.tools:mcp] [--response json|sse] [--upstream]

BASE is any git revision with the same migrations (e.g. `HEAD~2`); it is checked out in a temporary
worktree. Two gateway processes of the same code can differ by up to ~20%, and on a shared machine one
5-second window from the next by 10-15%, so one pair of processes is not an A/B: each of the `--sets`
starts a new bare server, a new gateway of BASE and a new gateway of this checkout, measures them
interleaved for `--rounds` rounds (order turned every round), and stops them. Figures are medians over
every set and round; "ratio" is calls/s over bare JSON's in the same round; "CPU vs BASE" compares CPU
per call. `--quotas both` gives both gateways compare.py's quota configuration (a rate limit and a budget
no call reaches), `--quotas head` only this checkout's (with BASE = HEAD: what the quotas cost), the
default none. `--response sse` runs both gateways with SSE responses (MCP_GATEWAY_JSON_RESPONSE=false; the
baseline stays bare JSON); `--upstream` configures one more bare FastMCP server as an upstream of both (its
tools unused by the calls), and counts its CPU in each gateway's. Same pinning as compare.py: servers on
core 1, wrk on core 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    CLIENT_CPU,
    REPO,
    SERVER_CPU,
    Proc,
    bench_database,
    create_token,
    initialize_sessions,
    median,
    require_wrk,
    run_wrk,
    start_bare,
    start_gateway,
)
from bench.compare import CONFIG, ERAS, Variant, measure


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="mcpgw-ab-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), revision], check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="git revision to compare against (same migrations)")
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--era", default="handshake", choices=sorted(ERAS))
    parser.add_argument("--quotas", default="none", choices=["none", "both", "head"],
                        help="which gateways get compare.py's quota configuration")
    parser.add_argument("--tools", default="bench.tools:mcp")
    parser.add_argument("--response", default="json", choices=["json", "sse"], help="the gateways' response mode")
    parser.add_argument("--upstream", action="store_true", help="an upstream configured in both gateways")
    args = parser.parse_args()
    args.era = ERAS[args.era]
    clients = [int(c) for c in args.clients.split(",")]
    require_wrk()
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-ab-logs-"))
    with_quotas, without = logs / "quotas.toml", logs / "none.toml"
    with_quotas.write_text(CONFIG)
    without.write_text("")
    base_config = with_quotas if args.quotas == "both" else without
    head_config = with_quotas if args.quotas in ("both", "head") else without
    mode = {"MCP_GATEWAY_JSON_RESPONSE": "false"} if args.response == "sse" else {}
    print(f"{args.base} vs this checkout, each against bare JSON: {args.sets} process sets x {args.rounds} rounds x "
          f"{args.seconds:g} s, {args.era} era, quotas: {args.quotas}, {args.response} responses"
          f"{', an upstream configured' if args.upstream else ''}; logs in {logs}\n", flush=True)
    labels = ["bare JSON", f"gateway {args.base}", "gateway (this checkout)"]
    rps: dict[tuple[int, str], list[float]] = {}
    ratio: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    started = time.monotonic()
    with bench_database() as db, worktree(args.base) as base:
        token = create_token(db)
        for n in range(args.sets):
            procs: list[Proc] = []
            upstream: Proc | None = None
            try:
                procs.append(start_bare(logs, cpu=SERVER_CPU, name="bare"))
                configs = base_config, head_config
                if args.upstream:
                    upstream = start_bare(logs, cpu=SERVER_CPU, name="upstream")
                    configs = (_with_upstream(base_config, upstream, logs / "base-upstream.toml"),
                               _with_upstream(head_config, upstream, logs / "head-upstream.toml"))
                procs.append(start_gateway(db, logs, cpu=SERVER_CPU, name="gateway-base", tools=args.tools,
                                           checkout=base, extra_env={"MCP_GATEWAY_CONFIG": str(configs[0]), **mode}))
                procs.append(start_gateway(db, logs, cpu=SERVER_CPU, name="gateway-head", tools=args.tools,
                                           extra_env={"MCP_GATEWAY_CONFIG": str(configs[1]), **mode}))
                if upstream is not None:  # what a gateway makes its upstream do is the gateway's cost
                    for gateway in procs[1:]:
                        gateway.extra["also"] = str(upstream.popen.pid)
                variants = [Variant(label, p, gateway=i > 0, sessions=initialize_sessions(p.url, max(clients), token))
                            for i, (label, p) in enumerate(zip(labels, procs, strict=True))]
                for v in variants:  # warm-up: imports, tokenizer, pools, caches
                    run_wrk(v.proc.url, era=args.era, connections=max(clients), seconds=2, token=token,
                            sessions=v.sessions or [], cpu=CLIENT_CPU, script_dir=logs)
                for rnd in range(args.rounds):
                    order = list(range(3)) if (n + rnd) % 2 == 0 else [2, 1, 0]
                    for c in clients:
                        figures: dict[int, tuple[float, float]] = {}
                        for i in order:
                            sample = measure(variants[i], args.era, c, args.seconds, token, logs, db)
                            figures[i] = (sample.result.rps, sample.cpu_us)
                        print(f"    set {n + 1} round {rnd + 1} c={c}: " + ", ".join(
                            f"{label} {figures[i][0]:.0f}/s {figures[i][1]:.0f} us" for i, label in enumerate(labels)),
                            file=sys.stderr, flush=True)
                        for i, label in enumerate(labels):
                            rps.setdefault((c, label), []).append(figures[i][0])
                            ratio.setdefault((c, label), []).append(figures[i][0] / figures[0][0])
                            cpu.setdefault((c, label), []).append(figures[i][1])
            finally:
                for p in [*procs, *([upstream] if upstream is not None else [])]:
                    p.stop()
            print(f"  set {n + 1}/{args.sets} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    print("| clients | variant | calls/s | ratio | CPU us/call | CPU vs base |")
    print("|---|---|---|---|---|---|")
    for c in clients:
        base_cpu = median(cpu[(c, labels[1])])
        for label in labels:
            mine = median(cpu[(c, label)])
            versus = f"{100 * (mine / base_cpu - 1):+.1f}%" if label != labels[0] else ""
            print(f"| {c} | {label} | {median(rps[(c, label)]):.0f} | {median(ratio[(c, label)]):.2f} "
                  f"| {mine:.0f} | {versus} |")


def _with_upstream(config: Path, upstream: Proc, path: Path) -> Path:
    path.write_text(config.read_text() + f'\n[[upstreams]]\nname = "up"\nurl = "{upstream.url}/mcp"\n')
    return path


if __name__ == "__main__":
    main()
