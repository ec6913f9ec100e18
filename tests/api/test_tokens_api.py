"""Personal access tokens over REST, abuse cases first: another member, another tenant, an auditor,
a smuggled tenant or role, junk input, a flood. Then the happy path: shown once, works for /mcp,
refused once revoked."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from fastmcp import Client

from auth.pat import display_prefix, generate_pat, hash_pat
from tests.api.conftest import ApiEnv
from tests.api.seed import A, B


def seed_token(env: ApiEnv, tenant: str, user: str, name: str, role: str = "member") -> tuple[str, str]:
    """A token written straight into the table (as an operator's CLI would): (token_id, secret)."""
    secret = generate_pat()
    with psycopg.connect(env.database.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO gateway.api_tokens (tenant_id, user_id, name, prefix, token_hash, role)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING token_id::text",
            (tenant, user, name, display_prefix(secret), hash_pat(secret), role)).fetchone()
    assert row is not None
    return row[0], secret


def revoked_at(env: ApiEnv, token_id: str) -> object:
    with psycopg.connect(env.database.admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT revoked_at FROM gateway.api_tokens WHERE token_id = %s", (token_id,)).fetchone()
    assert row is not None
    return row[0]


def delete(env: ApiEnv, who: str, token_id: str) -> httpx.Response:
    return env.http.delete(f"/api/tokens/{token_id}", headers={"Authorization": f"Bearer {env.token(who)}"})


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def others(api_env: ApiEnv) -> dict[str, str]:
    """Tokens of people other than the callers: bob (acme member), alice of globex, globex's admin."""
    return {"bob": seed_token(api_env, A, "bob", "bob-laptop")[0],
            "b_alice": seed_token(api_env, B, "alice", "zz-secret-alice")[0],
            "b_admin": seed_token(api_env, B, "zz-secret-zed", "zz-secret-zed-ci", "admin")[0]}


def test_a_member_lists_only_their_own_tokens(api_env: ApiEnv, others: dict[str, str]) -> None:
    mine = seed_token(api_env, A, "alice", "alice-own")[0]
    r = api_env.get("member", "/api/tokens")
    assert r.status_code == 200, r.text
    ids = {t["token_id"] for t in r.json()["tokens"]}
    assert mine in ids and not ids & set(others.values())
    assert all(t["mine"] and (t["tenant_id"], t["user_id"]) == (A, "alice") for t in r.json()["tokens"])
    # Asking for someone else never widens what row-level security allows.
    assert api_env.get("member", "/api/tokens", user_id="bob").json()["tokens"] == []
    # alice of another tenant has the same user id, and still sees none of acme's alice.
    b_ids = {t["token_id"] for t in api_env.get("other_member", "/api/tokens").json()["tokens"]}
    assert mine not in b_ids and others["b_alice"] in b_ids
    assert "token_hash" not in r.text and "hash" not in r.text


def test_a_member_cannot_revoke_someone_elses_token(api_env: ApiEnv, others: dict[str, str]) -> None:
    for token_id in others.values():
        r = delete(api_env, "member", token_id)
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "not_found", "detail": "no such token"}
        assert revoked_at(api_env, token_id) is None


def test_a_tenant_admin_sees_and_revokes_the_tenant_only(api_env: ApiEnv, others: dict[str, str]) -> None:
    r = api_env.get("admin", "/api/tokens")
    ids = {t["token_id"] for t in r.json()["tokens"]}
    assert others["bob"] in ids and others["b_alice"] not in ids and others["b_admin"] not in ids
    assert "zz-secret" not in r.text
    for token_id in (others["b_alice"], others["b_admin"]):
        assert delete(api_env, "admin", token_id).status_code == 404
        assert revoked_at(api_env, token_id) is None
    victim = seed_token(api_env, A, "bob", "bob-old-phone")[0]
    r = delete(api_env, "admin", victim)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked" and r.json()["mine"] is False
    assert revoked_at(api_env, victim) is not None


def test_an_auditor_reads_everything_and_changes_nothing(api_env: ApiEnv, others: dict[str, str]) -> None:
    ids = {t["token_id"] for t in api_env.get("auditor", "/api/tokens").json()["tokens"]}
    assert set(others.values()) <= ids
    r = delete(api_env, "auditor", others["bob"])
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert revoked_at(api_env, others["bob"]) is None
    r = api_env.post("auditor", "/api/tokens", {"name": "mine"})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]


