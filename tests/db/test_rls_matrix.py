"""The row-level security matrix.

Principals: two tenants x {member, other member of the same tenant, tenant admin,
auditor}; no identity (the runtime login after SET LOCAL ROLE of each request role,
tenant/user unset); the bare runtime login (no SET ROLE); and the two system roles
(ingest, authn) as gateway.store.db.Database.as_system sets them.
Objects: every table, view and function of schema gateway.
Operations: select / insert / update / delete on tables and views (plus reading
api_tokens.token_hash); one `call` per function variant (functions have no
insert/update/delete).

Each cell runs in its own transaction on one runtime-login connection and is rolled
back; the data is seeded once per module. A cell asserts exactly the set of rows
(keys) allowed, or exactly the error.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from gateway.store.db import _SET_IDENTITY  # the one statement that sets identity
from tests.db import seed as S

DATA = S.build()


# ---------------------------------------------------------------------------- principals

@dataclass(frozen=True)
class Who:
    name: str
    kind: str              # member | admin | auditor | noid | bare | ingest | authn
    db_role: str | None
    tenant: str = ""
    user: str = ""

    @property
    def request_role(self) -> bool:
        return self.kind in ("member", "admin", "auditor", "noid")

    @property
    def acting_tenant(self) -> str:
        return self.tenant or "acme"

    @property
    def acting_user(self) -> str:
        return self.user or "alice"


PRINCIPALS: list[Who] = []
for _t in S.TENANTS:
    PRINCIPALS += [
        Who(f"{_t}.alice(member)", "member", "mcp_gateway_member", _t, "alice"),
        Who(f"{_t}.bob(other-member)", "member", "mcp_gateway_member", _t, "bob"),
        Who(f"{_t}.carol(admin)", "admin", "mcp_gateway_tenant_admin", _t, "carol"),
        Who(f"{_t}.audrey(auditor)", "auditor", "mcp_gateway_auditor", _t, "audrey"),
        # The credential vault as the gateway sets it: one user's identity (a member's, an admin's).
        Who(f"{_t}.alice(vault)", "vault", "mcp_gateway_vault", _t, "alice"),
        Who(f"{_t}.carol(vault)", "vault", "mcp_gateway_vault", _t, "carol"),
    ]
PRINCIPALS += [
    Who("noid.member", "noid", "mcp_gateway_member"),
    Who("noid.admin", "noid", "mcp_gateway_tenant_admin"),
    Who("noid.auditor", "noid", "mcp_gateway_auditor"),
    Who("noid.vault", "vault-noid", "mcp_gateway_vault"),
    Who("bare-login", "bare", None),
    Who("system.ingest", "ingest", "mcp_gateway_ingest"),
    Who("system.authn", "authn", "mcp_gateway_authn"),
    Who("system.oauth", "oauth", "mcp_gateway_oauth"),
]


def sees(who: Who, tenant: str | None, user: str | None) -> bool:
    """May `who` see a row of (tenant, user) — given it holds SELECT on the table at all."""
    if who.kind == "member":
        return tenant == who.tenant and (user is None or user == who.user)
    if who.kind == "admin":
        return tenant == who.tenant
    if who.kind == "auditor":
        return True
    if who.kind in ("ingest", "authn", "oauth"):
        return True
    if who.kind == "vault":  # exactly its own identity's rows, whatever its role
        return tenant == who.tenant and user == who.user
    return False  # noid: no identity sees nothing


# ---------------------------------------------------------------------------- privileges (the model)

OAUTH_TENANT_TABLES = ("oauth_grants", "oauth_token_families", "oauth_codes", "oauth_refresh_tokens")
OAUTH_TABLES = (*OAUTH_TENANT_TABLES, "oauth_clients", "oauth_pending", "oauth_assertion_jtis", "oauth_signing_keys")
TENANT_TABLES = ("tenants", "users", "api_tokens", "mcp_sessions", "mcp_requests", "usage_daily",
                 "upstream_credentials", "upstream_link_states")
TABLES = (*TENANT_TABLES, "instances", "mcp_protocol_sessions", *OAUTH_TABLES)
SELECT_GRANTS = {
    "request": (set(TENANT_TABLES) - {"upstream_link_states"}) | {"oauth_grants", "oauth_token_families",
                                                                   "oauth_clients"},
    "ingest": {"tenants", "users", "mcp_sessions", "usage_daily", "instances", "mcp_protocol_sessions"},
    "authn": {"tenants", "users", "api_tokens"},
    "oauth": {"tenants", "users", *OAUTH_TABLES},
    "vault": {"upstream_credentials", "upstream_link_states"},
}
INSERT_GRANTS = {
    "ingest": {"mcp_requests", "mcp_sessions", "usage_daily", "tenants", "users", "instances",
               "mcp_protocol_sessions"},
    "authn": {"tenants", "users", "api_tokens"},
    "oauth": {"tenants", "users", *OAUTH_TABLES},
    "vault": {"upstream_credentials", "upstream_link_states"},
}
UPDATE_GRANTS = {
    "ingest": {"mcp_sessions", "usage_daily", "users", "instances", "mcp_protocol_sessions"},
    "authn": {"users", "api_tokens"},
    "oauth": {"users", *(set(OAUTH_TABLES) - {"oauth_assertion_jtis", "oauth_signing_keys"})},
    "vault": {"upstream_credentials", "upstream_link_states"},
}
# The authorization server deletes only expired short-lived rows; nobody else deletes anything.
DELETE_GRANTS = {"oauth": {"oauth_codes", "oauth_pending", "oauth_assertion_jtis"}}


def grants(table: dict[str, set[str]], who: Who, obj: str) -> bool:
    key = "request" if who.request_role else "vault" if who.kind.startswith("vault") else who.kind
    return obj in table.get(key, set())


# ---------------------------------------------------------------------------- the seeded rows

def rows_of(table: str) -> list[tuple[tuple[Any, ...], str | None, str | None]]:
    """(key, tenant, user) of every seeded row."""
    if table == "tenants":
        return [((t,), t, None) for t in S.TENANTS]
    if table == "users":
        return [((t, u), t, u) for t in S.TENANTS for u in S.USERS]
    if table == "api_tokens":
        return [((S.tid(t, u),), t, u) for t in S.TENANTS for u in S.USERS]
    if table == "mcp_sessions":
        return [((s.id,), s.tenant, s.user) for s in DATA.sessions]
    if table == "mcp_requests":
        return [((r.id,), r.tenant, r.user) for r in DATA.requests]
    if table == "usage_daily":
        return [(k, k[0], k[1]) for k in DATA.usage_keys()]
    if table == "instances":
        return [((i,), None, None) for i in S.INSTANCES]
    if table == "mcp_protocol_sessions":
        return [((S.protocol_session_hash(t, u),), t, u) for t in S.TENANTS for u in S.USERS]
    everyone = [(t, u) for t in S.TENANTS for u in S.USERS]
    if table == "oauth_clients":
        return [((S.client_of(t, u),), t, u) for t, u in everyone] + [((S.ORPHAN_CLIENT,), None, None)]
    if table == "oauth_grants":
        return [((S.grant_id(t, u),), t, u) for t, u in everyone]
    if table == "oauth_token_families":
        return [((S.family_id(t, u),), t, u) for t, u in everyone]
    if table == "oauth_codes":
        return [((S.secret_digest("code", t, u),), t, u) for t, u in everyone]
    if table == "oauth_refresh_tokens":
        return [((S.secret_digest("refresh", t, u),), t, u) for t, u in everyone]
    if table == "oauth_pending":
        pending: list[tuple[tuple[Any, ...], str | None, str | None]] = [
            ((S.secret_digest("pending", t, u),), None, None) for t, u in everyone]
        return [*pending, ((S.secret_digest("pending", None, None),), None, None)]
    if table == "oauth_assertion_jtis":
        return [((S.ORPHAN_CLIENT, "live"), None, None), ((S.ORPHAN_CLIENT, "expired"), None, None)]
    if table == "oauth_signing_keys":
        return [(("k1",), None, None)]
    if table == "upstream_credentials":
        return [((t, u, "github"), t, u) for t in S.TENANTS for u in S.USERS]
    if table == "upstream_link_states":
        return [((t, u, "github"), t, u) for t in S.TENANTS for u in S.USERS]
    raise KeyError(table)


# Rows whose lifetime is over: the only ones the authorization server may delete.
EXPIRED = {"oauth_pending": {(S.secret_digest("pending", None, None),)},
           "oauth_assertion_jtis": {(S.ORPHAN_CLIENT, "expired")}, "oauth_codes": set()}


def visible_rows(who: Who, table: str) -> list[tuple[Any, ...]]:
    if table == "oauth_clients" and who.request_role:
        # a request role sees the clients named by the grants it sees (the orphan by nobody)
        return [k for k, t, u in rows_of(table) if t is not None and sees(who, t, u)]
    return [k for k, t, u in rows_of(table) if sees(who, t, u)]


KEYS = {
    "mcp_protocol_sessions": "session_hash",
    "tenants": "tenant_id", "users": "tenant_id, user_id", "api_tokens": "token_id",
    "mcp_sessions": "session_id", "mcp_requests": "id",
    "usage_daily": "tenant_id, user_id, day, tool_name, client_type", "instances": "instance_id",
    "oauth_clients": "client_id", "oauth_grants": "grant_id", "oauth_token_families": "family_id",
    "oauth_codes": "code_hash", "oauth_refresh_tokens": "token_hash", "oauth_pending": "request_hash",
    "oauth_assertion_jtis": "client_id, jti", "oauth_signing_keys": "kid",
    "upstream_credentials": "tenant_id, user_id, upstream",
    "upstream_link_states": "tenant_id, user_id, upstream",
}
# Columns read besides the key: selecting proves access to row data, not just ids.
DATA_COLUMNS = {
    "mcp_protocol_sessions": "user_id, owner_hash",
    "tenants": "name", "users": "email", "api_tokens": "tenant_id, user_id, prefix",
    "mcp_sessions": "tenant_id, user_id, status", "mcp_requests": "tenant_id, user_id, tool_name",
    "usage_daily": "calls", "instances": "heartbeat_at",
    "oauth_clients": "client_name", "oauth_grants": "tenant_id, user_id, client_id",
    "oauth_token_families": "tenant_id, user_id, client_id", "oauth_codes": "tenant_id, user_id",
    "oauth_refresh_tokens": "tenant_id, user_id", "oauth_pending": "principal",
    "oauth_assertion_jtis": "expires_at", "oauth_signing_keys": "private_pem",
    "upstream_credentials": "mode, needs_relink, linked_at",  # metadata; the secret has its own cell
    "upstream_link_states": "verifier, expires_at",
}
UPDATE_SET = {
    "mcp_protocol_sessions": "last_used_at = last_used_at",
    "tenants": "name = name", "users": "last_seen_at = last_seen_at", "api_tokens": "last_used_at = last_used_at",
    "mcp_sessions": "last_activity = last_activity", "mcp_requests": "error_message = error_message",
    "usage_daily": "calls = calls", "instances": "heartbeat_at = heartbeat_at",
    "oauth_clients": "updated_at = updated_at", "oauth_grants": "last_used_at = last_used_at",
    "oauth_token_families": "last_used_at = last_used_at", "oauth_codes": "used_at = used_at",
    "oauth_refresh_tokens": "rotated_at = rotated_at", "oauth_pending": "consumed_at = consumed_at",
    "oauth_assertion_jtis": "expires_at = expires_at", "oauth_signing_keys": "retire_at = retire_at",
    "upstream_credentials": "needs_relink = needs_relink",
    "upstream_link_states": "consumed_at = consumed_at",
}


def insert_sql(table: str, who: Who) -> tuple[str, tuple[Any, ...]]:
    t, u = who.acting_tenant, who.acting_user
    new = uuid.uuid4()
    if table == "tenants":
        return "INSERT INTO gateway.tenants (tenant_id, name) VALUES ('matrix-new', 'New')", ()
    if table == "users":
        return "INSERT INTO gateway.users (tenant_id, user_id, email) VALUES (%s, 'matrix-new', 'n@x')", (t,)
    if table == "api_tokens":
        return ("INSERT INTO gateway.api_tokens (token_id, tenant_id, user_id, prefix, token_hash)"
                " VALUES (%s, %s, %s, 'mgw_new', %s)", (new, t, u, new.bytes * 2))
    if table == "mcp_sessions":
        return ("INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, session_key)"
                " VALUES (%s, %s, %s, 'matrix-new')", (new, t, u))
    if table == "mcp_requests":  # exactly the writer's shape
        return ("INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status)"
                " VALUES (%s, %s, %s, %s, 'matrix', 'success') ON CONFLICT (tenant_id, id) DO NOTHING",
                (new, S.sid(t, u, "s1"), t, u))
    if table == "usage_daily":
        return ("INSERT INTO gateway.usage_daily (tenant_id, user_id, day, tool_name, calls)"
                " VALUES (%s, %s, current_date, 'matrix-new', 1)", (t, u))
    if table == "instances":
        return "INSERT INTO gateway.instances (instance_id) VALUES ('matrix-new')", ()
    if table == "mcp_protocol_sessions":
        return ("INSERT INTO gateway.mcp_protocol_sessions (tenant_id, session_hash, user_id, owner_hash,"
                " protocol_version, init_params, instance_id) VALUES (%s, %s, %s, %s, '2025-11-25', '{}', 'i')",
                (t, new.bytes * 2, u, new.bytes * 2))
    client, grant, family = S.client_of(t, u), S.grant_id(t, u), S.family_id(t, u)
    if table == "oauth_clients":
        return "INSERT INTO gateway.oauth_clients (client_id, kind) VALUES ('matrix-new', 'dcr')", ()
    if table == "oauth_grants":
        return ("INSERT INTO gateway.oauth_grants (tenant_id, user_id, client_id) VALUES (%s, %s, %s)",
                (t, u, S.ORPHAN_CLIENT))
    if table == "oauth_token_families":
        return ("INSERT INTO gateway.oauth_token_families (tenant_id, user_id, client_id, grant_id, resource)"
                " VALUES (%s, %s, %s, %s, 'r')", (t, u, client, grant))
    if table == "oauth_codes":
        return ("INSERT INTO gateway.oauth_codes (code_hash, tenant_id, user_id, client_id, grant_id, redirect_uri,"
                " resource, code_challenge, expires_at) VALUES (%s, %s, %s, %s, %s, 'r', 'r', 'c', now())",
                (new.bytes * 2, t, u, client, grant))
    if table == "oauth_refresh_tokens":
        return ("INSERT INTO gateway.oauth_refresh_tokens (token_hash, family_id, tenant_id, user_id, expires_at)"
                " VALUES (%s, %s, %s, %s, now())", (new.bytes * 2, family, t, u))
    if table == "oauth_pending":
        return ("INSERT INTO gateway.oauth_pending (request_hash, params, csrf_hash, expires_at)"
                " VALUES (%s, '{}', %s, now())", (new.bytes * 2, new.bytes * 2))
    if table == "oauth_assertion_jtis":
        return ("INSERT INTO gateway.oauth_assertion_jtis (client_id, jti, expires_at) VALUES ('c', %s, now())",
                (str(new),))
    if table == "oauth_signing_keys":
        return ("INSERT INTO gateway.oauth_signing_keys (kid, private_pem, public_jwk, rotate_at, retire_at)"
                " VALUES (%s, 'x', '{}', now(), now())", (str(new),))
    if table == "upstream_credentials":  # for the acting identity itself: only the vault may
        return ("INSERT INTO gateway.upstream_credentials (tenant_id, user_id, upstream, mode, secret)"
                " VALUES (%s, %s, 'matrix-new', 'per_user_token', '\\x00')", (t, u))
    if table == "upstream_link_states":
        return ("INSERT INTO gateway.upstream_link_states (tenant_id, user_id, state_hash, upstream, verifier,"
                " expires_at) VALUES (%s, %s, '\\x01', 'matrix-new', 'v', now())", (t, u))
    raise KeyError(table)


# ---------------------------------------------------------------------------- expectations

@dataclass(frozen=True)
class Expect:
    kind: str                  # rows | denied | error
    rows: frozenset = frozenset()
    sqlstate: str = ""
    message: str = ""


DENIED = Expect("denied", message="permission denied")


def rows(values) -> Expect:
    return Expect("rows", frozenset(values))


@dataclass(frozen=True)
class Cell:
    op: str
    obj: str
    who: Who
    sql: Callable[[Who], tuple[str, tuple[Any, ...]]]
    expect: Expect
    key_len: int = 0           # rows: compare the first key_len columns (0: whole row)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.obj}-{self.who.name}"


def _fixed(sql: str, params: tuple[Any, ...] = ()) -> Callable[[Who], tuple[str, tuple[Any, ...]]]:
    return lambda who: (sql, params)


def table_cells(who: Who) -> Iterator[Cell]:
    for table in TABLES:
        key_len = len(KEYS[table].split(","))
        visible = visible_rows(who, table)
        # select
        exp = rows(visible) if grants(SELECT_GRANTS, who, table) else DENIED
        yield Cell("select", table, who, _fixed(f"SELECT {KEYS[table]}, {DATA_COLUMNS[table]} FROM gateway.{table}"),
                   exp, key_len)
        # insert
        exp = rows([]) if grants(INSERT_GRANTS, who, table) else DENIED  # rows([]): succeeded (no RETURNING)
        # granted, but no identity: no row
        if who.kind == "vault-noid" and table in ("upstream_credentials", "upstream_link_states"):
            exp = Expect("error", sqlstate="42501", message="row-level security")
        yield Cell("insert", table, who, functools.partial(insert_sql, table), exp)
        # update: which rows an unconditional UPDATE touches
        exp = rows(visible) if grants(UPDATE_GRANTS, who, table) else DENIED
        yield Cell("update", table, who,
                   _fixed(f"UPDATE gateway.{table} SET {UPDATE_SET[table]} RETURNING {KEYS[table]}"), exp, key_len)
        # delete: nobody but the owner, except expired rows of the authorization server's
        exp = rows(EXPIRED[table]) if grants(DELETE_GRANTS, who, table) else DENIED
        yield Cell("delete", table, who, _fixed(f"DELETE FROM gateway.{table} RETURNING {KEYS[table]}"), exp,
                   key_len)
    # the secret column of api_tokens: authn (verification) only
    visible = [k for k, t, u in rows_of("api_tokens") if sees(who, t, u)]
    exp = rows(visible) if who.kind == "authn" else DENIED
    yield Cell("select_token_hash", "api_tokens", who, _fixed("SELECT token_id, token_hash FROM gateway.api_tokens"),
               exp, 1)
    # the client secret digest: the authorization server only
    exp = rows(visible_rows(who, "oauth_clients")) if who.kind == "oauth" else DENIED
    yield Cell("select_secret_hash", "oauth_clients", who,
               _fixed("SELECT client_id, secret_hash FROM gateway.oauth_clients"), exp, 1)
    # the value of an upstream credential: its owner's vault identity only (no admin, auditor, console)
    visible = [k for k, t, u in rows_of("upstream_credentials") if sees(who, t, u)]
    exp = rows(visible) if who.kind.startswith("vault") else DENIED
    yield Cell("select_secret", "upstream_credentials", who,
               _fixed("SELECT tenant_id, user_id, upstream, secret FROM gateway.upstream_credentials"), exp, 3)
    # another user's row, written by the vault under someone else's identity: refused by the policy
    if who.kind == "vault":
        other = "bob" if who.user != "bob" else "alice"
        yield Cell("insert_for_other", "upstream_credentials", who, _fixed(
            "INSERT INTO gateway.upstream_credentials (tenant_id, user_id, upstream, mode, secret)"
            " VALUES (%s, %s, 'matrix-other', 'per_user_token', '\\x00')", (who.tenant, other)),
            Expect("error", sqlstate="42501", message="row-level security"))


def _requests_of(tenant: str, user: str) -> int:
    return sum(1 for r in DATA.requests if r.tenant == tenant and r.user == user)


def _sessions(pred) -> list[S.Session]:
    return [s for s in DATA.sessions if pred(s)]


def view_cells(who: Who) -> Iterator[Cell]:
    readable = who.request_role
    user_stats = {(t, u, sum(1 for s in DATA.sessions if s.tenant == t and s.user == u), _requests_of(t, u))
                  for t in S.TENANTS for u in S.USERS if sees(who, t, u)}
    yield Cell("select", "mcp_user_stats", who,
               _fixed("SELECT tenant_id, user_id, total_sessions, total_requests FROM gateway.mcp_user_stats"),
               rows(user_stats) if readable else DENIED)
    session_stats = {(s.id, sum(1 for r in DATA.requests if r.session == s.id))
                     for s in DATA.sessions if sees(who, s.tenant, s.user)}
    yield Cell("select", "mcp_session_stats", who,
               _fixed("SELECT session_id, request_count FROM gateway.mcp_session_stats"),
               rows(session_stats) if readable else DENIED)
    # Neither view is updatable: the rewriter refuses before any privilege check,
    # except for the bare login, which cannot even resolve the schema.
    for view, col in (("mcp_user_stats", "email"), ("mcp_session_stats", "status")):
        for op, sql in (("insert", f"INSERT INTO gateway.{view} (tenant_id) VALUES ('acme')"),
                        ("update", f"UPDATE gateway.{view} SET {col} = {col}"),
                        ("delete", f"DELETE FROM gateway.{view}")):
            exp = DENIED if who.kind == "bare" else Expect("error", sqlstate="55000", message="view")
            yield Cell(op, view, who, _fixed(sql), exp)


def function_cells(who: Who) -> Iterator[Cell]:
    callable_ = who.request_role

    def cell(name: str, sql: str, values) -> Cell:
        return Cell("call", name, who, _fixed(sql), rows(values) if callable_ else DENIED)

    def disconnected_within(days: int) -> set[tuple[Any, ...]]:
        return {(s.id,) for s in _sessions(lambda s: s.status == "disconnected"
                                           and s.disconnected_ago.days < days and sees(who, s.tenant, s.user))}

    yield cell("get_disconnected_sessions(7,50)",
               "SELECT session_id FROM gateway.get_disconnected_sessions(7, 50)", disconnected_within(7))
    yield cell("get_disconnected_sessions(30,200)",
               "SELECT session_id FROM gateway.get_disconnected_sessions(30, 200)", disconnected_within(30))
    yield cell("get_disconnected_sessions(default)",
               "SELECT session_id FROM gateway.get_disconnected_sessions()", disconnected_within(7))
    yield cell("get_disconnected_session_stats(7)",
               "SELECT total_disconnected FROM gateway.get_disconnected_session_stats(7)",
               {(len(disconnected_within(7)),)})
    yield cell("get_user_sessions(alice)", "SELECT session_id FROM gateway.get_user_sessions('alice')",
               {(s.id,) for s in _sessions(lambda s: s.user == "alice" and sees(who, s.tenant, s.user))})
    yield cell("get_user_sessions(alice,globex)",
               "SELECT session_id FROM gateway.get_user_sessions('alice', 'globex')",
               {(s.id,) for s in _sessions(lambda s: s.user == "alice" and s.tenant == "globex"
                                           and sees(who, s.tenant, s.user))})
    yield cell("get_user_activity_summary(alice)",
               "SELECT user_id, total_sessions, total_requests FROM gateway.get_user_activity_summary('alice')",
               {("alice",
                 sum(1 for s in DATA.sessions if s.user == "alice" and sees(who, s.tenant, s.user)),
                 sum(1 for r in DATA.requests if r.user == "alice" and sees(who, r.tenant, r.user)))})
    yield cell("get_active_mcp_clients()", "SELECT session_id FROM gateway.get_active_mcp_clients()",
               {(s.id,) for s in _sessions(lambda s: s.status != "disconnected" and sees(who, s.tenant, s.user))})


CELLS = [c for who in PRINCIPALS for gen in (table_cells, view_cells, function_cells) for c in gen(who)]


# ---------------------------------------------------------------------------- fixtures and the test

@pytest.fixture(scope="module")
def seed_data() -> S.Seed:
    return DATA  # the expectations above were computed from this very data


def run(conn: psycopg.Connection, cell: Cell) -> tuple[str, Any]:
    sql, params = cell.sql(cell.who)
    try:
        with conn.transaction(force_rollback=True):
            who = cell.who
            if who.kind in ("noid", "vault-noid"):
                conn.execute(f"SET LOCAL ROLE {who.db_role}")  # role only: no tenant, no user
            elif who.db_role is not None:
                conn.execute(_SET_IDENTITY, (who.db_role, who.tenant, who.user))
            cur = conn.execute(sql, params)
            result = cur.fetchall() if cur.description else []
            if cell.op == "insert":
                assert cur.rowcount == 1, f"insert affected {cur.rowcount} rows"
        return "rows", result
    except psycopg.Error as exc:
        return "error", exc


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(runtime: psycopg.Connection, cell: Cell) -> None:
    outcome, value = run(runtime, cell)
    exp = cell.expect
    if exp.kind == "rows":
        assert outcome == "rows", f"expected rows, got {type(value).__name__}: {value}"
        got = {tuple(r[:cell.key_len]) if cell.key_len else tuple(r) for r in value}
        assert len(value) == len(got), "duplicate rows"
        missing, extra = exp.rows - got, got - exp.rows
        assert not missing and not extra, f"missing {sorted(map(str, missing))} extra {sorted(map(str, extra))}"
    else:
        assert outcome == "error", f"expected {exp.kind}, got rows {value}"
        if exp.kind == "denied":
            assert isinstance(value, psycopg.errors.InsufficientPrivilege), repr(value)
        else:
            assert value.sqlstate == exp.sqlstate, repr(value)
        assert exp.message in str(value), str(value)


def test_matrix_is_complete() -> None:
    """Every table, view and gateway function named in the matrix; every principal covered."""
    objects = {c.obj.split("(")[0] for c in CELLS}
    assert set(TABLES) | {"mcp_user_stats", "mcp_session_stats"} <= objects
    assert {"get_disconnected_sessions", "get_disconnected_session_stats", "get_user_sessions",
            "get_user_activity_summary", "get_active_mcp_clients"} <= objects
    assert len({c.id for c in CELLS}) == len(CELLS)


def test_matrix_covers_every_catalog_object(runtime: psycopg.Connection, seeded) -> None:
    """A new table, view or reporting function in schema gateway must join the matrix."""
    with psycopg.connect(seeded.admin_url, autocommit=True) as admin:
        rels = {r[0] for r in admin.execute(
            "SELECT relname FROM pg_class"
            " WHERE relnamespace = 'gateway'::regnamespace AND relkind IN ('r','p','v','m')")}
        funcs = {r[0] for r in admin.execute(
            "SELECT proname FROM pg_proc"
            " WHERE pronamespace = 'gateway'::regnamespace AND prorettype <> 'trigger'::regtype")}
    objects = {c.obj.split("(")[0] for c in CELLS}
    helpers = {"current_tenant_id", "current_user_id", "identity_is_set"}  # tested in test_identity.py
    # console_*: the admin SQL console's scope helpers, for the console login only (tested with it).
    assert rels - objects == set()
    assert {f for f in funcs - objects - helpers if not f.startswith("console_")} == set()
