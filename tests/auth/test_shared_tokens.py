"""Requests with the same bearer token share one AccessToken; nothing else about a request changes.

Over HTTP: a tool reports the identity of the AccessToken it sees and the principal, for two users and
for a personal token whose record changes or is revoked between calls (the token store is asked on every
call: `pat_cache_ttl=0`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.dependencies import get_access_token
from pydantic import ValidationError

from auth.provider import GatewayAuth, access_token_for, current_principal, principal_from_access_token
from auth.shared_tokens import SharedAccessToken, SharedAccessTokens
from tests.auth.conftest import HS_ISSUER, MemoryTokenStore, base_settings, claims, hs_token, principal_of, serve


@asynccontextmanager
async def token_app(store: MemoryTokenStore, **settings: Any) -> AsyncIterator[tuple[str, GatewayAuth]]:
    gateway_auth = GatewayAuth(base_settings(pat_cache_ttl=0, **settings), token_store=store)
    mcp = FastMCP("shared-tokens", auth=gateway_auth.provider)

    kept: list[Any] = []  # every token seen stays alive: no two can have the same id()

    @mcp.tool
    def seen() -> dict[str, Any]:
        access = get_access_token()
        kept.append(access)
        principal = current_principal()
        return {"token_object": id(access), "client_id": access.client_id if access else None,
                "principal": principal.model_dump(mode="json") if principal else None}

    app = mcp.http_app(path="/mcp")
    async with serve(app) as url:
        try:
            yield url, gateway_auth
        finally:
            await gateway_auth.aclose()


async def seen(url: str, token: str) -> dict[str, Any]:
    async with Client(f"{url}/mcp", auth=token, mode="legacy") as client:
        result = await client.call_tool("seen", {})
    assert result.structured_content is not None
    return result.structured_content


async def test_one_token_one_access_token_and_users_never_share() -> None:
    store = MemoryTokenStore()
    bob, eve = store.add(user_id="bob"), store.add(user_id="eve", tenant_id="evil")
    async with token_app(store) as (url, gateway_auth):
        first, second = await seen(url, bob), await seen(url, bob)
        other = await seen(url, eve)
        jwt_user = await seen(url, hs_token(claims(iss=HS_ISSUER, sub="carol")))
    assert first["token_object"] == second["token_object"]  # two sessions, the same token: one object
    assert first["principal"] == second["principal"] and first["principal"]["user_id"] == "bob"
    assert other["token_object"] != first["token_object"]
    assert (other["principal"]["user_id"], other["principal"]["tenant_id"]) == ("eve", "evil")
    assert other["client_id"] == principal_of(other["principal"]).key != first["client_id"]
    assert jwt_user["principal"]["user_id"] == "carol" and jwt_user["token_object"] not in (
        first["token_object"], other["token_object"])
    assert len(gateway_auth.verifier.issued) == 3  # one per token, however many requests


async def test_a_changed_record_is_seen_at_once_and_a_revoked_token_is_refused() -> None:
    from auth.pat import hash_pat

    store = MemoryTokenStore()
    token = store.add(user_id="bob", role="member")
    async with token_app(store) as (url, _):
        before = await seen(url, token)
        key = hash_pat(token)
        store.records[key] = replace(store.records[key], role="admin")
        promoted = await seen(url, token)
        store.revoke(token)
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(f"{url}/mcp", headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
    assert before["principal"]["role"] == "member" and promoted["principal"]["role"] == "admin"
    assert promoted["token_object"] != before["token_object"]  # a new principal: a new token
    assert refused.status_code == 401  # the shared token never outlives the verdict on the token


def test_shared_token_is_frozen_and_carries_its_principal() -> None:
    principal = principal_of({"user_id": "bob", "tenant_id": "acme", "token_kind": "pat", "role": "admin"})
    access = access_token_for("t", principal)
    with pytest.raises(ValidationError):
        access.client_id = "someone else"  # type: ignore[misc]
    assert principal_from_access_token(access) is principal
    # a copy (or any token not made here) is read from its claims, as before
    copied = SharedAccessToken.model_validate(access.model_dump())
    assert copied.principal is None and principal_from_access_token(copied) == principal


def test_cache_is_keyed_by_token_principal_and_leeway_and_bounded() -> None:
    bob = principal_of({"user_id": "bob", "tenant_id": "acme", "token_kind": "jwt_hs"})
    made: list[SharedAccessToken] = []

    def make(token: str, principal: Any, leeway: float) -> SharedAccessToken:
        made.append(access_token_for(token, principal, leeway))
        return made[-1]

    cache = SharedAccessTokens(max_entries=2)
    a = cache.get("a", bob, 30.0, make)
    assert cache.get("a", principal_of(bob.model_dump()), 30.0, make) is a  # equal, not identical: shared
    assert cache.get("a", bob, 0.0, make) is not a  # another leeway: another expiry
    assert cache.get("a", replace_role(bob, "admin"), 0.0, make).principal.role == "admin"  # type: ignore[union-attr]
    cache.get("b", bob, 0.0, make)
    cache.get("c", bob, 0.0, make)
    assert len(cache) == 2 and len(made) == 5


def replace_role(principal: Any, role: str) -> Any:
    return principal.model_copy(update={"role": role})
