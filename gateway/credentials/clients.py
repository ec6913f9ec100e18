"""Per-user backend clients of one upstream: a bounded LRU keyed by (tenant, user).

A client carries exactly one user's credential in its transport. It is replaced when that
user's credential changes (compared by a fingerprint, never by the value) and closed when
it is evicted, so a revoked or re-linked credential is not reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx2
from fastmcp import Client

UserKey = tuple[str, str]  # (tenant_id, user_id)


class UserBearer(httpx2.Auth):
    """Sends one user's bearer token and remembers when the upstream refused it (401/403).

    The MCP client reports an HTTP 401 on an open session only as a generic JSON-RPC error;
    this is how the gateway still learns that the credential was refused.
    """

    def __init__(self, token: str) -> None:
        self._token = token
        self.refused_at = 0.0

    def auth_flow(self, request: httpx2.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = self.header()
        response = yield request
        self.observe(response.status_code)

    def header(self) -> str:
        """The Authorization header value (also for requests not sent by httpx)."""
        return f"Bearer {self._token}"

    def observe(self, status: int) -> None:
        """The upstream's answer to a request that carried this token."""
        if status in (401, 403):
            self.refused_at = time.monotonic()

    def __repr__(self) -> str:
        return "UserBearer(***)"


def fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class UserClient:
    client: Client
    fingerprint: bytes
    connected_at: float
    auth: UserBearer


class UserClients:
    def __init__(self, make: Callable[[UserBearer], Client], leave: Callable[[Client], Coroutine[Any, Any, None]],
                 max_users: int = 256) -> None:
        self._make = make
        self._leave = leave
        self._max = max_users
        self._items: OrderedDict[UserKey, UserClient] = OrderedDict()
        self._lock = asyncio.Lock()  # connects are bounded by the upstream's timeout
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._items)

    def connected_at(self, key: UserKey) -> float:
        entry = self._items.get(key)
        return entry.connected_at if entry else 0.0

    def current(self, key: UserKey | None) -> UserClient | None:
        return self._items.get(key) if key is not None else None

    def holds_another_token(self, key: UserKey, token: str) -> bool:
        """The user's client carries a token other than `token`, and nothing has refused it."""
        entry = self._items.get(key)
        return entry is not None and not entry.auth.refused_at and entry.fingerprint != fingerprint(token)

    async def get(self, key: UserKey, token: str, alive: Callable[[Client], bool]) -> UserClient:
        fp = fingerprint(token)
        entry = self._items.get(key)
        if entry is not None and entry.fingerprint == fp and alive(entry.client):
            self._items.move_to_end(key)
            return entry
        async with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry.fingerprint == fp and alive(entry.client):
                return entry
            self.evict(key)
            auth = UserBearer(token)
            fresh = self._make(auth)
            made = UserClient(fresh, fp, time.monotonic(), auth)
            self._items[key] = made
            try:
                await fresh.__aenter__()
            except BaseException:
                if key in self._items and self._items[key].client is fresh and not auth.refused_at:
                    del self._items[key]
                raise
            while len(self._items) > self._max:
                oldest = next(iter(self._items))
                self.evict(oldest)
            return made

    def evict(self, key: UserKey) -> None:
        """Stop using this user's client; it closes once requests still inside it leave."""
        entry = self._items.pop(key, None)
        if entry is not None:
            task = asyncio.create_task(self._leave(entry.client), name="mcp-gateway-user-client-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for key in list(self._items):
            self.evict(key)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
