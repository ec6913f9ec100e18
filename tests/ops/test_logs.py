"""`serve` logs JSON lines: one `tool_call` line per call, with who/what/how long, never tokens or arguments."""

from __future__ import annotations

import json
import time

from fastmcp import Client

from tests.gateway_proc import GatewayProcess, make_jwt


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_serve_logs_one_json_tool_call_line_per_call(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme")
    secret_argument = "do-not-log-this-argument-7f3a"
    async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:
        await client.call_tool("echo", {"text": secret_argument})
        await client.call_tool("add", {"a": 40, "b": 2})
        await client.call_tool("explode", {"reason": "kaput"}, raise_on_error=False)
        await client.call_tool("add", {"a": secret_argument, "b": 1}, raise_on_error=False)  # invalid arguments

    deadline = time.monotonic() + 10
    while True:
        text = gateway.log()
        calls = [r for r in json_lines(text) if r.get("event") == "tool_call"]
        if len(calls) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    records = json_lines(text)  # every line parses: nothing but JSON on the log stream
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert [(c["tool"], c["status"]) for c in calls] == [("echo", "success"), ("add", "success"),
                                                          ("explode", "error"), ("add", "error")]
    for line in calls:
        assert line["user"] == "alice" and line["tenant"] == "acme"
        assert line["session"] and isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert len({c["session"] for c in calls}) == 1
    assert token not in text and token.split(".")[2] not in text
    assert secret_argument not in text
    assert "kaput" not in "".join(json.dumps(c) for c in calls)
