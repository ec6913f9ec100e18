"""The fast call path answers exactly as the SDK's path does, and records exactly the same rows.

Two real gateways on one database: one with the fast path (the default), one with
MCP_GATEWAY_FAST_PATH=false. A corpus of requests — successes, failures, refusals and malformed
requests, in both protocol eras — goes to each, as a different user of the same tenants; the answers
must be equal (status, content type, JSON body; only the protocol session id differs) and so must the
rows each user leaves in gateway.mcp_requests. The fast gateway must really have served most of them.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import query, wait_for
from tests.gateway_proc import GatewayProcess, create_pat, make_jwt, running_together, start_gateway
from tests.pg import TestDatabase

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT_BOTH = "application/json, text/event-stream"

CONFIG = """
[pricing]
call_price = 0.01
input_price_per_mtok = 0
output_price_per_mtok = 0

[access.roles.member]
deny = ["slow", "routed_secret"]

[quotas]
refresh_seconds = 0.2

[quotas.roles.member]
calls_per_minute = 6000

[quotas.tenants.ratelimited.roles.member]
calls_per_minute = 1
burst = 2

[quotas.tenants.budgeted.roles.member]
calls_per_minute = 6000
daily_budget = 0.02
"""

UNICODE = "héllo ☃ 𝄞 \u202e ünïcödé"
LARGE = "x" * 150_000 + UNICODE


@dataclass(frozen=True)
class Req:
    """One request of the corpus: a JSON-RPC body (or raw bytes) and the headers that differ from a plain call."""

    label: str
    body: dict[str, Any] | bytes
    accept: str = ACCEPT_BOTH
    headers: tuple[tuple[str, str], ...] = ()
    tenant: str = "acme"


def call(name: str, arguments: dict[str, Any] | None = None, *, id_: int | str = 7, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    params.update(extra)
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


LIST = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}

CORPUS = [
    Req("list", LIST),
    Req("echo", call("echo", {"text": "plain"})),
    Req("unicode", call("echo", {"text": UNICODE})),
    Req("large", call("echo", {"text": LARGE})),
    Req("string id", call("echo", {"text": "id"}, id_="abc-1")),
    Req("structured", call("add", {"a": 2, "b": 3})),
    Req("float structured", call("add", {"a": 2.5, "b": 3})),
    Req("unknown tool", call("nope", {})),
    Req("invalid arguments", call("add", {"a": "two", "b": 3})),
    Req("missing arguments", call("add")),
    Req("tool raises", call("explode", {"reason": "on purpose"})),
    Req("denied", call("slow", {"seconds": 0})),
    Req("hidden admin tool", call("run_sql", {"sql": "SELECT 1"})),
    Req("tool raises ValueError", call("crash", {"kind": "value"})),
    Req("tool raises RuntimeError", call("crash", {"kind": "runtime"})),
    Req("structured dict", call("record", {"name": "n", "tags": ["a", "b"]})),
    Req("structured, bad type", call("record", {"name": "n", "tags": "not-a-list"})),
    Req("returns None", call("nothing", {})),
    Req("tool reads its Context", call("context_info", {})),
    Req("mounted child with middleware", call("child_reverse", {"text": "abc"})),
    Req("child middleware refuses", call("child_reverse", {"text": "refuse"})),
    Req("arguments not an object", call("echo", ["x"])),  # type: ignore[arg-type]
    Req("arguments null", {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "echo",
                                                                                         "arguments": None}}),
    Req("version pinned in _meta", call("echo", {"text": "v"}, _meta={"fastmcp": {"version": "1"}})),
    Req("no name", {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"arguments": {}}}),
    Req("name not a string", {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": 5}}),
    Req("progress token", call("echo", {"text": "p"}, _meta={"progressToken": "tok"})),
    Req("extra member", {**call("echo", {"text": "e"}), "extra": 1}),
    Req("malformed json", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {'),
    Req("batch", json.dumps([call("echo", {"text": "b"})]).encode()),
    Req("notification", {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}),
    Req("json only accept", call("echo", {"text": "j"}), accept="application/json"),
    Req("sse only accept", call("echo", {"text": "s"}), accept="text/event-stream"),
    Req("ping", {"jsonrpc": "2.0", "id": 11, "method": "ping"}),
    Req("rate limited 1", call("echo", {"text": "r1"}), tenant="ratelimited"),
    Req("rate limited 2", call("echo", {"text": "r2"}), tenant="ratelimited"),
    Req("rate limited 3", call("echo", {"text": "r3"}), tenant="ratelimited"),
    Req("budget 1", call("echo", {"text": "b1"}), tenant="budgeted"),
    Req("budget 2", call("echo", {"text": "b2"}), tenant="budgeted"),
    Req("budget 3", call("echo", {"text": "b3"}), tenant="budgeted"),
    # FastMCP's Host guard (the gateway listens on loopback) and the gateway's Origin allow-list
    Req("foreign host", call("echo", {"text": "h"}), headers=(("Host", "evil.example"),)),
    Req("foreign origin", call("echo", {"text": "o"}), headers=(("Origin", "http://evil.example"),)),
    Req("same-origin browser", call("echo", {"text": "o"}), headers=(("Origin", "http://127.0.0.1"),)),
]

MODERN_ONLY = [
    Req("header names another tool", call("echo", {"text": "h"}), headers=(("Mcp-Name", "add"),)),
    Req("mcp-param header", call("echo", {"text": "v"}), headers=(("Mcp-Param-Text", "v"),)),
    # a tool that declares a routing header (x-mcp-header): the SDK checks it, on either path
    Req("declared header matches", call("routed", {"region": "eu", "text": "t"}),
        headers=(("Mcp-Param-Region", "eu"),)),
    Req("declared header mismatched", call("routed", {"region": "eu"}), headers=(("Mcp-Param-Region", "us"),)),
    Req("declared header missing", call("routed", {"region": "eu"})),
    Req("declared header, tool denied", call("routed_secret", {"region": "eu"}), headers=(("Mcp-Param-Region", "us"),)),
]
LEGACY_ONLY = [
    Req("modern envelope on a session", call("echo", {"text": "m"}, _meta={
        "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}})),
]


@pytest.fixture
def gateways(database: TestDatabase, tmp_path: Path) -> Iterator[dict[str, GatewayProcess]]:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    args = ("serve", "--config", str(config), "--tools", "tests.fastpath_tools:mcp")
    with running_together(start_gateway(database, tmp_path / "fast", args=args, wait=False),
                          start_gateway(database, tmp_path / "full", args=args, wait=False,
                                        MCP_GATEWAY_FAST_PATH="false")) as (fast, full):
        yield {"fast": fast, "full": full}


class Caller:
    """One user's view of one gateway, in one era."""

    def __init__(self, gateway: GatewayProcess, user: str, era: str, *, token: str | None = None) -> None:
        self.gateway = gateway
        self.user = user
        self.era = era
        self.http = httpx.Client(timeout=30)
        self.sessions: dict[str, str] = {}
        self._token = token
        self._tokens: dict[str, str] = {}

    def token(self, tenant: str) -> str:
        """One token per tenant for the caller's life, as a client holds one (a fixed token, or a JWT made once)."""
        if self._token is not None:
            return self._token
        if tenant not in self._tokens:
            self._tokens[tenant] = make_jwt(self.user, tenant)
        return self._tokens[tenant]

    def close(self) -> None:
        self.http.close()

    def _session(self, tenant: str) -> str:
        if tenant not in self.sessions:
            headers = {"Authorization": f"Bearer {self.token(tenant)}", "Accept": ACCEPT_BOTH,
                       "Content-Type": "application/json"}
            init = self.http.post(self.gateway.mcp_url, headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "diff", "version": "1"}}})
            init.raise_for_status()
            session_id = init.headers["mcp-session-id"]
            done = self.http.post(self.gateway.mcp_url, headers=headers | {"Mcp-Session-Id": session_id}, json={
                "jsonrpc": "2.0", "method": "notifications/initialized"})
            assert done.status_code == 202
            self.sessions[tenant] = session_id
        return self.sessions[tenant]

    def send(self, req: Req) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(req.tenant)}", "Accept": req.accept,
                   "Content-Type": "application/json"}
        body = req.body
        if self.era == "modern":
            headers["MCP-Protocol-Version"] = MODERN
            if isinstance(body, dict):
                body = _enveloped(body)
                headers["Mcp-Method"] = str(body.get("method", ""))
                name = (body.get("params") or {}).get("name")
                if isinstance(name, str) and name.isascii() and name.isprintable():  # what a header can carry
                    headers["Mcp-Name"] = name
        else:
            headers["MCP-Protocol-Version"] = LEGACY
            headers["Mcp-Session-Id"] = self._session(req.tenant)
        headers.update(dict(req.headers))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.gateway.mcp_url, headers=headers, content=content)