@pytest.mark.parametrize(("who", "body", "status", "fragment"), [
    ("member", {"name": "x", "role": "admin"}, 403, "role member only"),
    ("admin", {"name": "x", "role": "auditor"}, 403, "not auditor"),
    ("member", {"name": "x", "role": "root"}, 422, "role"),
    ("member", {"name": "x", "tenant_id": B}, 422, "tenant_id"),
    ("member", {"name": "x", "user_id": "bob"}, 422, "user_id"),
    ("member", {"name": ""}, 422, "name"),
    ("member", {"name": "a\nb"}, 422, "name"),
    ("member", {"name": "x" * 101}, 422, "name"),
    ("member", {"name": "x", "expires_in": "forever"}, 422, "expires_in"),
    ("member", {"name": "x", "expires_in": "0d"}, 422, "expires_in"),
    ("member", {"name": "x", "expires_in": "9999d"}, 422, "expires_in"),
    ("member", ["name"], 422, "body"),
    ("member", None, 422, "body"),
])
def test_bad_create_requests_are_refused_with_one_line(api_env: ApiEnv, who: str, body: object, status: int,
                                                       fragment: str) -> None:
    before = api_env.get("auditor", "/api/tokens").json()["count"]
    r = api_env.post(who, "/api/tokens", body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert fragment in detail and "\n" not in detail and "Traceback" not in r.text
    assert api_env.get("auditor", "/api/tokens").json()["count"] == before  # nothing written


def test_junk_bodies_and_ids(api_env: ApiEnv) -> None:
    headers = {"Authorization": f"Bearer {api_env.token('member')}", "Content-Type": "application/json"}
    r = api_env.http.post("/api/tokens", content=b"{not json", headers=headers)
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    r = api_env.http.post("/api/tokens", content=b"x" * 20_000, headers=headers)
    assert r.status_code == 413
    for bad in ("not-a-uuid", "1' OR '1'='1", "00000000-0000-0000-0000-000000000000"):
        assert delete(api_env, "member", bad).status_code == 404
    assert api_env.http.get("/api/tokens").status_code == 401


def test_created_token_is_shown_once_works_for_mcp_and_dies_when_revoked(api_env: ApiEnv) -> None:
    r = api_env.post("admin", "/api/tokens", {"name": "ci robot", "expires_in": "30d", "role": "member"})
    assert r.status_code == 201, r.text
    created = r.json()
    secret, token_id = created["token"], created["token_id"]
    assert secret.startswith(created["prefix"]) and created["state"] == "active" and created["role"] == "member"
    assert r.headers["cache-control"] == "no-store"
    listed = api_env.get("admin", "/api/tokens")
    assert token_id in listed.text and secret not in listed.text  # never again
    assert all("token" not in t for t in listed.json()["tokens"])

    async def whoami() -> dict[str, object]:
        async with Client(api_env.gateway.mcp_url, auth=secret) as client:
            result = await client.call_tool("whoami", {})
            return dict(result.structured_content or {})

    import asyncio

    me = asyncio.run(whoami())
    assert me.get("user_id") == "carol" and me.get("role") == "member", me
    # The new token carries the role it was given: as a member it sees only carol's tokens.
    own = api_env.http.get("/api/tokens", headers=bearer(secret)).json()["tokens"]
    assert {t["user_id"] for t in own} == {"carol"}

    assert delete(api_env, "admin", token_id).json()["state"] == "revoked"
    assert secret not in api_env.gateway.log()  # never logged
    deadline = time.monotonic() + 15
    while api_env.http.get("/api/tokens", headers=bearer(secret)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works"
        time.sleep(0.2)


def test_a_flood_of_tokens_is_capped(api_env: ApiEnv) -> None:
    codes = [api_env.post("other_admin", "/api/tokens", {"name": f"n{i}"}).status_code for i in range(30)]
    first_refusal = codes.index(409)
    assert set(codes[:first_refusal]) == {201} and set(codes[first_refusal:]) == {409}
    active = api_env.get("other_admin", "/api/tokens", user_id="zz-secret-zed", state="active").json()["count"]
    assert active == 25
    r = api_env.post("other_admin", "/api/tokens", {"name": "one more"})
    assert r.json()["error"] == "too_many_tokens" and "revoke one" in r.json()["detail"]
