"""MCP over raw HTTP, byte for byte what the test chooses: JSON with `\\uXXXX` escapes can carry what
fastmcp.Client cannot send (lone surrogates in a client name or an argument), in both protocol eras."""

from __future__ import annotations

import json
from typing import Any

import httpx

ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"


def _post(http: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return http.post(url, headers=headers | {"Content-Type": "application/json", "Accept": ACCEPT},
                     content=json.dumps(body).encode("ascii"))  # ensure_ascii: any str travels as escapes


def call_tool(http: httpx.Client, mcp_url: str, token: str, tool: str, arguments: dict[str, Any], *,
              era: str, client_name: str = "raw", client_version: str = "1") -> httpx.Response:
    """One tools/call. `era` "legacy": initialize + initialized + call + DELETE on a fresh protocol session;
    "modern": one sessionless 2026-07-28 request. Returns the tools/call answer (or the first refusal)."""
    auth = {"Authorization": f"Bearer {token}"}
    info = {"name": client_name, "version": client_version}
    if era == "modern":
        headers = auth | {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
        return _post(http, mcp_url, headers, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": tool, "arguments": arguments,
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientInfo": info,
                      "io.modelcontextprotocol/clientCapabilities": {}}}})
    init = _post(http, mcp_url, auth, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": info}})
    if init.status_code != 200:
        return init
    session = auth | {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": LEGACY}
    _post(http, mcp_url, session, {"jsonrpc": "2.0", "method": "notifications/initialized"}).raise_for_status()
    try:
        return _post(http, mcp_url, session, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                              "params": {"name": tool, "arguments": arguments}})
    finally:
        http.delete(mcp_url, headers=session)


def succeeded(response: httpx.Response) -> bool:
    return response.status_code == 200 and '"isError":false' in response.text
