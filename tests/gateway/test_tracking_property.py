"""Property: whatever the claims and the client name hold, a served call is exactly one row with the right
principal, a refused token is a 401 and no row, and other users' calls keep being written.

Arbitrary strings (NUL, lone surrogates, controls, bidi, `/`, `|`, up to 3,000 characters) as `sub`, tenant,
name, email, client name/version and the tool argument; HS256 JWTs to one real gateway process shared by all
examples; both protocol eras, through raw HTTP (which can carry lone surrogates) and fastmcp.Client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from fastmcp import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp_types import Implementation

from tests.crafted_text import claim_text
from tests.gateway.raw_mcp import call_tool, succeeded
from tests.gateway_proc import JWT_SECRET, GatewayProcess, make_jwt, running_gateway
from tests.pg import DatabaseFactory, TestDatabase

EXAMPLES = 40
MAX_TOKEN = 16 * 1024
# The documented rules (docs/auth.md), written out independently of the code under test.
NOT_IN_IDENTIFIERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
                                "\ud800-\udfff]")
NOT_IN_DISPLAY = NOT_IN_IDENTIFIERS
LIMITS = {"user_name": 200, "user_email": 320, "client_type": 200, "client_version": 100}


@pytest.fixture(scope="module")
def shared_database(db_factory: DatabaseFactory) -> Iterator[TestDatabase]:
    database = db_factory.create()
    yield database
    db_factory.drop(database)


@pytest.fixture(scope="module")
def shared_gateway(shared_database: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir: Path = tmp_path_factory.mktemp("gw")
    with running_gateway(shared_database, data_dir, args=("serve", "--tools", "tests.sample_tools:mcp")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def conn(shared_database: TestDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(shared_database.admin_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def identifier_ok(value: str, limit: int) -> bool:
    return bool(value.strip()) and len(value) <= limit and not NOT_IN_IDENTIFIERS.search(value)


def has_surrogate(*values: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for value in values for ch in value)


def count(conn: psycopg.Connection, sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


# Identifiers: mostly valid (any letter, `/`, `|`, spaces: so principals come close to each other), else arbitrary.
_valid_char = st.one_of(st.characters(codec=None, exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")),
                        st.sampled_from("ab/| "))
identifier = st.one_of(st.text(_valid_char, min_size=1, max_size=8), st.text(st.sampled_from("ab/|"), min_size=1,
                       max_size=5), claim_text())
cases = st.fixed_dictionaries({
    "sub": identifier, "tenant": identifier, "name": claim_text(), "email": claim_text(),
    "client_name": claim_text(), "client_version": claim_text(), "text": claim_text(),
    "era": st.sampled_from(["modern", "legacy"]), "driver": st.sampled_from(["raw", "fastmcp"]),
})


def call_with_fastmcp(gateway: GatewayProcess, token: str, case: dict[str, str]) -> bool:
    async def run() -> bool:
        info = Implementation(name=case["client_name"], version=case["client_version"])
        mode = "legacy" if case["era"] == "legacy" else "auto"
        async with Client(gateway.mcp_url, auth=token, mode=mode, client_info=info) as client:
            result = await client.call_tool("echo", {"text": case["text"]})
            return not result.is_error

    return asyncio.run(run())


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=cases)
def test_every_served_call_is_one_row_with_its_principal(case: dict[str, str], shared_gateway: GatewayProcess,
                                                          conn: psycopg.Connection, http: httpx.Client) -> None:
    gateway = shared_gateway
    token = jwt.encode({"sub": case["sub"], "tenant": case["tenant"], "name": case["name"], "email": case["email"],
                        "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    tenant = case["tenant"].strip()
    accepted = identifier_ok(case["sub"], 500) and identifier_ok(tenant, 200) and len(token) <= MAX_TOKEN
    total_before = count(conn, "SELECT count(*) FROM gateway.mcp_requests")
    control_before = count(conn, "SELECT count(*) FROM gateway.mcp_requests WHERE tenant_id = 'control'")
    mine_before = count(conn, "SELECT count(*) FROM gateway.mcp_requests WHERE tenant_id = %s AND user_id = %s",
                        tenant, case["sub"]) if accepted else 0

    driver = case["driver"] if accepted and not has_surrogate(case["client_name"], case["client_version"],
                                                              case["text"]) else "raw"
    if driver == "fastmcp":
        served = call_with_fastmcp(gateway, token, case)
        assert served, "a valid token's call failed"
    else:
        answer = call_tool(http, gateway.mcp_url, token, "echo", {"text": case["text"]}, era=case["era"],
                           client_name=case["client_name"], client_version=case["client_version"])
        served = succeeded(answer)
        if not accepted:
            assert answer.status_code == 401, answer.text[:300]
            assert answer.json()["error_description"].startswith("token "), answer.text[:300]
        elif not served:
            # Only the handshake era's strict JSON parser turns a lone surrogate away, before anything runs.
            assert case["era"] == "legacy" and has_surrogate(case["client_name"], case["client_version"],
                                                             case["text"]), answer.text[:300]
            assert answer.status_code == 400, answer.text[:300]

    event(f"{case['era']} via {driver}: " + ("served" if served else "refused" if not accepted else "not parsed"))

    # Someone else calls after: once that row is in, ours is too (one writer, first in, first out).
    assert succeeded(call_tool(http, gateway.mcp_url, make_jwt("ctl", "control"), "echo", {"text": "c"},
                               era="modern"))
    wait_until(lambda: count(conn, "SELECT count(*) FROM gateway.mcp_requests WHERE tenant_id = 'control'")
               == control_before + 1, "the control user's row")
    assert count(conn, "SELECT count(*) FROM gateway.mcp_requests") == total_before + int(served) + 1

    if served:
        assert count(conn, "SELECT count(*) FROM gateway.mcp_requests WHERE tenant_id = %s AND user_id = %s",
                     tenant, case["sub"]) == mine_before + 1
        row = conn.execute(
            "SELECT s.tenant_id, s.user_id, s.user_name, s.user_email, s.client_type, s.client_version"
            " FROM gateway.mcp_requests r JOIN gateway.mcp_sessions s USING (session_id)"
            " WHERE r.tenant_id = %s AND r.user_id = %s ORDER BY r.\"timestamp\" DESC LIMIT 1",
            (tenant, case["sub"])).fetchone()
        assert row is not None and row[:2] == (tenant, case["sub"])
        shown = dict(zip(("user_name", "user_email", "client_type", "client_version"), row[2:], strict=True))
        sent = {"user_name": case["name"], "user_email": case["email"], "client_type": case["client_name"],
                "client_version": case["client_version"]}
        for field, value in shown.items():
            if value is None:
                continue
            assert value == value.strip() and 0 < len(value) <= LIMITS[field], (field, value)
            assert not NOT_IN_DISPLAY.search(value), (field, value)
            raw = sent[field]
            clean = raw == raw.strip() and 0 < len(raw) <= LIMITS[field] and not NOT_IN_DISPLAY.search(raw)
            # Faithful when there was nothing to clean: always for the client (it is part of the session key),
            # for the profile when this call opened the session (each handshake-era call does).
            if clean and (field.startswith("client") or case["era"] == "legacy"):
                assert value == raw, (field, value, raw)

    health = http.get(gateway.base_url + "/ready")
    assert health.status_code == 200 and health.json()["writer"]["healthy"], health.text