def _enveloped(body: dict[str, Any]) -> dict[str, Any]:
    params = dict(body.get("params") or {})
    meta = dict(params.get("_meta") or {})
    meta.setdefault("io.modelcontextprotocol/protocolVersion", MODERN)
    meta.setdefault("io.modelcontextprotocol/clientCapabilities", {})
    meta.setdefault("io.modelcontextprotocol/clientInfo", {"name": "diff", "version": "1"})
    params["_meta"] = meta
    return {**body, "params": params}


_VOLATILE = [
    (re.compile(r"retry_after_seconds=\d+"), "retry_after_seconds=N"),
    # The seconds to midnight in a budget refusal's structured content: the two answers may fall either side
    # of a second's boundary. (A rate limit's retry, in tenths, stays compared.)
    (re.compile(r'"retry_after_seconds": ?\d+(?![\d.])'), '"retry_after_seconds": -1'),
    (re.compile(r"in \d+h\d+m"), "in XhYm"),
    (re.compile(r"\d+\.\d+ ?s\b"), "N s"),
]


def _stable(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def _answer(response: httpx.Response) -> tuple[int, str, Any]:
    kind = response.headers.get("content-type", "").split(";")[0]
    try:
        body: Any = json.loads(_stable(response.text)) if response.content else None
    except ValueError:
        body = _stable(response.text)
    return response.status_code, kind, body


def test_fast_and_full_paths_answer_alike_and_record_alike(
        gateways: dict[str, GatewayProcess], admin_conn: psycopg.Connection) -> None:
    for era in ("legacy", "modern"):
        _compare(era, gateways, admin_conn)


def _compare(era: str, gateways: dict[str, GatewayProcess], admin_conn: psycopg.Connection) -> None:
    corpus = CORPUS + (MODERN_ONLY if era == "modern" else LEGACY_ONLY)
    callers = {name: Caller(gw, f"{name}-{era}", era) for name, gw in gateways.items()}
    served_before = _ready(gateways["fast"])["fast_path"]
    front_before = _ready(gateways["fast"])["front_door"]["served"]
    try:
        for req in corpus:
            fast, full = (_answer(callers[name].send(req)) for name in ("fast", "full"))
            assert fast == full, f"{era} {req.label}: fast path {fast!r:.600} != SDK path {full!r:.600}"
            assert fast[0] < 500, f"{era} {req.label}: a client's request answered {fast[0]}"
    finally:
        for caller in callers.values():
            caller.close()
    fast_path = _ready(gateways["fast"])["fast_path"]
    served = fast_path["served"] - served_before["served"]
    direct = fast_path["direct"] - served_before["direct"]
    assert served >= 15, f"{era}: the fast path served only {served} of the corpus"
    assert direct >= 12, f"{era}: only {direct} tools/call ran directly"
    assert _ready(gateways["full"])["fast_path"] == {"enabled": False, "served": 0, "direct": 0, "fell_back": 0}
    # The front door took every request the fast path served, but the first of each token (then verified the
    # whole way: the modern era has no initialize to do it), in the corpus's three tenants.
    front = _ready(gateways["fast"])["front_door"]["served"] - front_before
    assert served - 3 <= front <= served, f"{era}: the front door served {front} of the fast path's {served}"
    assert _ready(gateways["full"])["front_door"] == {"enabled": False, "served": 0}

    # Every record each gateway made is written (the calls were answered, so they were all submitted) ...
    for gateway in gateways.values():
        wait_for(partial(_drained, gateway), 15, "the writer's backlog to drain")
    # ... and they are the same rows, user for user: what was called, how it ended, why, what it cost.
    sql = ("SELECT method, tool_name, status, error_message, prompt_tokens, completion_tokens, estimated_cost"
           " FROM gateway.mcp_requests WHERE user_id = %s ORDER BY \"timestamp\"")
    rows = {name: [tuple(_stable(str(v)) for v in row) for row in query(admin_conn, sql, f"{name}-{era}")]
            for name in gateways}
    assert rows["fast"] == rows["full"], era
    assert {r[2] for r in rows["fast"]} == {"success", "error", "denied"}, era
    assert len(rows["fast"]) >= 20, era


def _drained(gateway: GatewayProcess) -> bool:
    return bool(_ready(gateway)["writer"]["backlog"] == 0)


def _ready(gateway: GatewayProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(gateway.base_url + "/ready", timeout=10).json()
    return body


def test_declared_routing_headers_are_checked_on_both_paths_against_what_the_caller_sees(
        gateways: dict[str, GatewayProcess]) -> None:
    """The checks behind the differential corpus's routing-header requests, so that both paths skipping
    them alike cannot pass: a header that disagrees with its argument, or is missing, is refused 400; one
    on a tool this caller is not shown is not checked (the tool is looked up as the caller sees it), and
    the call is refused as for any tool they cannot see."""
    for name, gateway in gateways.items():
        caller = Caller(gateway, f"routing-{name}", "modern")
        try:
            matched = caller.send(Req("matches", call("routed", {"region": "eu", "text": "t"}),
                                      headers=(("Mcp-Param-Region", "eu"),)))
            mismatched = caller.send(Req("mismatched", call("routed", {"region": "eu"}),
                                         headers=(("Mcp-Param-Region", "us"),)))
            missing = caller.send(Req("missing", call("routed", {"region": "eu"})))
            denied = caller.send(Req("denied", call("routed_secret", {"region": "eu"}),
                                     headers=(("Mcp-Param-Region", "us"),)))
            unknown = caller.send(Req("unknown", call("no_such_tool", {"region": "eu"}),
                                      headers=(("Mcp-Param-Region", "us"),)))
        finally:
            caller.close()
        assert matched.status_code == 200 and matched.json()["result"]["content"][0]["text"] == "eu: t", name
        assert mismatched.status_code == 400, name
        assert "Mcp-Param-Region header does not match" in mismatched.json()["error"]["message"], name
        assert missing.status_code == 400, name
        assert "Mcp-Param-Region header is missing" in missing.json()["error"]["message"], name
        assert denied.status_code == 200 and denied.json()["result"]["isError"], name
        assert (denied.json()["result"]["content"][0]["text"].replace("routed_secret", "T")
                == unknown.json()["result"]["content"][0]["text"].replace("no_such_tool", "T")), name


def test_a_session_is_served_only_to_its_owner_and_only_while_it_lives(gateways: dict[str, GatewayProcess]) -> None:
    """Abuse cases: another user's token (or a token of the same user's other tenant) with my session id,
    an ended session, a made-up id — the fast path serves none of them; the SDK's 404 answers, on both."""
    for name, gateway in gateways.items():
        alice, mallory = Caller(gateway, f"alice-{name}", "legacy"), Caller(gateway, f"mallory-{name}", "legacy")
        try:
            session_id = alice._session("acme")
            echo = Req("echo", call("echo", {"text": "mine"}))
            assert alice.send(echo).status_code == 200
            # mallory's token is verified and cached (her own session), so her stolen-id requests meet the
            # front door too: it must send them the whole way, to the SDK's 404
            assert mallory.send(echo).status_code == 200
            front = _ready(gateway)["front_door"]["served"]
            mallory.sessions["acme"] = session_id  # a stolen session id, with mallory's own valid token
            assert mallory.send(echo).status_code == 404
            alice_elsewhere = Caller(gateway, f"alice-{name}", "legacy")
            alice_elsewhere._session("other")
            alice_elsewhere.sessions["other"] = session_id  # same user name, another tenant: another principal
            assert alice_elsewhere.send(Req("echo", call("echo", {"text": "x"}), tenant="other")).status_code == 404
            alice_elsewhere.close()
            mallory.sessions["acme"] = "0" * 32
            assert mallory.send(echo).status_code == 404
            assert _ready(gateway)["front_door"]["served"] == front
            headers = {"Authorization": f"Bearer {alice.token('acme')}", "Mcp-Session-Id": session_id}
            assert alice.http.delete(gateway.mcp_url, headers=headers).status_code == 200
            assert alice.send(echo).status_code == 404
        finally:
            alice.close()
            mallory.close()
    assert _ready(gateways["fast"])["fast_path"]["served"] >= 1


def test_a_revoked_personal_token_is_refused_on_both_roads(
        gateways: dict[str, GatewayProcess], database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    """A token the front door has served is revoked: within the cache's bound (2 s) every call is the 401
    the whole way gives, and stays so; the front door never serves it again."""
    token = create_pat(database, "acme", "revokee")
    callers = {name: Caller(gw, "revokee", "legacy", token=token) for name, gw in gateways.items()}
    echo = Req("echo", call("echo", {"text": "still mine"}))
    try:
        for caller in callers.values():
            assert caller.send(echo).status_code == 200
        front = _ready(gateways["fast"])["front_door"]["served"]
        assert callers["fast"].send(echo).status_code == 200
        assert _ready(gateways["fast"])["front_door"]["served"] == front + 1
        admin_conn.execute("UPDATE gateway.api_tokens SET revoked_at = now() WHERE user_id = 'revokee'")
        revoked = time.monotonic()
        for caller in callers.values():
            wait_for(partial(_refused, caller, echo), 5, "the revocation to bite")
        assert time.monotonic() - revoked < 5
        answers = {name: caller.send(echo) for name, caller in callers.items()}
        assert {r.status_code for r in answers.values()} == {401}
        assert "revoked personal access token" in answers["fast"].headers["www-authenticate"]
        assert _answer(answers["fast"]) == _answer(answers["full"])
    finally:
        for caller in callers.values():
            caller.close()


def test_a_token_past_its_expiry_is_never_served_from_memory(gateways: dict[str, GatewayProcess]) -> None:
    """A JWT the front door serves while it is valid: from its `exp` on, every call goes the whole way, where
    the verifier judges it again (with its clock-skew leeway), and the front door serves none of them."""
    token = make_jwt("expiring", "acme", ttl=2)
    expires = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    caller = Caller(gateways["fast"], "expiring", "modern", token=token)
    echo = Req("echo", call("echo", {"text": "until exp"}))
    try:
        assert caller.send(echo).status_code == 200  # verified the whole way, now known
        front = _ready(gateways["fast"])["front_door"]["served"]
        assert caller.send(echo).status_code == 200
        assert _ready(gateways["fast"])["front_door"]["served"] == front + 1
        wait_for(lambda: time.time() > expires + 0.2, 10, "the token's exp")
        front = _ready(gateways["fast"])["front_door"]["served"]
        assert all(caller.send(echo).status_code == 200 for _ in range(5))  # within the 30 s leeway
        assert _ready(gateways["fast"])["front_door"]["served"] == front
    finally:
        caller.close()


def test_bodies_past_the_sdk_limit_or_without_a_length_go_the_whole_way(gateways: dict[str, GatewayProcess]) -> None:
    """The front door reads only a body whose declared length is within the SDK's limit (4 MiB): a larger
    one gets the SDK's 413, a chunked one the same answer as the whole way gives."""
    callers = {name: Caller(gw, "bodies", "legacy") for name, gw in gateways.items()}
    try:
        huge = json.dumps(call("echo", {"text": "x" * (5 * 1024 * 1024)})).encode()
        small = json.dumps(call("echo", {"text": "chunked"})).encode()
        answers: dict[str, list[tuple[int, str, Any]]] = {}
        for name, caller in callers.items():
            headers = {"Authorization": f"Bearer {caller.token('acme')}", "Accept": ACCEPT_BOTH,
                       "Content-Type": "application/json", "MCP-Protocol-Version": LEGACY,
                       "Mcp-Session-Id": caller._session("acme")}
            answers[name] = [
                _answer(caller.http.post(gw_url(caller), headers=headers, content=huge)),
                _answer(caller.http.post(gw_url(caller), headers=headers, content=iter([small[:10], small[10:]]))),
            ]
        assert answers["fast"] == answers["full"]
        assert [a[0] for a in answers["fast"]] == [413, 200]
    finally:
        for caller in callers.values():
            caller.close()


def _refused(caller: Caller, req: Req) -> bool:
    return caller.send(req).status_code == 401


def gw_url(caller: Caller) -> str:
    return caller.gateway.mcp_url


_json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                 | st.text(max_size=40))
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(era=st.sampled_from(["legacy", "modern"]),
       name=st.sampled_from(["echo", "add", "explode", "slow", "run_sql", "nope", "", "crash", "record",
                             "child_reverse", "context_info"]) | st.text(max_size=12),
       arguments=st.none() | st.dictionaries(st.sampled_from(["text", "a", "b", "reason", "seconds", "x", "kind",
                                                              "name", "tags"]), _json,
                                             max_size=3) | _json,
       id_=st.integers(-2**40, 2**40) | st.text(max_size=10) | st.booleans() | st.none())
def test_any_tools_call_gets_the_same_answer_on_both_paths(
        gateways: dict[str, GatewayProcess], era: str, name: str, arguments: Any, id_: Any) -> None:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name}}
    if arguments is not None:
        body["params"]["arguments"] = arguments
    callers = {k: Caller(gw, f"prop-{k}", era) for k, gw in gateways.items()}
    try:
        fast, full = (_answer(callers[k].send(Req("property", body))) for k in ("fast", "full"))
    finally:
        for caller in callers.values():
            caller.close()
    assert fast == full
    assert fast[0] < 500
