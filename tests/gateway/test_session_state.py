"""FastMCP session state and per-session visibility through the gateway, and the store that answers a read of a
key never written without asking (gateway/mcp/session_state.py): it must answer exactly as the store it wraps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from hypothesis import given, settings
from hypothesis import strategies as st
from key_value.aio.stores.memory import MemoryStore

from gateway.mcp.session_state import WrittenKeysStore
from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase

KEYS = st.sampled_from(["a", "b", "s1:_visibility_rules", "s2:_visibility_rules"])
COLLECTIONS = st.sampled_from([None, "default_collection", "fastmcp_state", "other"])
VALUES = st.dictionaries(st.sampled_from(["value", "n"]), st.integers() | st.text(max_size=5), max_size=2)
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("get"), KEYS, COLLECTIONS),
    st.tuples(st.just("get_many"), st.lists(KEYS, max_size=3), COLLECTIONS),
    st.tuples(st.just("ttl"), KEYS, COLLECTIONS),
    st.tuples(st.just("put"), KEYS, COLLECTIONS, VALUES, st.sampled_from([None, 3600])),
    st.tuples(st.just("put_many"), st.lists(KEYS, max_size=3, unique=True), COLLECTIONS, VALUES),
    st.tuples(st.just("delete"), KEYS, COLLECTIONS),
    st.tuples(st.just("delete_many"), st.lists(KEYS, max_size=3), COLLECTIONS),
), max_size=30)


async def _apply(store: Any, operation: tuple[Any, ...]) -> Any:
    kind, keys, collection = operation[:3]
    if kind == "get":
        return await store.get(keys, collection=collection)
    if kind == "get_many":
        return await store.get_many(keys, collection=collection)
    if kind == "ttl":
        value, ttl = await store.ttl(keys, collection=collection)
        return value, ttl is None  # the seconds left move between the two stores' calls
    if kind == "put":
        return await store.put(keys, operation[3], collection=collection, ttl=operation[4])
    if kind == "put_many":
        return await store.put_many(keys, [operation[3]] * len(keys), collection=collection)
    if kind == "delete":
        return await store.delete(keys, collection=collection)
    return await store.delete_many(keys, collection=collection)


@settings(max_examples=200, deadline=None)
@given(operations=OPERATIONS, max_keys=st.sampled_from([2, 50_000]))
def test_it_answers_every_sequence_exactly_as_the_store_it_wraps(
        operations: list[tuple[Any, ...]], max_keys: int) -> None:
    """Against a MemoryStore of its own; with max_keys=2 most sequences outgrow what it remembers."""
    async def run() -> None:
        plain, wrapped = MemoryStore(), WrittenKeysStore(max_keys=max_keys)
        for operation in operations:
            assert await _apply(wrapped, operation) == await _apply(plain, operation), operation
    asyncio.run(run())


async def test_a_key_never_written_is_not_looked_up() -> None:
    class Counting(MemoryStore):
        reads = 0

        async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
            Counting.reads += 1
            return await super().get(key, collection=collection)

    store = WrittenKeysStore(Counting())
    assert await store.get("s1:_visibility_rules", collection="fastmcp_state") is None
    assert Counting.reads == 0
    await store.put("s1:_visibility_rules", {"value": []}, collection="fastmcp_state")
    assert await store.get("s1:_visibility_rules", collection="fastmcp_state") == {"value": []}
    assert await store.get("s2:_visibility_rules", collection="fastmcp_state") is None
    assert Counting.reads == 1


@pytest.mark.parametrize("served", ["mcp", "mounted"])
async def test_session_state_and_visibility_are_per_session_through_the_gateway(
        database: TestDatabase, tmp_path: Path, served: str) -> None:
    args = ("serve", "--tools", f"tests.session_state_tools:{served}")
    with running_gateway(database, tmp_path, args=args) as gateway:
        async with (Client(gateway.mcp_url, auth=make_jwt("ann", "acme"), mode="legacy") as first,
                    Client(gateway.mcp_url, auth=make_jwt("ann", "acme"), mode="legacy") as second,
                    Client(gateway.mcp_url, auth=make_jwt("ann", "globex"), mode="legacy") as elsewhere):
            assert (await first.call_tool("recall", {})).data == {"remembered": None}
            await first.call_tool("remember", {"value": "first's"})
            assert (await first.call_tool("recall", {})).data == {"remembered": "first's"}
            # the same user's other session, and the same user id in another tenant, see none of it
            assert (await second.call_tool("recall", {})).data == {"remembered": None}
            assert (await elsewhere.call_tool("recall", {})).data == {"remembered": None}

            await first.call_tool("hide", {"name": "ping"})
            assert "ping" not in {t.name for t in await first.list_tools()}
            with pytest.raises(ToolError, match="Unknown tool"):
                await first.call_tool("ping", {})
            assert (await second.call_tool("ping", {})).data == "pong"  # the other sessions still have it
            assert "ping" in {t.name for t in await elsewhere.list_tools()}
            await first.call_tool("show", {"name": "ping"})
            assert (await first.call_tool("ping", {})).data == "pong"

            await first.call_tool("forget", {})
            assert (await first.call_tool("recall", {})).data == {"remembered": None}
