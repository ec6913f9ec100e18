"""`mcp-gateway dev`: a dev tenant, user and token, and paste-ready client configs."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

DEV_TENANT = "dev"
DEV_USER = "dev"
DEV_EMAIL = "dev@localhost"


async def dev_token(db: Any, data_dir: Path) -> str:
    """The dev token kept in DATA_DIR/dev-token (0600), or a new one if it is gone or revoked."""
    from auth.pat import hash_pat
    from gateway.tokens import PostgresTokenStore, create_token

    path = Path(data_dir) / "dev-token"
    if path.exists():
        token = path.read_text().strip()
        record = await PostgresTokenStore(db).find_by_hash(hash_pat(token))
        if record is not None and record.revoked_at is None and record.expires_at is None:
            return token
    _, token = await create_token(db, tenant_id=DEV_TENANT, user_id=DEV_USER, email=DEV_EMAIL, name="Developer",
                                  role="admin", expires_in=None, token_name="mcp-gateway dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def client_configs(url: str, token: str) -> dict[str, str]:
    header = f"Authorization: Bearer {token}"
    mcp_json = json.dumps({"mcpServers": {"mcp-gateway": {
        "type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}}}, indent=2)
    vscode_json = json.dumps({"servers": {"mcp-gateway": {
        "type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}}}, indent=2)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "hello"}}})
    curl = (f"curl -s {shlex.quote(url)} -H {shlex.quote(header)} -H 'Content-Type: application/json'"
            f" -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28'"
            f" -d {shlex.quote(body)}")
    return {
        "Claude Code": f"claude mcp add --transport http mcp-gateway {url} --header {shlex.quote(header)}",
        "Cursor / Windsurf (~/.cursor/mcp.json, ~/.codeium/windsurf/mcp_config.json)": mcp_json,
        "VS Code (.vscode/mcp.json)": vscode_json,
        "curl": curl,
    }


def print_client_configs(url: str, token: str) -> None:
    console = Console(stderr=False, soft_wrap=True)
    console.print(Panel.fit(f"[bold]mcp-gateway dev[/bold]\nMCP URL: {url}\nToken:   {token}",
                            title="ready"))
    console.print("OAuth clients (ChatGPT, claude.ai, VS Code, Cursor) can connect with the URL alone: "
                  "they sign in on the gateway's page with the token above.", markup=False, highlight=False)
    for name, text in client_configs(url, token).items():
        console.print(f"\n[bold]{name}[/bold]")
        console.print(text, markup=False, highlight=False)
    console.print()
