"""Per-tool access over a real gateway: lists per role/tenant, hidden = unknown on the wire, recorded denied."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastmcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference

from tests.gateway.conftest import query, wait_rows
from tests.gateway_proc import GatewayProcess, make_jwt, running_gateway
from tests.pg import TestDatabase

CONFIG = """
[access]
admin_tools = ["run_sql", "danger_*"]

[access.roles.member]
deny = ["github_*"]

[access.roles.auditor]
deny = ["add"]

[access.tenants.globex.roles.member]
allow = ["whoami", "echo", "github_*"]
"""

MINE = {"purge", "danger_reset", "echo", "add", "github_issue"}


@pytest.fixture
def gateway(database: TestDatabase, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    with running_gateway(database, tmp_path / "gw", args=(
            "serve", "--config", str(config), "--tools", "tests.access.admin_tools:mcp")) as gw:
        yield gw


async def _names(gw: GatewayProcess, user: str, tenant: str, role: str) -> set[str]:
    async with Client(gw.mcp_url, auth=make_jwt(user, tenant, role)) as client:
        return {t.name for t in await client.list_tools()}


async def test_each_role_and_tenant_sees_and_may_call_only_its_tools(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    member = await _names(gateway, "mia", "acme", "member")
    admin = await _names(gateway, "ada", "acme", "admin")
    auditor = await _names(gateway, "aud", "acme", "auditor")
    globex = await _names(gateway, "gus", "globex", "member")

    assert member & MINE == {"echo", "add"}  # no admin tools (tag, glob), no github_* (role deny)
    assert {"whoami", "my_usage", "health_check"} <= member
    assert "run_sql" not in member
    assert admin & MINE == MINE
    assert auditor & MINE == MINE - {"add"}
    # The tenant's allow list replaces the role's; the role's deny still applies; admin tools stay hidden.
    assert globex == {"whoami", "echo"}
    assert member < admin

    # A call outside the tenant's allow list: the unknown-tool answer, recorded as denied with the rule.
    async with Client(gateway.mcp_url, auth=make_jwt("gus", "globex", "member")) as client:
        assert (await client.call_tool("echo", {"text": "hi"})).data == "hi"
        refused = await client.call_tool("add", {"a": 1, "b": 2}, raise_on_error=False)
        assert refused.is_error and refused.content[0].text == "Unknown tool: 'add'"
    rows = wait_rows(admin_conn, "SELECT tool_name, status, error_message FROM gateway.mcp_requests"
                     " WHERE status = 'denied'", 1)
    assert rows == [("add", "denied", "tool 'add' not in access.tenants.globex.roles.member.allow")]


def _rpc(method: str, params: dict[str, Any], id_: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def _body(response: httpx.Response) -> str:
    """The JSON-RPC message of a response (JSON or one SSE event), as text."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        assert len(data) == 1, text
        text = data[0]
    return text


def _normalized(text: str, id_: int, name: str) -> str:
    message = json.loads(text)
    assert message["id"] == id_
    message["id"] = 0
    return json.dumps(message, sort_keys=True).replace(name, "<tool>")


