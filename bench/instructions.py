"""Instructions per call, counted by valgrind's callgrind: the gateway against bare FastMCP, repeatable.

    python bench/instructions.py [--calls 400] [--clients 1,16] [--eras handshake,modern] [--base REV]
                                 [--quotas compare|none] [--scenario direct|mounted]

CPU seconds per call move 10-20% between two runs of the same code on a shared machine; the number of
instructions a server executes for the same calls moves by well under 1% (seen: 1112.3, 1113.3 and 1112.3
million for three runs of 300 bare calls). Every server runs under `valgrind --tool=callgrind` with
counting off; once it has served a warm-up, counting is switched on (`callgrind_control -i on`), the
client sends exactly `--calls` calls over `--clients` connections (threads of this process, outside
valgrind), and counting stops when the last answer has arrived and, for a gateway, when every call is a
row in `gateway.mcp_requests` (polled from here, so the writer's work for those calls is counted and the
polling is not). "Mi/call" is millions of instructions per call; "idle Mi/s" is what the server counts
per wall second with no calls (its timers), measured alone and subtracted. Under valgrind a call takes
~25x as long, so every server's clock is slowed 25x (bench/slow_clock): work it does on a timer (flushes,
cache refreshes) then falls as often per call as at full speed; each cell prints the calls per second of
the server's clock, to hold against a real run's.

What this counts and what it does not: user-space instructions of the server process, all threads
(the tool runs in a worker thread). Not the kernel's work for the server's system calls (socket reads and
writes, the per-call log line's write), not cache misses or branch mispredictions, which make one
instruction cost more than another. It is the "server CPU per call" of `bench/compare.py` without the
noise, not a replacement for it.

Variants: bare JSON (FastMCP's `http_app(json_response=True)` under uvicorn), the gateway of this
checkout (compare.py's quotas unless `--quotas none`), and with `--base REV` the gateway of another
revision (checked out in a temporary worktree) for a deterministic A/B. `--scenario mounted` serves
`bench.tools:mcp_with_middleware` (the user's server with its own middleware, mounted) against that same
server bare. Needs valgrind (`apt-get install -y valgrind`); ~5 min for the defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench._harness import (
    REPO,
    Proc,
    bench_database,
    call_echo,
    create_token,
    initialize_sessions,
    start_bare,
    start_gateway,
)
from bench.ab import worktree
from bench.compare import CONFIG, ERAS

SCENARIOS = {"direct": ("bench.tools:mcp", "bench.tools:bare_app"),
             "mounted": ("bench.tools:mcp_with_middleware", "bench.tools:bare_middleware_app")}
START_TIMEOUT = 600.0  # a gateway's imports under valgrind take ~10x as long as without
IDLE_SECONDS = 5.0
# Under callgrind a server runs ~25x slower (~26 calls a second against ~500-900 under compare.py's load), so
# work it does on a timer would weigh ~25x per call: the writer's flush every second (batches of ~25 records
# instead of hundreds), a spend refresh every 10 s, a personal token's record read again every 2 s, each open
# session's binding every 2 s. Every server's monotonic clock runs this much slower (bench/slow_clock), which
# paces all of them as at full speed at once.
CLOCK_SCALE = 25
SLOW_CLOCK = Path(__file__).resolve().parent / "slow_clock"
WARM_UP_CALLS = 20
ABLATIONS = ("log", "access", "track", "metrics", "writer")  # bench/ablate_serve.py's parts ("mount" is a scenario)


@dataclass
class Server:
    label: str
    proc: Proc
    token: str  # "" for bare FastMCP (no auth)
    out_prefix: Path
    rows: bool  # every call becomes a row (a gateway, unless tracking or its writer is switched off)
    idle_per_second: float = 0.0
    dumps: int = 0

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def counting(self, on: bool) -> None:
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(self.pid)],
                       check=True, capture_output=True, timeout=120)

    def dump(self) -> int:
        """Dump the counts since the last dump (callgrind zeroes them) and return the instructions."""
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True, timeout=120)
        self.dumps += 1
        path = Path(f"{self.out_prefix}.{self.pid}.{self.dumps}")
        deadline = time.monotonic() + 120
        while True:
            text = path.read_text() if path.exists() else ""
            for line in text.splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no callgrind dump at {path}")
            time.sleep(0.1)


def slow_clock(checkout: Path) -> dict[str, str]:
    """The environment that slows a server's clock by CLOCK_SCALE (its code still imported from `checkout`)."""
    return {"PYTHONPATH": f"{SLOW_CLOCK}{os.pathsep}{checkout}", "BENCH_CLOCK_SCALE": str(CLOCK_SCALE)}


