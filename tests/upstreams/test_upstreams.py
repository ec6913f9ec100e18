"""Upstream MCP servers behind a real gateway process: HTTP and stdio upstreams, failures, recovery."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import psycopg
from fastmcp import Client

from tests.gateway.conftest import query, wait_rows
from tests.gateway_proc import free_port, make_jwt, running_gateway
from tests.pg import TestDatabase
from tests.upstreams.helpers import SERVER, poll, start_upstream, stop, upstream


def _config(path: Path, weather_port: int, junk_port: int, sse_port: int) -> Path:
    path.write_text(f"""
[[upstreams]]
name = "weather"
url = "http://127.0.0.1:{weather_port}/mcp"
timeout = 2
retry_seconds = 0.5
headers = {{ "X-Team" = "tests" }}

[[upstreams]]
name = "local"
command = "{sys.executable}"
args = ["{SERVER}", "stdio"]
env = {{ "UPSTREAM_LABEL" = "stdio-one" }}
timeout = 10

[[upstreams]]
name = "legacy"
url = "http://127.0.0.1:{sse_port}/sse"
timeout = 5

[[upstreams]]
name = "junk"
url = "http://127.0.0.1:{junk_port}/mcp"
timeout = 3
""")
    return path


async def test_http_and_stdio_upstreams_listed_called_recorded_and_recovering(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    weather_port, junk_port, sse_port = free_port(), free_port(), free_port()
    config = _config(tmp_path / "gateway.toml", weather_port, junk_port, sse_port)
    weather = start_upstream("http", weather_port, tmp_path / "weather.log")
    try:
        with upstream("garbage", junk_port, tmp_path / "junk.log"), upstream("sse", sse_port, tmp_path / "sse.log"), \
                running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config))) as gw:
            async with Client(gw.mcp_url, auth=make_jwt("alice", "acme")) as client:
                # -- listed with the prefix, descriptions and schemas intact -------------------------
                tools = {t.name: t for t in await client.list_tools()}
                for name in ("weather_forecast", "weather_whereami", "local_forecast", "local_whereami",
                             "legacy_forecast"):
                    assert name in tools, sorted(tools)
                assert "whoami" in tools and not any(n.startswith("junk_") for n in tools)
                forecast = tools["weather_forecast"]
                assert forecast.description == "Weather forecast for a city (always sunny)."
                assert forecast.input_schema["properties"]["city"] == {"type": "string"}
                assert forecast.input_schema["required"] == ["city"]
                prompts = {p.name for p in await client.list_prompts()}
                assert {"weather_ask_weather", "local_ask_weather"} <= prompts
                resources = {str(r.uri) for r in await client.list_resources()}
                assert {"data://weather/cities", "data://local/cities"} <= resources
                assert (await client.read_resource("data://weather/cities"))[0].text == "Oslo,Lima"

                # -- calls work, over HTTP and stdio (env passed to the child) -------------------------
                assert (await client.call_tool("weather_forecast", {"city": "Oslo", "days": 2})).data \
                    == "Oslo: sunny for 2 day(s)"
                assert (await client.call_tool("local_whereami", {})).data["label"] == "stdio-one"
                assert (await client.call_tool("legacy_forecast", {"city": "Rome"})).data == "Rome: sunny for 1 day(s)"
                grumpy = await client.call_tool("weather_grumpy", {}, raise_on_error=False)
                assert grumpy.is_error and grumpy.content[0].text == "grumpy says no"

                # -- slow and garbage upstreams: clean tool errors ------------------------------------
                slow = await client.call_tool("weather_sleepy", {"seconds": 5}, raise_on_error=False)
                assert slow.is_error and "did not answer within 2s" in slow.content[0].text
                junk = await client.call_tool("junk_forecast", {"city": "x"}, raise_on_error=False)
                assert junk.is_error and "invalid MCP answer" in junk.content[0].text

                # -- the HTTP upstream dies: clean errors, everything else keeps working -----------------
                stop(weather)
                down = await client.call_tool("weather_forecast", {"city": "Oslo"}, raise_on_error=False)
                assert down.is_error and "upstream 'weather' is unreachable" in down.content[0].text
                assert (await client.call_tool("whoami", {})).data["user_id"] == "alice"
                assert (await client.call_tool("local_forecast", {"city": "Lima"})).data == "Lima: sunny for 1 day(s)"
                names = {t.name for t in await client.list_tools()}
                assert "local_forecast" in names and "whoami" in names and "weather_forecast" not in names
                ready = httpx.get(gw.base_url + "/ready", timeout=5)
                assert ready.status_code == 200, ready.text
                health = ready.json()["upstreams"]
                assert health["weather"]["status"] == "down"
                assert "UpstreamUnavailable" in health["weather"]["last_error"]
                assert health["local"]["status"] == "up" and health["local"]["transport"] == "stdio"
                assert health["junk"]["status"] == "down"
                assert health["legacy"]["status"] == "up" and health["legacy"]["transport"] == "sse"

                # -- restarted on the same port: calls work again (no permanent failure state) -------
                weather = start_upstream("http", weather_port, tmp_path / "weather.log")

                async def works() -> bool:
                    result = await client.call_tool("weather_forecast", {"city": "Oslo"}, raise_on_error=False)
                    return not result.is_error

                await poll(works, timeout=15, what="weather upstream back")
                await poll(lambda: _listed(client, "weather_forecast"), timeout=5, what="weather tools listed again")
                assert httpx.get(gw.base_url + "/ready", timeout=5).json()["upstreams"]["weather"]["status"] == "up"
    finally:
        stop(weather)

    rows = wait_rows(admin_conn, "SELECT tool_name, status, error_message FROM gateway.mcp_requests"
                     " WHERE split_part(tool_name, '_', 1) = ANY(%s) ORDER BY \"timestamp\"", 9,
                     ["weather", "junk", "local", "legacy"])
    by_status: dict[tuple[str, str], list[str | None]] = {}
    for tool, status, error in rows:
        by_status.setdefault((tool, status), []).append(error)
    assert ("weather_forecast", "success") in by_status
    assert ("legacy_forecast", "success") in by_status
    assert ("local_whereami", "success") in by_status and ("local_forecast", "success") in by_status
    assert by_status[("weather_grumpy", "error")][0] == "grumpy says no"
    assert by_status[("weather_sleepy", "error")][0].startswith("UpstreamTimeout: ")
    assert by_status[("junk_forecast", "error")][0].startswith("UpstreamProtocolError: ")
    assert any(e and e.startswith("UpstreamUnavailable: upstream 'weather' is unreachable")
               for e in by_status[("weather_forecast", "error")])
    sessions = query(admin_conn, "SELECT DISTINCT user_id FROM gateway.mcp_requests")
    assert sessions == [("alice",)]


async def _listed(client: Client, name: str) -> bool:
    return name in {t.name for t in await client.list_tools()}


async def test_upstream_down_at_start_answers_unavailable_then_recovers(
        database: TestDatabase, tmp_path: Path, admin_conn: psycopg.Connection) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[[upstreams]]\nname = "late"\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = 2\n'
                      'retry_seconds = 0.2\nprotocol = "legacy"\n')
    with running_gateway(database, tmp_path / "gw", args=("serve", "--config", str(config))) as gw:
        async with Client(gw.mcp_url, auth=make_jwt("bob", "acme"), mode="legacy") as client:
            assert not any(t.name.startswith("late_") for t in await client.list_tools())
            result = await client.call_tool("late_forecast", {"city": "x"}, raise_on_error=False)
            assert result.is_error and "upstream 'late' is unreachable" in result.content[0].text
            with upstream("http", port, tmp_path / "late.log"):
                await poll(lambda: _listed(client, "late_forecast"), timeout=10, what="late upstream listed")
                assert (await client.call_tool("late_forecast", {"city": "x"})).data == "x: sunny for 1 day(s)"
            # Restarted between two calls: the gateway's handshake-era session to it is stale (404);
            # the call is retried once on a new session, so the caller never sees the restart.
            with upstream("http", port, tmp_path / "late.log"):
                assert (await client.call_tool("late_forecast", {"city": "y"})).data == "y: sunny for 1 day(s)"
    rows = wait_rows(admin_conn, "SELECT status, error_message FROM gateway.mcp_requests"
                     " WHERE tool_name = 'late_forecast' ORDER BY \"timestamp\"", 3)
    assert rows[0][0] == "error" and rows[0][1].startswith("UpstreamUnavailable: ")
    assert rows[-2:] == [("success", None), ("success", None)]
