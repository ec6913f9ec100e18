"""A second OS process verifying PATs against PostgreSQL: `python -m tests.auth.pat_server PORT`.

Reads MCP_GATEWAY_APP_DATABASE_URL; serves the auth test app (see conftest.build_app) until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvicorn

from auth import AuthSettings
from auth.provider import GatewayAuth
from gateway.store.db import Database, DatabaseUrls
from gateway.store.tokens import PostgresTokenStore
from tests.auth.conftest import build_app


async def main(port: int) -> None:
    app_url = os.environ["MCP_GATEWAY_APP_DATABASE_URL"]
    urls = DatabaseUrls(admin=app_url, app=app_url, console=app_url, derived_logins=False, embedded=False)
    async with Database(urls, min_size=1, max_size=2) as db:
        await db.pool.wait(timeout=15)
        gateway_auth = GatewayAuth(AuthSettings(), token_store=PostgresTokenStore(db))
        config = uvicorn.Config(build_app(gateway_auth), host="127.0.0.1", port=port, log_level="warning")
        try:
            await uvicorn.Server(config).serve()
        finally:
            await gateway_auth.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
