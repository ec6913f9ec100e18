"""Instructions per call of the gateway's per-call bookkeeping, counted in-process by callgrind: exact to ~1%.

    python bench/bookkeeping.py [--base REV] [--without log,metrics,quotas]

What every tools/call costs the gateway besides the HTTP and MCP plumbing and the tool: the quota's price of
the arguments, its admit and release, the tracking record (`Tracker._submit`), the hooks that see it (metrics,
the quota's spend) and the JSON log line — built from the same classes the gateway wires, with
`bench/compare.py`'s quotas, a handshake-era session and the echo tool's real result, in a loop. The count is
taken twice (1,000 and 3,000 calls, each under `valgrind --tool=callgrind`) and the difference divided by
2,000, so start-up and imports fall out. `bench/instructions.py` counts whole servers; there, work paced by the
clock (flushes, refreshes, a garbage collection falling inside a cell or not) moves a count by 1-5%, more than
a change to this bookkeeping does. Here nothing is paced by the clock: the same code counts the same to within
~1%.

`--without` adds a count with each named part left out (log: the `mcp_gateway.calls` logger disabled;
metrics, quotas: their hooks not attached, and for quotas no price, admit or release). `--base REV` counts
another revision too (a temporary git worktree; it must have the same classes). Needs valgrind.
Not counted: the writer's batch work (`bench/instructions.py` has it), the kernel's write of the log line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from contextlib import nullcontext
from pathlib import Path

CALLS = (1000, 3000)
PARTS = ("log", "metrics", "quotas")


def run_loop(calls: int, without: set[str]) -> None:
    """The measured loop (this file under valgrind, `--inner`), with the checkout on sys.path first."""
    from gateway.logs import configure_logging

    configure_logging("json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - open for the process's life

    from auth import Principal
    from bench.compare import CONFIG
    from bench.tools import mcp
    from gateway.config import QuotaConfig
    from gateway.http.metrics import GatewayMetrics
    from gateway.mcp.quotas import Quotas
    from gateway.tracking.middleware import ClientInfo, Tracker
    from gateway.tracking.pricing import Pricing, count_tokens
    from gateway.tracking.sessions import AnalyticsSessions
    from gateway.tracking.writer import TrackingWriter

    count_tokens("the tokenizer loads before the loop")
    pricing = Pricing()
    writer = TrackingWriter(None, instance_id="bench", pricing=pricing)  # type: ignore[arg-type]  # never started
    tracker = Tracker(writer, AnalyticsSessions(writer, 1800.0))
    quotas = Quotas(QuotaConfig.model_validate(tomllib.loads(CONFIG)["quotas"]), pricing)
    if "metrics" not in without:
        tracker.on_recorded.append(GatewayMetrics(writer=writer, open_sessions=lambda: 0,  # type: ignore[arg-type]
                                                  instance_id="bench").tool_called)
    if "quotas" not in without:
        tracker.on_recorded.append(quotas.on_recorded)
    if "log" in without:
        logging.getLogger("mcp_gateway.calls").disabled = True
    principal = Principal(user_id="bench", tenant_id="bench", role="member", token_kind="pat")
    client = ClientInfo(name="bench-wrk", version="1.0", protocol_version="2025-11-25", transport="streamable-http",
                        protocol_session_id="0123456789abcdef0123456789abcdef")

    async def loop() -> None:
        result = await mcp.call_tool("echo", {"text": "hello world"})
        for _ in range(calls):
            arguments = {"text": "hello world"}  # a new dict per call, as parsed from each request
            reservation = None
            if "quotas" not in without:
                refused, reservation = quotas.admit(principal, quotas.price_of("echo", arguments))
                assert refused is None
            tracker._submit(principal, client, "echo", arguments, result, "success", None, 1.2345, "tools/call")
            if reservation is not None:
                quotas.release(reservation)
            writer._queue.clear()  # the writer is not running: its queue would only grow

    asyncio.run(loop())


def count(checkout: Path, calls: int, without: set[str]) -> int:
    """Instructions the whole process ran for `calls` loops (callgrind's total)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           str(Path(__file__).resolve()), "--inner", str(calls), ",".join(sorted(without))]
    out = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : ([\d,]+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"bench/bookkeeping.py: the loop failed under valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(checkout: Path, without: set[str]) -> float:
    few, many = (count(checkout, n, without) for n in CALLS)
    return (many - few) / (CALLS[1] - CALLS[0])


def main() -> None:
    if sys.argv[1:2] == ["--inner"]:
        run_loop(int(sys.argv[2]), {p for p in sys.argv[3].split(",") if p})
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="also count this git revision (same classes)")
    parser.add_argument("--without", default="", help=f"comma-separated, each left out in a count of its own: "
                                                       f"{', '.join(PARTS)}")
    args = parser.parse_args()
    without = [p for p in args.without.split(",") if p]
    if unknown := set(without) - set(PARTS):
        parser.error(f"unknown --without part(s): {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None:
        sys.exit("bench/bookkeeping.py needs valgrind (e.g. apt-get install -y valgrind)")
    from bench._harness import REPO
    from bench.ab import worktree

    variants: list[tuple[str, set[str]]] = [("all on", set())] + [(f"without {p}", {p}) for p in without]
    print(f"Per-call bookkeeping, instructions per call under callgrind ({CALLS[1]} - {CALLS[0]} calls)\n")
    print("| gateway | variant | instructions/call |\n|---|---|---|")
    checkouts: list[tuple[str, Path]] = [("this checkout", REPO)]
    with worktree(args.base) if args.base else nullcontext() as base:
        if base is not None:
            checkouts.append((args.base, base))
        for name, checkout in checkouts:
            for label, parts in variants:
                print(f"| {name} | {label} | {per_call(checkout, parts):,.0f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--inner"]:  # the loop imports the checkout that count() put on PYTHONPATH, nothing else
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
