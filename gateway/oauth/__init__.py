"""The gateway as OAuth 2.1 authorization server for its own MCP endpoint.

    store.py      PostgreSQL state (clients, grants, codes, refresh-token families, pending requests)
    keys.py       ES256 signing keys in the database: rotation, JWKS, the verifier's key source
    clients.py    the client model and redirect URI rules (exact; RFC 8252 loopback ports)
    cimd.py       Client ID Metadata Documents, fetched SSRF-safely
    server.py     authlib's grants and endpoints wired to the store
    idp.py        sign-in delegated to the team's OIDC provider
    pages.py      login and consent pages
    routes.py     the HTTP endpoints and RFC 8414 metadata
    grants.py     grants listed/revoked over /api/oauth/grants
    cli.py        `mcp-gateway oauth grants|revoke`
    wiring.py     build_oauth(): everything above from settings
"""
