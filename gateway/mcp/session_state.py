"""FastMCP's session state for the gateway's server and the servers it mounts: FastMCP's default in-memory
store, with reads of keys that were never written answered without going through that store's layers.

FastMCP reads the session's visibility rules from this store on every tool lookup (`get_tool`, so on every
`tools/call`), and a session that never enabled or disabled a component has none: the read misses. In the
default store a miss still runs some sixty Python calls, several of them runtime type checks (~9 us).
Keys only come into being through `put` / `put_many`, so a key never written here is known missing
without asking; every other read, and every write, goes to the store as before. Keys are remembered, not
forgotten on delete (a delete racing a write of the same key must not leave a written key unremembered),
up to `max_keys`; past that every read asks the store, as without this wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from key_value.aio.protocols.key_value import AsyncKeyValue
from key_value.aio.stores.memory import MemoryStore
from key_value.aio.wrappers.base import BaseWrapper

MAX_KEYS = 50_000  # ~10 MB remembered at most; a session writes one key per state key it sets


class WrittenKeysStore(BaseWrapper):
    """An AsyncKeyValue that knows which keys were ever written, and answers a read of any other with None.

    `key_value` is the store it wraps (a new MemoryStore by default): nothing else may write to it.
    """

    def __init__(self, key_value: AsyncKeyValue | None = None, *, max_keys: int = MAX_KEYS) -> None:
        self.key_value = key_value if key_value is not None else MemoryStore()
        self._default = getattr(self.key_value, "default_collection", None)
        self._max_keys = max_keys
        self._written: set[tuple[str | None, str]] | None = set()  # None: too many to remember, ask the store

    def _where(self, collection: str | None) -> str | None:
        return collection or self._default

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        written = self._written
        if written is not None and (self._where(collection), key) not in written:
            return None
        return await self.key_value.get(key, collection=collection)

    async def put(self, key: str, value: Mapping[str, Any], *, collection: str | None = None,
                  ttl: SupportsFloat | None = None) -> None:
        self._remember(collection, (key,))  # before the write: a read racing it asks the store
        await super().put(key, value, collection=collection, ttl=ttl)

    async def put_many(self, keys: Sequence[str], values: Sequence[Mapping[str, Any]], *,
                       collection: str | None = None, ttl: SupportsFloat | None = None) -> None:
        self._remember(collection, keys)
        await super().put_many(keys, values, collection=collection, ttl=ttl)

    def _remember(self, collection: str | None, keys: Sequence[str]) -> None:
        if self._written is None:
            return
        where = self._where(collection)
        self._written.update((where, key) for key in keys)
        if len(self._written) > self._max_keys:
            self._written = None
