"""The per-user client pool against a real bearer-checking upstream: one client per user, bounded, replaced when
the credential changes, closed when evicted."""

from __future__ import annotations

import json
from pathlib import Path

from fastmcp import Client

from gateway.credentials.clients import UserBearer, UserClients
from gateway.mcp.upstreams import _alive, _leave
from tests.credentials.test_per_user_calls import _start
from tests.gateway_proc import free_port
from tests.upstreams.helpers import poll, stop


async def test_bounded_per_user_clients(tmp_path: Path) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"t-ann": "ann", "t-ben": "ben", "t-cy": "cy", "t-ann-2": "ann"}))
    upstream = _start(port, tokens, tmp_path / "upstream.log")
    url = f"http://127.0.0.1:{port}/mcp"

    def make(auth: UserBearer) -> Client:
        return Client(url, auth=auth, timeout=10)

    pool = UserClients(make, _leave, max_users=2)
    try:
        async def who(key: tuple[str, str], token: str) -> str:
            entry = await pool.get(key, token, _alive)
            async with entry.client:
                return (await entry.client.call_tool("whoami", {})).data["user"]

        assert await who(("t", "ann"), "t-ann") == "ann"
        assert await who(("t", "ben"), "t-ben") == "ben"
        first_ann = pool.current(("t", "ann"))
        assert first_ann is not None
        assert await who(("t", "cy"), "t-cy") == "cy"  # the least recently used (ann) is evicted and closed
        assert len(pool) == 2 and pool.current(("t", "ann")) is None
        await poll(lambda: _closed(first_ann.client), what="evicted client closed")

        ben = pool.current(("t", "ben"))
        assert await who(("t", "ben"), "t-ben") == "ben" and pool.current(("t", "ben")) is ben  # reused
        assert await who(("t", "ann"), "t-ann-2") == "ann"  # a new credential: a new client
        assert repr(pool.current(("t", "ann")).auth) == "UserBearer(***)"  # type: ignore[union-attr]
    finally:
        await pool.close()
        stop(upstream)


async def _closed(client: Client) -> bool:
    return not client.is_connected()
