"""`mcp-gateway dev`: a dev tenant, user and token, and paste-ready client configs."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

DEV_TENANT = "dev"
DEV_USER = "dev"
DEV_EMAIL = "dev@localhost"
DEV_ROLE = "admin"  # a tenant admin: the dashboard and `sql` show the whole dev tenant


async def dev_token(db: Any, data_dir: Path) -> str:
    """The dev token kept in DATA_DIR/dev-token (0600), or a new one if it is gone or revoked."""
    from auth.pat import hash_pat
    from gateway.store.tokens import PostgresTokenStore, create_token

    path = Path(data_dir) / "dev-token"
    if path.exists():
        token = path.read_text().strip()
        record = await PostgresTokenStore(db).find_by_hash(hash_pat(token))
        if record is not None and record.revoked_at is None and record.expires_at is None:
            return token
    _, token = await create_token(db, tenant_id=DEV_TENANT, user_id=DEV_USER, email=DEV_EMAIL, name="Developer",
                                  role=DEV_ROLE, expires_in=None, token_name="mcp-gateway dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@dataclass(frozen=True)
class Section:
    """One thing `dev` prints for people to paste: a shell command, a JSON file, or a Python script."""

    title: str
    kind: str  # "shell" | "json" | "python"
    text: str


def _config(servers_key: str, entry: dict[str, Any]) -> str:
    return json.dumps({servers_key: {"mcp-gateway": entry}}, indent=2)


def client_sections(url: str, token: str) -> list[Section]:
    """What each client reads, one block per client (field names differ: Windsurf's `serverUrl`)."""
    header = f"Authorization: Bearer {token}"
    headers = {"Authorization": f"Bearer {token}"}
    return [
        Section("Claude Code (run once)", "shell",
                f"claude mcp add --transport http mcp-gateway {url} --header {shlex.quote(header)}"),
        Section("Claude Code project file (.mcp.json)", "json",
                _config("mcpServers", {"type": "http", "url": url, "headers": headers})),
        Section("Claude Desktop (claude_desktop_config.json, through mcp-remote; needs Node.js)", "json",
                _config("mcpServers", {"command": "npx",
                                       "args": ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}"],
                                       "env": {"AUTH_HEADER": f"Bearer {token}"}})),
        Section("Cursor (~/.cursor/mcp.json)", "json", _config("mcpServers", {"url": url, "headers": headers})),
        Section("Windsurf (~/.codeium/windsurf/mcp_config.json)", "json",
                _config("mcpServers", {"serverUrl": url, "headers": headers})),
        Section("VS Code (.vscode/mcp.json)", "json",
                _config("servers", {"type": "http", "url": url, "headers": headers})),
        Section("curl (MCP 2026-07-28: one request, no handshake)", "shell", curl_command(url, token)),
        Section("Python (pip install fastmcp; save as try_gateway.py, run with python)", "python",
                python_snippet(url, token)),
    ]


def curl_command(url: str, token: str, tool: str = "echo", arguments: dict[str, Any] | None = None) -> str:
    """A sessionless 2026-07-28 tools/call: the headers must repeat the body's method and tool name,
    and `params._meta` carries the protocol version and client capabilities (else HTTP 400)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments if arguments is not None else {"text": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "curl", "version": "1"}}}},
        separators=(",", ":"))
    headers = [f"Authorization: Bearer {token}", "Content-Type: application/json",
               "Accept: application/json, text/event-stream", "MCP-Protocol-Version: 2026-07-28",
               "Mcp-Method: tools/call", f"Mcp-Name: {tool}"]
    return f"curl -sS {shlex.quote(url)} " + " ".join(f"-H {shlex.quote(h)}" for h in headers) + \
        f" -d {shlex.quote(body)}"


def python_snippet(url: str, token: str) -> str:
    return "\n".join([
        "import asyncio",
        "from fastmcp import Client",
        "async def main() -> None:",
        f"    async with Client({url!r}, auth={token!r}) as client:",
        "        print((await client.call_tool('add', {'a': 2, 'b': 3})).data)",
        "        print((await client.call_tool('whoami', {})).data)",
        "asyncio.run(main())",
    ])


def next_commands() -> list[str]:
    """Worth trying next, in another terminal (same environment): they use the same database."""
    return [
        "mcp-gateway report costs --tenant dev --by tool",
        "mcp-gateway sql --tenant dev \"SELECT tool_name, count(*) AS calls FROM gateway.mcp_requests GROUP BY 1\"",
        "mcp-gateway token create --tenant dev --user alice --name Alice --role member",
    ]


def print_dev_banner(base_url: str, token: str, *, database: str) -> None:
    """What `dev` prints once it serves: who the token is, where things are, what to paste."""
    url = base_url + "/mcp"
    console = Console(stderr=False, soft_wrap=True, highlight=False)
    console.print(Panel.fit(
        f"[bold]mcp-gateway dev[/bold]\n"
        f"MCP URL:   {url}\n"
        f"Token:     {token}\n"
        f"Token for: user {DEV_USER}, tenant {DEV_TENANT}, role {DEV_ROLE}\n"
        f"Dashboard: {base_url}/dashboard",
        title="ready"))
    console.print(f"Database: {database}. Sign in to the dashboard with the token.", markup=False)
    console.print("OAuth clients (ChatGPT, claude.ai, VS Code, Cursor) can connect with the URL alone: "
                  "they sign in on the gateway's page with the token above.", markup=False)
    for section in client_sections(url, token):
        console.print(f"\n[bold]{section.title}:[/bold]")
        console.print(section.text, markup=False)
    console.print("\n[bold]Next, in another terminal:[/bold]")
    for command in next_commands():
        console.print(command, markup=False)
    console.print("\nCtrl-C stops the gateway.")


def embedded_description(data_dir: Path) -> str:
    from gateway.store.embedded import EmbeddedPostgres

    cluster = EmbeddedPostgres(data_dir)
    runs_as = f", runs as user {cluster.runs_as}" if cluster.runs_as else ""
    return f"embedded PostgreSQL in {cluster.home}{runs_as}"


def print_dev_exit(database: str) -> None:
    print(f"mcp-gateway dev stopped. The {database} keeps running, so the next `mcp-gateway dev` starts at once; "
          "stop it with: mcp-gateway db stop", flush=True)
