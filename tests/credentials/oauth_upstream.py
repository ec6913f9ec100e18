"""An upstream MCP server protected by a real authorization server: RS256 JWTs checked against its JWKS,
RFC 9728 metadata naming that server. Answers who called.

    python tests/credentials/oauth_upstream.py PORT AS_URL AUDIENCE
"""

from __future__ import annotations

import sys

from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token

port, issuer, audience = int(sys.argv[1]), sys.argv[2], sys.argv[3]
verifier = JWTVerifier(jwks_uri=f"{issuer}/jwks", issuer=issuer, audience=audience, algorithm="RS256")
auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[issuer],  # type: ignore[list-item]
                          base_url=f"http://127.0.0.1:{port}")
mcp = FastMCP("oauth-upstream", auth=auth)


@mcp.tool
async def whoami(tag: str = "") -> dict[str, str]:
    """Who called (the `sub` of the access token)."""
    access = get_access_token()
    return {"user": str(access.claims.get("sub")) if access else "", "tag": tag}


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=port, show_banner=False)
