"""An upstream MCP server that checks its bearer token and answers who called.

    python tests/credentials/whoami_upstream.py PORT TOKENS_FILE [json]

With `json`, POSTs are answered with JSON (json_response=True) rather than SSE streams.

TOKENS_FILE: JSON {"token": "user", ...}, re-read on every request (a test revokes a token
by rewriting it). Unknown tokens get HTTP 401.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastmcp import FastMCP
from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token

TOKENS = Path(sys.argv[2])


class FileTokens(TokenVerifier):
    async def verify_token(self, token: str) -> AccessToken | None:
        user = json.loads(TOKENS.read_text()).get(token)
        if user is None:
            return None
        return AccessToken(token=token, client_id=user, scopes=[], claims={"sub": user})


mcp = FastMCP("whoami-upstream", auth=FileTokens())


@mcp.tool
async def whoami(tag: str = "") -> dict[str, str]:
    """Who called (the user the bearer token belongs to)."""
    access = get_access_token()
    return {"user": access.claims["sub"] if access else "", "tag": tag}


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False,
            json_response=sys.argv[3:] == ["json"])