def valgrind(out_prefix: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_prefix}.%p",
            "--dump-line=no", "--compress-strings=no", "-q"]


def open_sessions(server: Server, era: str, clients: int) -> list[str | None]:
    """One session per connection in the handshake era (none in 2026-07-28)."""
    if era != "handshake":
        return [None] * clients
    return list(initialize_sessions(server.proc.url, clients, server.token))


def send_calls(server: Server, era: str, sessions: list[str | None], calls: int) -> None:
    """Exactly `calls` calls over one connection per session entry, all at once."""
    clients = len(sessions)
    shares = [calls // clients + (1 if i < calls % clients else 0) for i in range(clients)]
    counter = iter(range(1, 10**9))
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=300) as http:
            for _ in range(shares[i]):
                with lock:
                    n = next(counter)
                call_echo(http, server.proc.url, server.token, sessions[i], n, era)

    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client, i) for i in range(clients)]:
            done.result()


def rows(admin_url: str) -> int:
    with psycopg.connect(admin_url) as conn:
        return int(conn.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()[0])  # type: ignore[index]


def wait_rows(admin_url: str, expected: int) -> None:
    deadline = time.monotonic() + 300
    while (found := rows(admin_url)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rows == calls does not hold: {found} rows, {expected} calls answered")
        time.sleep(0.05)
    if found > expected:
        raise RuntimeError(f"rows == calls does not hold: {found} rows, {expected} calls answered")


def measure(server: Server, era: str, clients: int, calls: int, admin_url: str) -> tuple[float, float]:
    """Instructions per call over `calls` calls, idle timers subtracted; and calls per second of the
    server's own (slowed) clock while they were sent, to hold against a real run's rate."""
    # Sessions opened and warmed (the gateway opens an analytics session at a session's first call) before
    # counting, so the count is calls on open sessions, as in compare.py.
    sessions = open_sessions(server, era, clients)
    warm_up(server, era, sessions, max(clients, WARM_UP_CALLS), admin_url)
    server.dump()  # whatever counted since (nothing: counting is off), so the next dump is this run alone
    before = rows(admin_url) if server.rows else 0  # every earlier call is a row already (waited for)
    started = time.monotonic()
    server.counting(True)
    send_calls(server, era, sessions, calls)
    rate = calls / (time.monotonic() - started) * CLOCK_SCALE
    if server.rows:
        wait_rows(admin_url, before + calls)
    server.counting(False)
    wall = time.monotonic() - started
    return (server.dump() - server.idle_per_second * wall) / calls, rate


def warm_up(server: Server, era: str, sessions: list[str | None], calls: int, admin_url: str) -> None:
    """Calls before counting; for a gateway, until they are rows, so none of their writing is counted."""
    before = rows(admin_url) if server.rows else 0
    send_calls(server, era, sessions, calls)
    if server.rows:
        wait_rows(admin_url, before + calls)


def idle_rate(server: Server) -> float:
    server.counting(True)
    started = time.monotonic()
    time.sleep(IDLE_SECONDS)  # nothing to wait for: this measures what the server does when nothing happens
    server.counting(False)
    wall = time.monotonic() - started
    return server.dump() / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per measurement (default 400)")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--eras", default="handshake,modern")
    parser.add_argument("--base", help="also count a gateway of this git revision (same migrations)")
    parser.add_argument("--quotas", default="compare", choices=["compare", "none"],
                        help="the gateways' quotas: compare.py's (default) or none")
    parser.add_argument("--scenario", default="direct", choices=sorted(SCENARIOS))
    parser.add_argument("--ablate", default="", help="comma-separated parts, each switched off in a gateway of its "
                        f"own: {', '.join(ABLATIONS)} (bench/ablate_serve.py), or quotas")
    args = parser.parse_args()
    if args.calls <= 0:
        sys.exit("--calls must be positive")
    ablate = [a for a in args.ablate.split(",") if a]
    if unknown := set(ablate) - set(ABLATIONS) - {"quotas"}:
        sys.exit(f"unknown --ablate part(s): {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench/instructions.py needs valgrind (e.g. apt-get install -y valgrind)")
    clients = [int(c) for c in args.clients.split(",")]
    eras = [ERAS[e] for e in args.eras.split(",") if e]
    tools, bare_app = SCENARIOS[args.scenario]
    logs = Path(tempfile.mkdtemp(prefix="mcpgw-instr-"))
    config = logs / "gateway.toml"
    config.write_text(CONFIG if args.quotas == "compare" else "")
    print(f"Instructions per call under callgrind ({args.scenario}, quotas: {args.quotas}), {args.calls} calls per "
          f"cell; logs and dumps in {logs}\n", flush=True)
    no_quotas = logs / "none.toml"
    no_quotas.write_text("")
    with bench_database() as db, ExitStack() as stack:
        token = create_token(db)

        def gateway(name: str, wrap: list[str], checkout: Path = REPO, ablated: str = "",
                    config: Path = config) -> Proc:
            return start_gateway(db, logs, tools=tools, name=name, wrapper=wrap, checkout=checkout, ablate=ablated,
                                 timeout=START_TIMEOUT,
                                 extra_env={"MCP_GATEWAY_CONFIG": str(config), **slow_clock(checkout)})

        # label -> (how to start it under the given valgrind command, its token, does every call become a row)
        wanted: dict[str, tuple[Callable[[list[str]], Proc], str, bool]] = {
            "bare JSON": (lambda wrap: start_bare(logs, app=bare_app, name="bare", wrapper=wrap,
                                                  timeout=START_TIMEOUT, extra_env=slow_clock(REPO)), "", False),
            "gateway": (lambda wrap: gateway("gateway", wrap), token, True)}
        if args.base:
            base_tree = stack.enter_context(worktree(args.base))
            wanted[f"gateway {args.base}"] = (lambda wrap: gateway("gateway-base", wrap, checkout=base_tree),
                                               token, True)
        for part in ablate:
            wanted[f"gateway without {part}"] = (
                (lambda wrap: gateway("gateway-no-quotas", wrap, config=no_quotas)) if part == "quotas" else
                (lambda wrap, part=part: gateway(f"gateway-no-{part}", wrap, ablated=part)),  # type: ignore[misc]
                token, part not in ("track", "writer"))

        def started(label: str) -> Server:
            start, server_token, has_rows = wanted[label]
            out = logs / label.replace(" ", "-").replace(",", "").replace("/", "-")
            proc = start(valgrind(out))
            stack.callback(proc.stop)
            return Server(label, proc, server_token, out, rows=has_rows)

        with ThreadPoolExecutor(len(wanted)) as pool:  # imports under valgrind are slow: start them side by side
            servers = list(pool.map(started, wanted))
        for server in servers:
            # First calls: imports on first use, caches, the tokenizer.
            warm_up(server, "handshake", open_sessions(server, "handshake", 1), WARM_UP_CALLS, db.admin_url)
            server.idle_per_second = idle_rate(server)
        results: dict[tuple[str, int, str], float] = {}
        for era in eras:
            for c in clients:
                for server in servers:
                    results[(era, c, server.label)], rate = measure(server, era, c, args.calls, db.admin_url)
                    print(f"  {era} c={c} {server.label}: {results[(era, c, server.label)] / 1e6:.3f} Mi/call "
                          f"({rate:.0f} calls per second of its clock)", flush=True)
    print("\n| era | clients | variant | Mi/call | ratio to bare |")
    print("|---|---|---|---|---|")
    for era in eras:
        for c in clients:
            bare = results[(era, c, "bare JSON")]
            for server in servers:
                per_call = results[(era, c, server.label)]
                print(f"| {era} | {c} | {server.label} | {per_call / 1e6:.3f} | {per_call / bare:.3f} |")
    print("\nidle Mi/s (subtracted): " + ", ".join(f"{s.label} {s.idle_per_second / 1e6:.2f}" for s in servers))
    print("rows == calls held for every gateway that writes rows (counting stopped only once they were rows)")


if __name__ == "__main__":
    main()
