"""Load, faults and scale-out against real gateway processes (loopback only, bounded in count and time).

`Load` drives many MCP clients with raw httpx (a fastmcp.Client costs too much CPU per call on two
cores to be a load generator): handshake-era clients initialize once and POST tools/call with their
Mcp-Session-Id; 2026-07-28 clients POST sessionless requests with the headers fastmcp.Client sends.
It counts, per user, the calls whose answer was a successful tool result, and notes when each
completed, so tests can compare the database with what clients saw.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests import helpers

ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"


@dataclass
class ClientStats:
    user: str
    era: str
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)  # time.monotonic() of each successful answer
    in_flight: bool = False
    session_id: str | None = None


class Load:
    """`clients` concurrent MCP clients calling `echo`; stops after `calls` each, at `stop()`, or at `deadline`.

    urls: one base URL per gateway; each sessionless client alternates between them call by call, each
    handshake-era client stays on the gateway that created its session (as sticky routing would).
    """

    def __init__(self, urls: Sequence[str], tokens: Sequence[str], *, clients: int, calls: int,
                 eras: Sequence[str] = ("handshake", "modern"), tool: str = "echo", client_name: str = "loadgen",
                 deadline: float = 120.0, pause: float = 0.0, stop_on_error: bool = False) -> None:
        self.urls = list(urls)
        self.stats = [ClientStats(user=f"u{n}", era=eras[n % len(eras)]) for n in range(clients)]
        self.tokens = tokens
        self.calls = calls
        self.tool = tool
        self.client_name = client_name
        self.deadline = deadline
        self.pause = pause
        self.stop_on_error = stop_on_error
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.started = 0.0

    # -- running ---------------------------------------------------------------------------
    async def __aenter__(self) -> Load:
        self.started = time.monotonic()
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: otherwise a POST can
        # race the server's close and fail with a reset that no server bug caused.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0))
        self._tasks = [asyncio.create_task(self._client(n, s)) for n, s in enumerate(self.stats)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()  # clients finish the call they are in (so its answer is counted), then stop
        await asyncio.wait(self._tasks, timeout=35)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def wait(self, timeout: float | None = None) -> None:
        """Until every client made its calls (or gave up)."""
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True),
                               timeout if timeout is not None else self.deadline + 30)

    def stop(self) -> None:
        self._stop.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} ({self.summary()})")
            await asyncio.sleep(0.02)

    # -- figures ----------------------------------------------------------------------------
    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.stats)

    @property
    def errors(self) -> list[str]:
        return [e for s in self.stats for e in s.errors]

    def per_user(self) -> dict[str, int]:
        return {s.user: s.ok for s in self.stats}

    def completed_before(self, moment: float) -> dict[str, int]:
        return {s.user: sum(1 for t in s.completed_at if t <= moment) for s in self.stats}

    def in_flight(self) -> int:
        return sum(1 for s in self.stats if s.in_flight)

    def summary(self) -> str:
        return f"{self.ok} ok, {len(self.errors)} errors, first: {self.errors[:3]}"

    # -- one client ------------------------------------------------------------------------
    async def _client(self, n: int, stats: ClientStats) -> None:
        token = self.tokens[n % len(self.tokens)] if len(self.tokens) > 1 else self.tokens[0]
        base = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "Content-Type": "application/json"}
        end = self.started + self.deadline
        urls = itertools.cycle(self.urls[n % len(self.urls):] + self.urls[:n % len(self.urls)])
        try:
            if stats.era == "handshake":
                url = next(urls)
                sid = await self._initialize(url, base)
                stats.session_id = sid
                headers = base | {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
            for i in range(self.calls):
                if self._stop.is_set() or time.monotonic() > end:
                    return
                if stats.era == "handshake":
                    body = {"jsonrpc": "2.0", "id": i + 2, "method": "tools/call",
                            "params": {"name": self.tool, "arguments": {"text": f"{stats.user}-{i}"}}}
                    target = url
                else:
                    target = next(urls)
                    headers = base | {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": self.tool}
                    body = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {
                        "name": self.tool, "arguments": {"text": f"{stats.user}-{i}"},
                        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                  "io.modelcontextprotocol/clientInfo": {"name": self.client_name, "version": "1.0"},
                                  "io.modelcontextprotocol/clientCapabilities": {}}}}
                stats.in_flight = True
                try:
                    response = await self._http.post(target + "/mcp", headers=headers, json=body)
                except httpx.HTTPError as exc:
                    stats.errors.append(f"{type(exc).__name__}: {exc}")
                    if self.stop_on_error:
                        return
                    continue
                finally:
                    stats.in_flight = False
                if response.status_code == 200 and '"isError":false' in response.text:
                    stats.ok += 1
                    stats.completed_at.append(time.monotonic())
                else:
                    stats.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    if self.stop_on_error:
                        return
                if self.pause:
                    await asyncio.sleep(self.pause)
        except httpx.HTTPError as exc:
            stats.errors.append(f"{type(exc).__name__}: {exc}")

    async def _initialize(self, url: str, base: dict[str, str]) -> str:
        init = await self._http.post(url + "/mcp", headers=base, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {},
                       "clientInfo": {"name": self.client_name, "version": "1.0"}}})
        init.raise_for_status()
        sid = init.headers["mcp-session-id"]
        note = await self._http.post(url + "/mcp", headers=base | {"Mcp-Session-Id": sid,
                                                                   "MCP-Protocol-Version": LEGACY},
                                     json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        note.raise_for_status()
        return sid


def scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def rows(conn: psycopg.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


async def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll a (blocking, quick) predicate without blocking the event loop's clients."""
    return await helpers.poll(predicate, timeout, what, interval, in_thread=True)
