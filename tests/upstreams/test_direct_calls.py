"""The direct upstream tool call against the MCP client's: the same corpus of calls, the same answers and rows.

Two gateway processes front the same upstream process, one with direct upstream calls (the default), one with
MCP_GATEWAY_UPSTREAM_DIRECT_CALLS=false; each upstream is configured twice, once per protocol era (`up`: auto,
which is 2026-07-28 against a FastMCP 4 server; `upl`: legacy handshake sessions). Every call of the corpus goes
to both gateways at once (the upstream keeps no state between calls), and the JSON-RPC answers (ids aside) and
the recorded rows (tool, status, error message) must be identical. The upstream answers with JSON (where the
direct path serves both eras), then with SSE streams (the 2026-07-28 era served directly, progress streamed
mid-call).

The client-path gateway also keeps FastMCP's OpenTelemetry spans on (FASTMCP_TELEMETRY_MODE=native); the other,
with no tracer provider, builds none (gateway/otel.py). A client's trace context reaches the upstream unchanged
through both.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.gateway.conftest import wait_rows
from tests.gateway_proc import GatewayProcess, free_port, make_jwt, running_together, start_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import start_upstream, stop

ERAS = ("up", "upl")
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("forecast", {"city": "Oslo", "days": 3}),  # success
    ("progress", {"steps": 3}),  # progress reported mid-call (streamed by an SSE-answering upstream)
    ("measure", {"city": "Lima"}),  # structured output
    ("big", {"repeat": 20000}),  # large, outside ASCII
    ("grumpy", {}),  # the tool raises: isError passed through
    ("ghost", {}),  # listed, unknown to the upstream when called
    ("forecast", {"city": 5, "days": "many"}),  # invalid arguments
    ("forecast", {}),  # a required argument missing
    ("rpcerror", {}),  # a JSON-RPC error from the upstream (JSON mode; else an ordinary result)
    ("sleepy", {"seconds": 5}),  # slower than the upstream's timeout
    ("nope", {}),  # not a tool of the upstream at all
]


def _config(path: Path, port: int) -> Path:
    path.write_text("".join(f"""
