"""/metrics: scraped from a running gateway after real tool calls, parsed with prometheus_client."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families

from gateway.http.metrics import MAX_TOOL_LABELS, OTHER, UNKNOWN, GatewayMetrics, route_of, upstream_health
from gateway.tracking.records import ToolCalled
from gateway.tracking.writer import WriterStats
from tests.gateway_proc import GatewayProcess, make_jwt


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def scrape(gateway: GatewayProcess) -> tuple[httpx.Response, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = httpx.get(gateway.base_url + "/metrics", timeout=5)
    assert response.status_code == 200
    return response, samples(response.text)


async def test_metrics_after_tool_calls(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme")
    async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:
        for i in range(3):
            await client.call_tool("echo", {"text": f"secret-argument-{i}"})
        await client.call_tool("explode", {"reason": "x"}, raise_on_error=False)
        _, during = scrape(gateway)
        assert value(during, "mcp_gateway_active_sessions") >= 1
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.post(gateway.mcp_url, json={})).status_code == 401
        bad = make_jwt("mallory", "acme", secret="another-secret-that-is-long-enough-32b")
        refused = await http.post(gateway.mcp_url, json={}, headers={"Authorization": f"Bearer {bad}"})
        assert refused.status_code == 401

    deadline = time.monotonic() + 15
    while True:
        response, parsed = scrape(gateway)
        if value(parsed, "mcp_gateway_writer_records_written_total") >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(parsed, "mcp_gateway_tool_calls_total", tool="echo", status="success") == 3
    assert value(parsed, "mcp_gateway_tool_calls_total", tool="explode", status="error") == 1
    assert value(parsed, "mcp_gateway_tool_call_duration_seconds_count", tool="echo") == 3
    assert value(parsed, "mcp_gateway_tool_call_duration_seconds_bucket", tool="echo", le="+Inf") == 3
    assert value(parsed, "mcp_gateway_auth_failures_total", reason="no token") >= 1
    assert value(parsed, "mcp_gateway_auth_failures_total", reason="bad signature") >= 1
    assert value(parsed, "mcp_gateway_http_requests_total", route="/mcp", method="POST", status="200") >= 4
    assert value(parsed, "mcp_gateway_http_requests_total", route="/mcp", method="POST", status="401") >= 2
    assert value(parsed, "mcp_gateway_http_request_duration_seconds_count", route="/mcp") >= 6
    assert value(parsed, "mcp_gateway_writer_records_written_total") == 4
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_count") >= 1
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_sum") >= 4  # 4 calls + the session opening
    assert ("mcp_gateway_writer_queue_depth", frozenset()) in parsed
    assert value(parsed, "mcp_gateway_writer_database_up") == 1
    assert value(parsed, "mcp_gateway_writer_records_dropped_total") == 0
    assert any(name == "mcp_gateway_build_info" for name, _ in parsed)
    # No per-user labels, and nothing a caller sent as an argument.
    label_names = {k for _, labels in parsed for k, _ in labels}
    assert not label_names & {"user", "user_id", "tenant", "tenant_id", "session", "session_id"}
    assert "secret-argument" not in response.text and "alice" not in response.text


def metrics_for(upstream_health: Any = None) -> GatewayMetrics:
    return GatewayMetrics(writer=SimpleNamespace(stats=WriterStats(), backlog=7), open_sessions=lambda: 0,
                          instance_id="t", upstream_health=upstream_health)


def call(tool: str, status: str = "success") -> ToolCalled:
    import uuid
    from datetime import UTC, datetime

    return ToolCalled(id=uuid.uuid4(), session_id=uuid.uuid4(), session_key="k", tenant_id="t", user_id="u",
                      tool_name=tool, status=status, error_message=None, duration_ms=12.0,  # type: ignore[arg-type]
                      at=datetime.now(UTC), client_type=None)


def test_each_app_has_its_own_registry_and_hooks() -> None:
    m1, m2 = metrics_for(), metrics_for()  # no "Duplicated timeseries" error
    m1.tool_called(call("echo"))
    m1.auth_refused("token expired")
    p1, p2 = samples(m1.render().decode()), samples(m2.render().decode())
    assert value(p1, "mcp_gateway_tool_calls_total", tool="echo", status="success") == 1
    assert value(p2, "mcp_gateway_tool_calls_total", tool="echo", status="success") == 0
    assert value(p1, "mcp_gateway_auth_failures_total", reason="token expired") == 1
    assert value(p1, "mcp_gateway_writer_queue_depth") == 7


def test_flush_sizes_are_observed_once() -> None:
    metrics = metrics_for()
    stats = metrics.writer.stats
    stats.flushes, stats.flush_sizes = 2, [3, 5]
    parsed = samples(metrics.render().decode())
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_count") == 2
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_sum") == 8
    stats.flushes, stats.flush_sizes = 3, [3, 5, 10]
    parsed = samples(metrics.render().decode())
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_count") == 3
    assert value(parsed, "mcp_gateway_writer_flush_batch_size_sum") == 18


def test_tool_label_cardinality_is_bounded() -> None:
    metrics = metrics_for()
    for i in range(MAX_TOOL_LABELS + 20):  # tools that ran: real, but no more than the cap get a label
        metrics.tool_called(call(f"real_{i}", "success"))
    for i in range(1000):  # names that are not tools: one label for all, whatever the status
        metrics.tool_called(call(f"made_up_{i}", ("error", "denied")[i % 2]))
    for i in range(100):  # other methods' names (resource URIs, prompts) are not tools
        record = call(f"file:///tmp/{i}", "success")
        record.method = "resources/read"
        metrics.tool_called(record)
    parsed = samples(metrics.render().decode())
    tools = {dict(labels)["tool"] for name, labels in parsed if name == "mcp_gateway_tool_calls_total"}
    assert len(tools) == MAX_TOOL_LABELS + 3 and {OTHER, UNKNOWN, "-"} <= tools
    assert value(parsed, "mcp_gateway_tool_calls_total", tool=OTHER, status="success") == 20
    assert value(parsed, "mcp_gateway_tool_calls_total", tool=UNKNOWN, status="error") == 500
    assert value(parsed, "mcp_gateway_tool_calls_total", tool=UNKNOWN, status="denied") == 500


async def test_random_unknown_tool_names_do_not_mint_labels(gateway: GatewayProcess) -> None:
    """1,000 calls to made-up tool names over real HTTP: the tool label set stays what it was."""
    import secrets

    token = make_jwt("mallory", "acme")
    async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:
        await client.call_tool("echo", {"text": "x"})
        await client.call_tool("explode", {"reason": "x"}, raise_on_error=False)  # a real tool that fails
        for _ in range(1000):
            await client.call_tool(f"nope_{secrets.token_hex(8)}", {}, raise_on_error=False)
    _, parsed = scrape(gateway)
    tools = {dict(labels)["tool"] for name, labels in parsed if name == "mcp_gateway_tool_calls_total"}
    assert tools == {"echo", "explode", UNKNOWN}, tools
    assert value(parsed, "mcp_gateway_tool_calls_total", tool=UNKNOWN, status="error") == 1000
    assert value(parsed, "mcp_gateway_tool_calls_total", tool="explode", status="error") == 1


def test_upstream_health_shapes() -> None:
    assert upstream_health(None) == {}
    assert upstream_health({"a": True, "b": False}) == {"a": 1.0, "b": 0.0}
    assert upstream_health(lambda: {"a": SimpleNamespace(healthy=False)}) == {"a": 0.0}
    assert upstream_health({"a": {"healthy": True}}) == {"a": 1.0}
    assert upstream_health(lambda: 1 / 0) == {}
    assert upstream_health({"a": "up", "b": "down", "c": "unknown", "d": {"status": "up"}}) == {
        "a": 1.0, "b": 0.0, "d": 1.0}
    metrics = metrics_for(upstream_health=lambda: {"weather": True, "files": False})
    parsed = samples(metrics.render().decode())
    assert value(parsed, "mcp_gateway_upstream_up", upstream="weather") == 1
    assert value(parsed, "mcp_gateway_upstream_up", upstream="files") == 0
    # gateway.mcp.upstreams.Upstreams.health_states, as gateway.wiring passes it
    upstreams = SimpleNamespace(health_states=lambda: {"wiki": "up", "jira": "down", "new": "unknown"})
    parsed = samples(metrics_for(upstream_health=upstreams.health_states).render().decode())
    assert value(parsed, "mcp_gateway_upstream_up", upstream="wiki") == 1
    assert value(parsed, "mcp_gateway_upstream_up", upstream="jira") == 0
    assert ("mcp_gateway_upstream_up", frozenset({("upstream", "new")})) not in parsed


def test_routes_are_a_fixed_set() -> None:
    assert route_of("/mcp") == "/mcp" and route_of("/mcp/") == "/mcp"
    assert route_of("/messages/") == "/messages" and route_of("/api/mcp/sessions/x") == "/api"
    assert route_of("/.well-known/oauth-protected-resource/mcp") == "/.well-known"
    assert route_of("/wp-admin/x") == "other" and route_of("/mcpx") == "other"


def test_made_up_http_methods_do_not_mint_labels(gateway: GatewayProcess) -> None:
    """Any token is a valid HTTP method to the server: 200 made-up ones count as one `other` label value."""
    import secrets

    with httpx.Client(timeout=5) as http:
        for _ in range(200):
            http.request(f"X{secrets.token_hex(6).upper()}", gateway.base_url + "/health")
        http.get(gateway.base_url + "/health")
    _, parsed = scrape(gateway)
    methods = {dict(labels)["method"] for name, labels in parsed if name == "mcp_gateway_http_requests_total"}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods
    assert sum(v for (name, labels), v in parsed.items()
               if name == "mcp_gateway_http_requests_total" and dict(labels)["method"] == "other") == 200
