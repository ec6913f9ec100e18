"""Calls through a stalled database: calls/s and p99 per window while a table is locked or the cluster stopped.

    python bench/db_stall.py [--stall 15] [--window 5] [--clients 8] [--tables api_tokens,users,...]

One gateway (`serve --tools bench.tools:mcp`), `--clients` sessionless clients calling `echo` with personal
access tokens they used before the stall (the token kind that needs the database), plus one "newcomer"
client that presents a never-used token on every call (one per 0.2 s). For every scenario: `--window`
seconds of normal service, `--stall` seconds of the stall, `--window` seconds after it:
- `lock <table>`: an admin transaction holds `LOCK TABLE gateway.<table> IN ACCESS EXCLUSIVE MODE`
  (api_tokens and users: the token lookup; mcp_sessions and mcp_requests: the tracking writer);
- `sigstop`: the PostgreSQL postmaster and every backend are SIGSTOPped (only when the server runs on
  this machine), then SIGCONTed.
Per window it prints the known tokens' calls/s, p99 and failures, and what the newcomers got
(200 / 503 / 401 / other) with their slowest answer. Expected: known tokens never stop; newcomers get 503
within MCP_GATEWAY_STORE_TIMEOUT during a stall, never 401; every figure back to normal afterwards.

Database: MCP_GATEWAY_DATABASE_URL if set (a scratch database), else an embedded cluster in a temporary dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from bench._harness import bench_database, cores, start_gateway
from gateway.settings import Settings
from gateway.store.db import Database, resolve_urls
from gateway.store.tokens import create_token

MODERN = "2026-07-28"
TABLES = ("api_tokens", "users", "mcp_sessions", "mcp_requests")


@dataclass
class Call:
    newcomer: bool
    started: float
    ended: float
    status: int  # HTTP status; 0: a 200 that was not a successful tool result; -1: transport error


def _body(n: int) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientInfo": {"name": "bench-db-stall", "version": "1.0"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}}


async def one_call(http: httpx.AsyncClient, url: str, token: str, newcomer: bool, n: int) -> Call:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": "echo"}
    started = time.monotonic()
    try:
        response = await http.post(url + "/mcp", headers=headers, json=_body(n))
        status = response.status_code
        if status == 200 and '"isError":false' not in response.text:
            status = 0
    except httpx.HTTPError:
        status = -1
    return Call(newcomer, started, time.monotonic(), status)


class Load:
    def __init__(self, url: str, known: list[str], newcomers: list[str]) -> None:
        self.url = url
        self.known = known
        self.newcomers = iter(newcomers)
        self.calls: list[Call] = []
        self._stop = asyncio.Event()

    async def _known_client(self, http: httpx.AsyncClient, token: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self.calls.append(await one_call(http, self.url, token, False, n))

    async def _newcomer_client(self, http: httpx.AsyncClient) -> None:
        n = 0
        while not self._stop.is_set():
            token = next(self.newcomers, None)
            if token is None:
                return
            n += 1
            self.calls.append(await one_call(http, self.url, token, True, n))
            try:
                await asyncio.wait_for(self._stop.wait(), 0.2)
            except TimeoutError:
                pass

    async def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            tasks = [asyncio.create_task(self._known_client(http, t)) for t in self.known]
            tasks.append(asyncio.create_task(self._newcomer_client(http)))
            try:
                await scenario()
            finally:
                self._stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def postmaster_pid(admin_url: str) -> int | None:
    with psycopg.connect(admin_url, autocommit=True) as conn:  # read while the backend lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            stat = Path(f"/proc/{row[0] if row else 0}/stat").read_text()
        except OSError:
            return None  # not on this machine
    return int(stat[stat.rindex(")") + 2:].split()[1])


@contextmanager
def stopped_cluster(postmaster: int) -> Iterator[None]:
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat[stat.rindex(")") + 2:].split()[1]) == postmaster:
            pids.append(int(entry.name))
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        yield
    finally:
        for pid in reversed(stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def report(name: str, calls: list[Call], start: float, stall_from: float, stall_to: float, end: float,
           window: float) -> list[str]:
    """One line per window; windows never straddle a phase boundary (before / stall / after)."""
    lines = []
    for phase, p_from, p_to in (("before", start, stall_from), ("stall", stall_from, stall_to),
                                ("after", stall_to, end)):
        t = p_from
        while t < p_to - 0.05:
            w_end = min(t + window, p_to)
            if p_to - w_end < 0.25 * window:  # no sliver of a window at a phase's end
                w_end = p_to
            inside = [c for c in calls if t <= c.ended < w_end]
            known = [c for c in inside if not c.newcomer]
            ok = [c for c in known if c.status == 200]
            new = [c for c in inside if c.newcomer]
            counts = {s: sum(1 for c in new if c.status == s) for s in (200, 503, 401)}
            other = len(new) - sum(counts.values())
            new_max = max((c.ended - c.started for c in new), default=float("nan"))
            lines.append(
                f"| {name} | {t - start:.1f}-{w_end - start:.1f} s | {phase} | {len(ok) / (w_end - t):.0f} "
                f"| {1000 * _p99([c.ended - c.started for c in known]):.0f} | {len(known) - len(ok)} "
                f"| {counts[200]}/{counts[503]}/{counts[401]}/{other} | {1000 * new_max:.0f} |")
            t = w_end
    return lines


async def run_scenario(name: str, url: str, known: list[str], newcomers: list[str], admin_url: str,
                       stall_s: float, window: float) -> list[str]:
    load = Load(url, known, newcomers)
    marks: dict[str, float] = {}

    async def scenario() -> None:
        marks["start"] = time.monotonic()
        await asyncio.sleep(window)
        marks["stall_from"] = time.monotonic()
        if name == "sigstop":
            postmaster = postmaster_pid(admin_url)
            if postmaster is None:
                raise RuntimeError("the server does not run on this machine")
            with stopped_cluster(postmaster):
                await asyncio.sleep(stall_s)
        else:
            table = name.split()[1]
            locker = await psycopg.AsyncConnection.connect(admin_url)
            try:
                await locker.execute(f"LOCK TABLE gateway.{table} IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(stall_s)
            finally:
                await locker.rollback()
                await locker.close()
        marks["stall_to"] = time.monotonic()
        await asyncio.sleep(window)
        marks["end"] = time.monotonic()

    await load.run(scenario)
    return report(name, load.calls, marks["start"], marks["stall_from"], marks["stall_to"], marks["end"], window)


async def make_tokens(urls, known: int, newcomers: int) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    async with Database(urls, min_size=1, max_size=2, application_name="bench-db-stall setup") as db:
        made = [(await create_token(db, tenant_id="bench", user_id=f"user{i % 20}"))[1]
                for i in range(known + newcomers)]
    return made[:known], made[known:]


async def warm(url: str, tokens: list[str]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for n, token in enumerate(tokens):
            call = await one_call(http, url, token, False, n)
            if call.status != 200:
                raise RuntimeError(f"warm-up call answered {call.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=15.0, help="seconds each stall lasts (default 15)")
    parser.add_argument("--window", type=float, default=5.0, help="report window in seconds (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="clients with known tokens (default 8)")
    parser.add_argument("--tables", default=",".join(TABLES), help="tables to lock, comma-separated")
    parser.add_argument("--no-sigstop", action="store_true", help="skip the SIGSTOP scenario")
    args = parser.parse_args()
    scenarios = [f"lock {t.strip()}" for t in args.tables.split(",") if t.strip()]
    if not args.no_sigstop:
        scenarios.append("sigstop")
    per_scenario = int((args.stall + 2 * args.window) / 0.2) + 10
    lines: list[str] = []
    with bench_database() as bdb, tempfile.TemporaryDirectory(prefix="mcpgw-bench-stall-") as log_dir:
        settings = Settings(data_dir=bdb.data_dir, database_url=bdb.env.get("MCP_GATEWAY_DATABASE_URL"))
        urls = resolve_urls(settings)
        known, newcomers = asyncio.run(make_tokens(urls, args.clients, per_scenario * len(scenarios)))
        gateway = start_gateway(bdb, Path(log_dir))
        try:
            asyncio.run(warm(gateway.url, known))
            for i, name in enumerate(scenarios):
                print(f"scenario {name} ...", file=sys.stderr)
                batch = newcomers[i * per_scenario:(i + 1) * per_scenario]
                lines += asyncio.run(run_scenario(name, gateway.url, known, batch, urls.admin, args.stall,
                                                  args.window))
        finally:
            gateway.stop()
        timeout = gateway_env_timeout()
    print(f"\nmcp-gateway with a stalled database — {cores()} cores, {args.clients} clients with known personal "
          f"access tokens + 1 newcomer (a new token every call), {args.stall:g} s stalls, "
          f"{args.window:g} s windows, store timeout {timeout}\n")
    print("| scenario | window | phase | known calls/s | known p99 ms | known failed "
          "| newcomers 200/503/401/other | newcomer slowest ms |")
    print("|---|---|---|---|---|---|---|---|")
    for line in lines:
        print(line)


def gateway_env_timeout() -> str:
    from auth import AuthSettings

    return f"{AuthSettings().store_timeout:g} s"


if __name__ == "__main__":
    main()