[[upstreams]]
name = "{name}"
url = "http://127.0.0.1:{port}/mcp"
timeout = 2
retry_seconds = 0.2
{'protocol = "legacy"' if name == "upl" else ""}
""" for name in ERAS))
    return path


class Caller:
    """Raw JSON-RPC over one handshake-era session, so answers are compared as they are on the wire."""

    def __init__(self, gateway: GatewayProcess, user: str) -> None:
        self.http = httpx.Client(timeout=30)
        self.url = gateway.mcp_url
        self.headers = {"Authorization": f"Bearer {make_jwt(user, 'acme')}", "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream"}
        init = self.http.post(self.url, headers=self.headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}})
        init.raise_for_status()
        self.headers |= {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        self.http.post(self.url, headers=self.headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.n = 0

    def call(self, tool: str, arguments: dict[str, Any],
             meta: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        self.n += 1
        params = {"name": tool, "arguments": arguments} | ({"_meta": meta} if meta is not None else {})
        response = self.http.post(self.url, headers=self.headers, json={
            "jsonrpc": "2.0", "id": self.n, "method": "tools/call", "params": params})
        body = response.json()
        body.pop("id", None)
        return response.status_code, body

    def traced(self, tool: str, traceparent: str) -> str:
        """The `traceparent` the upstream saw for a call whose `_meta` carried this one."""
        return _text(self.call(tool, {}, meta={"traceparent": traceparent}))

    def tools(self) -> set[str]:
        response = self.http.post(self.url, headers=self.headers,
                                  json={"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}})
        return {t["name"] for t in response.json()["result"]["tools"]}


_SIDE_BY_SIDE = ThreadPoolExecutor(2, thread_name_prefix="direct-vs-client")


def _both(direct: Caller, sdk: Caller, tool: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    # The two gateways and users are independent: asked together, the slow cases (a timeout) are waited once.
    b_future = _SIDE_BY_SIDE.submit(sdk.call, tool, arguments)
    a = direct.call(tool, arguments)
    b = b_future.result()
    assert a == b, f"{tool}({arguments}): direct {a!r}\n  != client {b!r}"
    return a


def _text(answer: tuple[int, dict[str, Any]]) -> str:
    return str(answer[1]["result"]["content"][0]["text"])


@pytest.mark.parametrize("answers", ["json", "http"])
async def test_direct_calls_answer_and_record_exactly_as_the_client_path(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection, answers: str) -> None:
    port = free_port()
    config = _config(tmp_path / "gateway.toml", port)
    upstream = start_upstream(answers, port, tmp_path / "upstream.log")
    try:
        args = ("serve", "--config", str(config))
        with running_together(start_gateway(database, tmp_path / "direct", args=args, wait=False),
                              start_gateway(database, tmp_path / "sdk", args=args, wait=False,
                                            MCP_GATEWAY_UPSTREAM_DIRECT_CALLS="false",
                                            FASTMCP_TELEMETRY_MODE="native")) as (gw_direct, gw_sdk):
            direct, sdk = Caller(gw_direct, "direct"), Caller(gw_sdk, "client")
            assert "builds no spans" in gw_direct.log() and "builds no spans" not in gw_sdk.log()
            listed = direct.tools()
            assert listed == sdk.tools() and {"up_measure", "upl_measure", "up_ghost"} <= listed
            expected = 0
            for era in ERAS:
                answered = [_both(direct, sdk, f"{era}_{tool}", arguments) for tool, arguments in CALLS]
                got = dict(zip([tool for tool, _ in CALLS], answered, strict=True))  # forecast: its last
                expected += len(CALLS)
                assert _text(answered[0]) == "Oslo: sunny for 3 day(s)"
                assert all(a[1]["result"]["isError"] for a in answered[-5:-3]), answered[-5:-3]  # bad arguments
                assert _text(got["progress"]) == "done in 3 steps"
                assert got["measure"][1]["result"]["structuredContent"]["tags"] == ["sunny", "warm"]
                assert _text(got["big"]) == "Grüße, 世界 ✓ " * 20000
                assert got["grumpy"][1]["result"]["isError"] and _text(got["grumpy"]) == "grumpy says no"
                for failed in ("ghost", "sleepy", "nope"):
                    assert got[failed][1]["result"]["isError"], got[failed]
                assert "Unknown tool" in _text(got["nope"])
                assert "did not answer within 2s" in _text(got["sleepy"])
                if answers == "json":  # (the test server scripts this refusal in its JSON mode only)
                    assert "the upstream refuses this one" in _text(got["rpcerror"])
                traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
                assert direct.traced(f"{era}_trace_context", traceparent) == traceparent
                assert sdk.traced(f"{era}_trace_context", traceparent) == traceparent
                expected += 1

            # The upstream goes away: both answer UpstreamUnavailable. The detail may differ: the client's own
            # answer to a refused connection is a race between its request and its dying session ("connection
            # closed", or retried on a new session: "failed to connect"); the direct call always retries.
            stop(upstream)
            for era in ERAS:
                for caller in (direct, sdk):
                    down = caller.call(f"{era}_forecast", {"city": "Oslo"})
                    assert down[1]["result"]["isError"], down
                    assert _text(down).startswith(f"upstream '{era}' is unreachable ("), down
                expected += 1
            # Back on the same port: the handshake-era sessions are stale (404), retried once on a new one.
            upstream = start_upstream(answers, port, tmp_path / "upstream.log")
            for era in ERAS:
                for _ in range(2):  # the first call after being down may still meet the retry window
                    back = _both(direct, sdk, f"{era}_forecast", {"city": "Lima"})
                    expected += 1
                assert _text(back) == "Lima: sunny for 1 day(s)"
            # Restarted between two calls (nothing in between noticed it): the stale session is retried.
            stop(upstream)
            upstream = start_upstream(answers, port, tmp_path / "upstream.log")
            for era in ERAS:
                again = _both(direct, sdk, f"{era}_forecast", {"city": "Rome"})
                assert _text(again) == "Rome: sunny for 1 day(s)"
                expected += 1
    finally:
        stop(upstream)

    sql = ("SELECT tool_name, status, error_message FROM gateway.mcp_requests WHERE user_id = %s"
           " ORDER BY \"timestamp\"")
    rows_direct = wait_rows(admin_conn, sql, expected, "direct")
    rows_sdk = wait_rows(admin_conn, sql, expected, "client")
    assert len(rows_direct) == len(rows_sdk) == expected
    for a, b in zip(rows_direct, rows_sdk, strict=True):
        if "is unreachable" in (a[2] or ""):  # the one detail that may differ (above): tool, status, error type
            assert (a[0], a[1], a[2].split(":")[0]) == (b[0], b[1], (b[2] or "").split(":")[0]), (a, b)
        else:
            assert a == b
    errors = {tool: error for tool, status, error in rows_direct if status == "error"}
    assert errors["up_sleepy"].startswith("UpstreamTimeout: ")
    if answers == "json":
        assert errors["upl_rpcerror"].startswith("UpstreamError: ")