async def test_hidden_tool_answers_exactly_like_unknown_tool_and_is_recorded_denied(
        gateway: GatewayProcess, admin_conn: psycopg.Connection) -> None:
    headers = {"Authorization": f"Bearer {make_jwt('mia', 'acme', 'member')}",
               "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as http:
        init = await http.post("/mcp", json=_rpc("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}}, 1))
        assert init.status_code == 200, init.text
        session = {"Mcp-Session-Id": init.headers["mcp-session-id"]}
        await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)

        answers = {}
        # Same length names, so even the raw bytes line up: hidden (admin tag), hidden (glob), nonexistent.
        for id_, name in ((2, "purge"), (3, "pxrge"), (4, "danger_reset"), (5, "dxnger_reset"),
                          (6, "github_issue"), (7, "gxthub_issue")):
            response = await http.post("/mcp", json=_rpc("tools/call", {"name": name, "arguments": {"days": 1}},
                                                          id_), headers=session)
            answers[name] = (response.status_code, response.headers.get("content-type"),
                             _normalized(_body(response), id_, name))
        for hidden, unknown in (("purge", "pxrge"), ("danger_reset", "dxnger_reset"),
                                ("github_issue", "gxthub_issue")):
            assert answers[hidden] == answers[unknown], (hidden, answers[hidden], answers[unknown])
        assert "Unknown tool: '<tool>'" in answers["purge"][2] and '"isError": true' in answers["purge"][2]
        # And byte for byte, modulo id and name:
        raw = await http.post("/mcp", json=_rpc("tools/call", {"name": "purge", "arguments": {}}, 8), headers=session)
        raw_unknown = await http.post("/mcp", json=_rpc("tools/call", {"name": "pxrge", "arguments": {}}, 8),
                                      headers=session)
        assert re.sub("purge", "X", raw.text) == re.sub("pxrge", "X", raw_unknown.text)

    # The admin can call it.
    async with Client(gateway.mcp_url, auth=make_jwt("ada", "acme", "admin")) as client:
        assert (await client.call_tool("purge", {"days": 3})).data == "purged 3 days"

    rows = wait_rows(admin_conn, "SELECT tool_name, status, error_message, user_id FROM gateway.mcp_requests"
                     " ORDER BY \"timestamp\"", 9)
    by_tool = {(r[0], r[3]): r[1:3] for r in rows}
    assert by_tool[("purge", "mia")][0] == "denied"
    assert "admin tool" in by_tool[("purge", "mia")][1]
    assert by_tool[("danger_reset", "mia")] == ("denied", "tool 'danger_reset' is an admin tool (role member)")
    assert by_tool[("github_issue", "mia")] == ("denied", "tool 'github_issue' denied by access.roles.member.deny"
                                                           " 'github_*'")
    assert by_tool[("pxrge", "mia")][0] == "error"  # a missing tool is an error, a hidden one is denied
    assert by_tool[("purge", "ada")] == ("success", None)


async def _error_of(call: Any) -> tuple[int, str, Any]:
    with pytest.raises(MCPError) as caught:
        await call
    return caught.value.code, caught.value.message, caught.value.data


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_prompts_and_resources_follow_the_same_rules_and_every_use_is_recorded(
        gateway: GatewayProcess, admin_conn: psycopg.Connection, mode: str) -> None:
    async with Client(gateway.mcp_url, auth=make_jwt("mia", "acme", "member"), mode=mode) as client:
        prompts = {p.name for p in await client.list_prompts()}
        resources = {str(r.uri) for r in await client.list_resources()}
        templates = {t.uri_template for t in await client.list_resource_templates()}
        assert "greet" in prompts and "audit_brief" not in prompts  # tagged admin: hidden from members
        assert "docs://readme" in resources and "vault://keys" not in resources
        assert "weather://{city}" in templates

        greeting = await client.get_prompt("greet", {"name": "Mia"})
        assert greeting.messages[0].content.text == "Hello Mia, welcome."
        assert (await client.read_resource("docs://readme"))[0].text == "read me first"
        assert (await client.read_resource("weather://oslo"))[0].text == "sunny in oslo"

        # Hidden answers exactly like missing (same code, same message and data modulo the name).
        hidden = await _error_of(client.get_prompt("audit_brief", {"topic": "x"}))
        missing = await _error_of(client.get_prompt("audxt_brief", {"topic": "x"}))
        assert repr(hidden).replace("audit_brief", "N") == repr(missing).replace("audxt_brief", "N"), (hidden, missing)
        hidden = await _error_of(client.read_resource("vault://keys"))
        missing = await _error_of(client.read_resource("vault://kexs"))
        assert repr(hidden).replace("keys", "N") == repr(missing).replace("kexs", "N"), (hidden, missing)
        # completion/complete is governed too (the gateway serves no completions: method not found), and a
        # completion for a hidden prompt answers like one for a missing prompt.
        completions = [await _error_of(client.complete(PromptReference(type="ref/prompt", name=name),
                                                       {"name": "topic", "value": "x"}))
                       for name in ("greet", "audit_brief", "audxt_brief")]
        assert completions[0] == completions[1] == completions[2], completions

    async with Client(gateway.mcp_url, auth=make_jwt("ada", "acme", "admin"), mode=mode) as admin:
        assert "audit_brief" in {p.name for p in await admin.list_prompts()}
        assert (await admin.read_resource("vault://keys"))[0].text == "the keys"

    # A tenant allow list governs prompts and resources too: globex members may use only what it names.
    async with Client(gateway.mcp_url, auth=make_jwt("gus", "globex", "member"), mode=mode) as globex:
        assert await globex.list_prompts() == [] and await globex.list_resources() == []
        await _error_of(globex.read_resource("docs://readme"))

    rows = wait_rows(admin_conn, "SELECT user_id, method, tool_name, status, error_message FROM gateway.mcp_requests"
                     " WHERE method <> 'tools/call'", 12)
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
    assert got[("mia", "prompts/get", "greet")] == ("success", None)
    assert got[("mia", "resources/read", "docs://readme")] == ("success", None)
    assert got[("mia", "resources/read", "weather://oslo")] == ("success", None)
    assert got[("mia", "prompts/get", "audit_brief")] == (
        "denied", "prompt 'audit_brief' is an admin prompt (role member)")
    assert got[("mia", "resources/read", "vault://keys")] == (
        "denied", "resource 'vault://keys' is an admin resource (role member)")
    assert got[("mia", "prompts/get", "audxt_brief")][0] == "error"
    assert got[("ada", "resources/read", "vault://keys")] == ("success", None)
    assert got[("mia", "completion/complete", "greet")][0] == "error"
    assert got[("mia", "completion/complete", "audxt_brief")][0] == "error"
    assert got[("mia", "completion/complete", "audit_brief")] == (
        "denied", "prompt 'audit_brief' is an admin prompt (role member)")
    assert got[("gus", "resources/read", "docs://readme")] == (
        "denied", "resource 'docs://readme' not in access.tenants.globex.roles.member.allow")
    # Listing is discovery, not a call: nothing recorded for it.
    assert not [r for r in rows if r[1].endswith("/list")]
    costs = query(admin_conn, "SELECT prompt_tokens, estimated_cost FROM gateway.mcp_requests"
                              " WHERE method = 'resources/read' AND status = 'success' AND tool_name = 'docs://readme'")
    assert costs and costs[0][0] > 0 and costs[0][1] > 0  # the content read is counted like a tool result
