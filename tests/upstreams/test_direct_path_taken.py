"""Which path a proxied tool call takes: posted directly on the session for a streamable-HTTP upstream that
answers with JSON (in the 2026-07-28 era FastMCP answers JSON whenever it has nothing to stream, whatever its
mode), through the MCP client for a handshake-era session answered with SSE streams, and always through the
client when direct calls are switched off. (test_direct_calls.py checks that both paths answer alike.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import FastMCP
from fastmcp.server.context import Context

import gateway.mcp.upstreams as upstreams_module
from gateway.config import UpstreamConfig
from gateway.mcp.upstream_call import SessionHttp
from gateway.mcp.upstreams import Upstreams
from tests.helpers.net import free_port
from tests.upstreams.helpers import upstream


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The backend names of the calls the direct path made (not those it declined)."""
    made: list[str] = []
    real = upstreams_module.call_tool

    async def counting(client: Any, http: Any, name: str, *args: Any) -> Any:
        result = await real(client, http, name, *args)
        made.append(name)
        return result

    monkeypatch.setattr(upstreams_module, "call_tool", counting)
    yield made


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_json_answering_upstreams_are_called_directly_sse_ones_through_the_client(
        tmp_path: Path, direct_calls: list[str], protocol: str) -> None:
    json_port, sse_port = free_port(), free_port()
    with upstream("json", json_port, tmp_path / "json.log"), upstream("http", sse_port, tmp_path / "sse.log"):
        configs = [UpstreamConfig(name="j", url=f"http://127.0.0.1:{json_port}/mcp", protocol=protocol),
                   UpstreamConfig(name="s", url=f"http://127.0.0.1:{sse_port}/mcp", protocol=protocol)]
        on, off = Upstreams(configs), Upstreams(configs, direct_calls=False)
        try:
            async with Context(fastmcp=FastMCP("t")) as ctx:
                for group in (on, off):
                    for up in group.items:
                        tool = next(t for t in await up.provider.refresh_tools() if t.name == "forecast")
                        result = await tool.run({"city": up.name}, ctx)
                        assert result.content[0].text == f"{up.name}: sunny for 1 day(s)"  # type: ignore[union-attr]
            # direct calls on: the JSON-answering upstream, and in the 2026-07-28 era the SSE-mode one too
            assert direct_calls == (["forecast", "forecast"] if protocol == "auto" else ["forecast"])
            # progress mid-call: an SSE-mode upstream streams the answer, read by the direct call in that era
            async with Context(fastmcp=FastMCP("t")) as ctx:
                tool = next(t for t in await on.items[1].provider.refresh_tools() if t.name == "progress")
                result = await tool.run({"steps": 4}, ctx)
                assert result.content[0].text == "done in 4 steps"  # type: ignore[union-attr]
            assert direct_calls[2:] == (["progress"] if protocol == "auto" else [])
            http = on.items[0]._transport.httpx_client_factory  # type: ignore[attr-defined]
            assert isinstance(http, SessionHttp) and http.json_answers
            assert not isinstance(off.items[0]._transport.httpx_client_factory,  # type: ignore[attr-defined]
                                  SessionHttp)
        finally:
            await on.stop()
            await off.stop()
