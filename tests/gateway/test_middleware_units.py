"""The MCP middleware chain in process (in-memory client, no HTTP, no database), fast.

The real-HTTP tests (test_tracking.py, tests/access, tests/quotas) prove the same behaviour end to
end; these pin each middleware's contract. Each middleware takes `principal_of`, so the caller is
injected here instead of being verified from a token.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError

from auth import Principal
from gateway.config import AccessConfig, QuotaConfig
from gateway.mcp.access import AccessMiddleware, AccessPolicy
from gateway.mcp.quotas import QuotaMiddleware, Quotas
from gateway.tracking.middleware import Tracker, TrackingMiddleware
from gateway.tracking.pricing import Pricing
from gateway.tracking.records import Record, SessionOpened, ToolCalled
from gateway.tracking.sessions import AnalyticsSessions

ALICE = Principal(user_id="alice", tenant_id="acme", token_kind="pat")
ADA = Principal(user_id="ada", tenant_id="acme", role="admin", token_kind="pat")


class RecordingWriter:
    """What tracking needs from TrackingWriter: `submit`."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, record: Record) -> None:
        self.records.append(record)

    def calls(self) -> list[ToolCalled]:
        return [r for r in self.records if isinstance(r, ToolCalled)]


def chain(principal: Principal | None, *, access: dict[str, Any] | None = None,
          quotas: dict[str, Any] | None = None) -> tuple[FastMCP, RecordingWriter, list[ToolCalled]]:
    writer = RecordingWriter()
    tracker = Tracker(writer, AnalyticsSessions(writer, idle_timeout=600))  # type: ignore[arg-type]
    seen: list[ToolCalled] = []
    tracker.on_recorded.append(seen.append)

    def principal_of() -> Principal | None:
        return principal

    middleware: list[Any] = [TrackingMiddleware(tracker, principal_of)]
    if quotas is not None:
        middleware.append(QuotaMiddleware(Quotas(QuotaConfig.model_validate(quotas), Pricing()), principal_of))
    middleware.append(AccessMiddleware(AccessPolicy(AccessConfig.model_validate(access or {})), principal_of))
    mcp = FastMCP("units", middleware=middleware)

    @mcp.tool
    def echo(text: str) -> str:
        return text

    @mcp.tool
    def boom() -> str:
        raise ValueError("kaput")

    @mcp.tool(tags={"admin"})
    def secret() -> str:
        return "s"

    return mcp, writer, seen


async def test_tracking_records_success_error_and_unknown_tool_once_each() -> None:
    mcp, writer, seen = chain(ALICE)
    async with Client(mcp) as client:
        assert (await client.call_tool("echo", {"text": "hi"})).data == "hi"
        with pytest.raises(ToolError):
            await client.call_tool("boom", {})
        with pytest.raises(ToolError):
            await client.call_tool("nope", {})
    assert [(c.tool_name, c.status) for c in writer.calls()] == [
        ("echo", "success"), ("boom", "error"), ("nope", "error")]
    assert "kaput" in (writer.calls()[1].error_message or "")
    assert len([r for r in writer.records if isinstance(r, SessionOpened)]) == 1  # one analytics session
    assert seen == writer.calls()  # the on_recorded edge sees exactly what is written


async def test_without_a_caller_nothing_is_recorded() -> None:
    mcp, writer, _ = chain(None)
    async with Client(mcp) as client:
        assert (await client.call_tool("echo", {"text": "x"})).data == "x"
    assert writer.records == []


async def test_access_hides_admin_tools_from_members_and_records_the_denial() -> None:
    mcp, writer, _ = chain(ALICE, access={"roles": {"member": {"deny": ["bo*"]}}})
    async with Client(mcp) as client:
        assert {t.name for t in await client.list_tools()} == {"echo"}
        with pytest.raises(ToolError) as hidden:
            await client.call_tool("secret", {})
        with pytest.raises(ToolError) as missing:
            await client.call_tool("nope", {})
    assert str(hidden.value).replace("secret", "X") == str(missing.value).replace("nope", "X")
    secret_call = writer.calls()[0]
    assert (secret_call.tool_name, secret_call.status) == ("secret", "denied")
    assert "admin tool" in (secret_call.error_message or "")


async def test_access_lets_admins_use_admin_tools() -> None:
    mcp, writer, _ = chain(ADA)
    async with Client(mcp) as client:
        assert {t.name for t in await client.list_tools()} == {"echo", "boom", "secret"}
        assert (await client.call_tool("secret", {})).data == "s"
    assert [c.status for c in writer.calls()] == ["success"]


async def test_quota_refusal_is_an_error_result_recorded_as_denied() -> None:
    mcp, writer, _ = chain(ALICE, quotas={"roles": {"member": {"calls_per_minute": 1, "burst": 1}}})
    async with Client(mcp) as client:
        assert (await client.call_tool("echo", {"text": "a"})).data == "a"
        refused = await client.call_tool("echo", {"text": "b"}, raise_on_error=False)
    assert refused.is_error and refused.structured_content is not None
    assert refused.structured_content["error"] == "rate_limited"
    assert [c.status for c in writer.calls()] == ["success", "denied"]


def _context(name: Any, version: Any = "1", session_id: str = "s" * 32) -> Any:
    """The parts of a FastMCP Context that `client_info` reads: transport, session, request headers."""
    from types import SimpleNamespace

    params = SimpleNamespace(client_info=SimpleNamespace(name=name, version=version))
    request = SimpleNamespace(headers={"mcp-session-id": session_id}, query_params={})
    return SimpleNamespace(transport="streamable-http",
                           session=SimpleNamespace(protocol_version="2025-11-25", client_params=params),
                           request_context=SimpleNamespace(request=request))


def test_client_info_is_cleaned_the_same_whether_or_not_it_was_seen_before() -> None:
    # Cleaned once per distinct set of values (a cache): every field is part of what is looked up, and a
    # value that cannot be looked up is cleaned without the cache.
    from gateway.tracking.middleware import client_info

    first = client_info(_context("claude\u202e\x00 code\n"))
    assert first.name == "claude code" and first.version == "1" and first.protocol_session_id == "s" * 32
    assert client_info(_context("claude\u202e\x00 code\n")) == first
    assert client_info(_context("claude\u202e\x00 code\n", session_id="t" * 32)).protocol_session_id == "t" * 32
    assert client_info(_context("cursor")).name == "cursor"
    assert client_info(_context(["not", "a", "name"])).name is None  # unhashable: no cache, still cleaned
    from gateway.tracking.middleware import _cleaned_client_info

    before = _cleaned_client_info.cache_info().currsize
    long = client_info(_context("x" * 100_000))  # a made-up name: cleaned and cut, never kept as a key
    assert long.name == "x" * 200 and _cleaned_client_info.cache_info().currsize == before
