"""The database alone holds: the corpus WITHOUT the parser, on the console login with a valid
tenant-A scope (simple protocol, so multi-statement attacks really run, and not even READ
ONLY); plus forged, replayed, expired and missing scopes, and the login's own privileges."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from gateway.mcp.sqlconsole import sign_scope
from tests.api.conftest import ApiEnv
from tests.api.seed import A, B
from tests.sql.corpus import CORPUS, Attack
from tests.sql.leaks import leaked

PROBE = ("SELECT tenant_id FROM gateway.tenants UNION SELECT tenant_id FROM gateway.users"
         " UNION SELECT tenant_id FROM gateway.mcp_sessions UNION SELECT tenant_id FROM gateway.mcp_requests"
         " UNION SELECT tenant_id FROM gateway.usage_daily UNION SELECT tenant_id FROM gateway.api_tokens")


@pytest.fixture(scope="module")
def key(api_env: ApiEnv) -> tuple[int, bytes]:
    with api_env.admin() as conn:
        row = conn.execute("SELECT key_id, key FROM mcp_gateway_private.console_keys"
                           " ORDER BY key_id DESC LIMIT 1").fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


@pytest.fixture
def console(api_env: ApiEnv) -> Iterator[psycopg.Connection]:
    with psycopg.connect(api_env.database.urls.console, autocommit=True) as conn:
        yield conn


def begin_scoped(conn: psycopg.Connection, key: tuple[int, bytes], tenant: str | None,
                 expiry_in: int = 60) -> str:
    conn.execute("BEGIN")
    pid, xid = conn.execute("SELECT pg_backend_pid(), pg_current_xact_id()::text").fetchone()  # type: ignore[misc]
    scope = sign_scope(key[1], key[0], tenant_id=tenant, pid=pid, xid=xid, expiry=int(time.time()) + expiry_in)
    set_scope(conn, scope)
    return scope


def set_scope(conn: psycopg.Connection, value: str, local: bool = True) -> None:
    """SET [LOCAL] the scope (set_config() is revoked from the console login)."""
    conn.execute(sql.SQL("SET {} mcp_gateway.console_scope = {}").format(
        sql.SQL("LOCAL" if local else "SESSION"), sql.Literal(value)))


def probe(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(PROBE).fetchall()}


def _run_raw(conn: psycopg.Connection, sql: str, resource: bool) -> str:
    """Run without the parser; return everything the attacker saw (rows or error) as text."""
    seen: list[str] = []
    conn.execute("SET LOCAL statement_timeout = '1500ms'")
    try:
        with conn.cursor() as cur:
            if sql.lstrip().upper().startswith("COPY"):  # COPY TO STDOUT runs (RLS applies): read it all
                with cur.copy(sql.encode()) as copy:
                    seen.append(repr(b"".join(bytes(chunk) for chunk in copy)))
            elif resource:  # bounded like the console: a cursor, at most cap + 1 rows
                cur.execute(b"DECLARE bomb NO SCROLL CURSOR FOR " + sql.encode())
                cur.execute("FETCH FORWARD 10001 FROM bomb")
                seen.append(repr(cur.fetchall()[:5]))
            else:
                cur.execute(sql.encode())  # bytes, no parameters: simple protocol, all statements run
                while True:
                    if cur.description is not None:
                        seen.append(repr(cur.fetchall()))
                    if not cur.nextset():
                        break
    except psycopg.Error as exc:
        seen.append(f"ERROR {type(exc).__name__}: {exc}")
    return "\n".join(seen)


@pytest.mark.parametrize("attack", CORPUS, ids=lambda a: a.name)
def test_corpus_without_parser_leaks_nothing(api_env: ApiEnv, key: tuple[int, bytes],
                                             console: psycopg.Connection, attack: Attack) -> None:
    begin_scoped(console, key, A)
    assert probe(console) == {A}
    seen = _run_raw(console, attack.sql, attack.resource)
    assert leaked(seen, attack.snoop) is None, f"{attack.name} leaked: {seen[:800]}"
    if attack.blocked:  # the second wall: the database refuses it without the parser
        assert "ERROR" in seen and "QueryCanceled" not in seen, f"{attack.name} ran on the console login: {seen[:500]}"
    status = console.info.transaction_status
    if status == psycopg.pq.TransactionStatus.INTRANS:
        assert probe(console) <= {A}, f"{attack.name}: the rest of the transaction saw another tenant"
    if status != psycopg.pq.TransactionStatus.IDLE:
        console.execute("ROLLBACK")
    # Whatever the attack left on the session: without a fresh valid scope, nothing is visible...
    console.execute("BEGIN")
    assert probe(console) == set(), f"{attack.name}: rows visible without a scope afterwards"
    console.execute("ROLLBACK")
    # ...and with one, still only tenant A.
    begin_scoped(console, key, A)
    assert probe(console) == {A}
    console.execute("ROLLBACK")
    with api_env.admin() as admin:  # and nothing was written
        assert admin.execute("SELECT count(*) FROM gateway.tenants").fetchone() == (2,)
        assert admin.execute("SELECT count(*) FROM gateway.mcp_requests").fetchone()[0] == 9  # type: ignore[index]


def test_valid_scopes(key: tuple[int, bytes], console: psycopg.Connection) -> None:
    begin_scoped(console, key, B)
    assert probe(console) == {B}
    console.execute("ROLLBACK")
    begin_scoped(console, key, None)
    assert probe(console) == {A, B}
    console.execute("ROLLBACK")


def test_missing_and_forged_scopes_see_nothing(key: tuple[int, bytes], console: psycopg.Connection) -> None:
    console.execute("BEGIN")
    assert probe(console) == set()  # no scope at all
    pid, xid = console.execute("SELECT pg_backend_pid(), pg_current_xact_id()::text").fetchone()  # type: ignore[misc]
    expiry = int(time.time()) + 60
    good = sign_scope(key[1], key[0], tenant_id=A, pid=pid, xid=xid, expiry=expiry)
    payload, signature = good.rsplit("|", 1)
    forged = [
        sign_scope(b"x" * 32, key[0], tenant_id=A, pid=pid, xid=xid, expiry=expiry),      # wrong key
        sign_scope(key[1], key[0] + 1, tenant_id=A, pid=pid, xid=xid, expiry=expiry),     # unknown key id
        payload.replace(f"|t|{A.encode().hex()}|", f"|t|{B.encode().hex()}|") + "|" + signature,  # tenant swapped
        payload.replace(f"|t|{A.encode().hex()}|", "|a||") + "|" + signature,              # promoted to all
        sign_scope(key[1], key[0], tenant_id=A, pid=pid + 1, xid=xid, expiry=expiry),      # other backend
        sign_scope(key[1], key[0], tenant_id=A, pid=pid, xid=str(int(xid) + 1), expiry=expiry),  # other txn
        sign_scope(key[1], key[0], tenant_id=A, pid=pid, xid=xid, expiry=int(time.time()) - 1),  # expired
        good.upper(), good + "|x", "v1|1|t|zz|1|1|1|" + "0" * 64, "garbage", "|" * 7,
        sign_scope(key[1], key[0], tenant_id="\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
                   pid=pid, xid=xid, expiry=expiry),
    ]
    for value in forged:
        set_scope(console, value)
        assert probe(console) == set(), value
    set_scope(console, good)
    assert probe(console) == {A}
    console.execute("ROLLBACK")


def test_a_leaked_scope_cannot_be_replayed(api_env: ApiEnv, key: tuple[int, bytes],
                                           console: psycopg.Connection) -> None:
    """Tenant B's scope, seen somehow by A, is useless on A's backend and in any later transaction."""
    with psycopg.connect(api_env.database.urls.console, autocommit=True) as other:
        b_scope = begin_scoped(other, key, B)
        assert probe(other) == {B}
        console.execute("BEGIN")
        set_scope(console, b_scope)
        assert probe(console) == set()  # other backend
        console.execute("ROLLBACK")
        other.execute("COMMIT")
        other.execute("BEGIN")
        other.execute("SELECT pg_current_xact_id()")
        set_scope(other, b_scope)
        assert probe(other) == set()  # same backend, later transaction
        other.execute("ROLLBACK")
        set_scope(other, b_scope, local=False)  # session-level
        assert probe(other) == set()


def test_other_console_sessions_are_invisible_and_untouchable(api_env: ApiEnv, key: tuple[int, bytes],
                                                             console: psycopg.Connection) -> None:
    """Every tenant's console runs as the same login, and PostgreSQL lets a role see the query
    text of its own other backends and signal them: B's console must be invisible to A, and A
    must not be able to cancel or terminate it."""
    with psycopg.connect(api_env.database.urls.console, autocommit=True) as other:
        begin_scoped(other, key, B)
        other.execute("SELECT 'zz-secret-query-text'")  # stays the backend's last query text
        b_pid = other.info.backend_pid
        console.execute("BEGIN")
        for sql_text in ("SELECT query FROM pg_stat_activity",
                         "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
                         "SELECT * FROM pg_stat_get_activity(NULL)",
                         "SELECT pid FROM pg_locks",
                         f"SELECT pg_cancel_backend({b_pid})",
                         f"SELECT pg_terminate_backend({b_pid})",
                         "SELECT pg_stat_get_backend_pid(s) FROM pg_stat_get_backend_idset() s",
                         f"SELECT pg_blocking_pids({b_pid})"):
            console.execute("SAVEPOINT s")
            try:
                text = repr(console.execute(sql_text).fetchall())
            except psycopg.errors.InsufficientPrivilege:
                text = ""
            console.execute("ROLLBACK TO SAVEPOINT s")
            assert "zz-secret" not in text and str(b_pid) not in text, sql_text
        console.execute("ROLLBACK")
        # B's backend is alive and its transaction was not cancelled.
        assert other.execute("SELECT 1").fetchone() == (1,)
        assert probe(other) == {B}
        other.execute("ROLLBACK")


def test_console_login_privileges(api_env: ApiEnv) -> None:
    with api_env.admin() as conn:
        role = conn.execute("SELECT rolsuper, rolinherit, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
                            " WHERE rolname = 'mcp_gateway_console'").fetchone()
        assert role == (False, False, False, False, False)
        member_of = conn.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                                 " WHERE r.rolname = 'mcp_gateway_console'").fetchone()
        assert member_of == (0,)
        writes = conn.execute(
            "SELECT c.relname, p.privilege_type FROM pg_class c, unnest(ARRAY['INSERT','UPDATE','DELETE',"
            "'TRUNCATE','REFERENCES','TRIGGER']) p(privilege_type)"
            " WHERE c.relnamespace IN ('gateway'::regnamespace, 'mcp_gateway_private'::regnamespace)"
            " AND c.relkind IN ('r', 'v', 'p')"
            " AND has_table_privilege('mcp_gateway_console', c.oid, p.privilege_type)").fetchall()
        assert writes == []
        assert conn.execute("SELECT has_table_privilege('mcp_gateway_console',"
                            " 'mcp_gateway_private.console_keys', 'SELECT')").fetchone() == (False,)
        # (TEMP is not checked: test databases are clones, and CREATE DATABASE ... TEMPLATE does not copy
        # the REVOKE TEMPORARY ... FROM PUBLIC of migrations/000. The scope verifier qualifies every name,
        # so pg_temp objects could not shadow anything it uses.)
        assert conn.execute("SELECT has_schema_privilege('mcp_gateway_console', 'gateway', 'CREATE'),"
                            " has_schema_privilege('mcp_gateway_console', 'public', 'CREATE'),"
                            " has_database_privilege('mcp_gateway_console', current_database(), 'CREATE')"
                            ).fetchone() == (False, False, False)
        definer = conn.execute("SELECT p.proname, r.rolname, p.proconfig FROM pg_proc p JOIN pg_roles r"
                               " ON r.oid = p.proowner WHERE p.prosecdef"
                               " AND p.pronamespace = 'gateway'::regnamespace").fetchall()
        assert definer == [("console_scope", "mcp_gateway_owner", ["search_path=\"\""])]
