"""The admin SQL console: read-only SQL for tenant admins (their tenant) and auditors (all).

Used by `POST /api/sql`, `mcp-gateway sql` and the MCP tool `run_sql`. Layers, outermost
first (docs/admin-sql.md has the whole argument and the tests that prove it):

1. Who: members are refused before anything else (403 / absent tool).
2. What: PostgreSQL's own parser (pglast) must see exactly one SELECT — no other
   statement anywhere (also not inside CTEs), no SELECT INTO, no FOR UPDATE/SHARE, no
   calls to functions that change settings, sleep, touch files, signal backends, take
   advisory locks, use sequences or run SQL given as a string.
3. Where it runs: the dedicated login `mcp_gateway_console` (a fresh connection per
   query, at most 4 at once), whose
   only privileges are SELECT on the reporting relations; member of no role, so
   `RESET ROLE` / `set_config('role', ...)` lead nowhere.
4. Which rows: the console's row-level security policies admit rows only under a valid
   `mcp_gateway.console_scope` — tenant (or "all tenants"), backend pid, transaction id
   and expiry, HMAC-SHA256-signed with a key the console login cannot read, verified
   by the SECURITY DEFINER function gateway.console_scope(). Forged, replayed or
   missing → no rows.
5. How much: a READ ONLY transaction, statement_timeout, a server-side cursor fetched
   up to the row cap (default 10,000 → truncated=true) and a byte budget, and a
   deadline (default 10 s) enforced by this client cancelling the query.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg

from auth import PRIVILEGED_ROLES, Principal

if TYPE_CHECKING:
    from fastmcp import FastMCP

    from gateway.db import Database, DatabaseUrls

MAX_SQL_LENGTH = 100_000
DEFAULT_ROW_CAP = 10_000
DEFAULT_DEADLINE = 10.0
DEFAULT_BYTE_BUDGET = 32 * 1024 * 1024
SCOPE_SETTING = "mcp_gateway.console_scope"
KEY_TTL = 300.0  # seconds a fetched signing key is reused before it is read again


# ---------------------------------------------------------------------------------- errors


class ConsoleError(Exception):
    """Base: `str(exc)` is the one-line answer given to the caller."""


class ConsoleForbidden(ConsoleError):
    """The caller may not use the console (members)."""


class QueryRefused(ConsoleError):
    """The parser refused the query; the message says why."""


class QueryFailed(ConsoleError):
    """PostgreSQL refused or failed the query; the message is PostgreSQL's."""


class QueryDeadline(QueryFailed):
    """The deadline passed and the query was cancelled."""


class ConsoleUnavailable(ConsoleError):
    """The database cannot be reached."""


# ---------------------------------------------------------------------------------- parsing

# Function names (the last part of a possibly qualified name, lower case) that are refused.
DENIED_FUNCTIONS = frozenset({
    "set_config", "current_setting",
    "nextval", "setval", "currval", "lastval",
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_start_backup", "pg_stop_backup",
    "pg_backup_start", "pg_backup_stop", "pg_export_snapshot", "pg_notify", "pg_stat_file",
    "pg_import_system_collations", "pg_log_backend_memory_contexts", "pg_stat_get_activity",
    "pg_stat_get_backend_activity", "pg_current_snapshot", "pg_current_xact_id",
    "pg_current_xact_id_if_assigned", "pg_xact_status", "pg_snapshot_xmin",
    "loread", "lowrite",
    # run SQL handed to them as a string: a way around this parser
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
    "database_to_xmlschema", "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite",
    "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls",
})
DENIED_PREFIXES = (
    "pg_sleep", "dblink", "lo_", "pg_read_", "pg_ls_", "txid_", "pg_advisory", "pg_try_advisory",
    "pg_stat_reset", "pg_replication_", "pg_logical_", "pg_create_", "pg_drop_", "pg_wal_",
    "pg_file_",
)
_WRITE_STATEMENTS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def _denied_function(name: str) -> bool:
    name = name.lower()
    return name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES)


def _children(node: Any) -> Iterator[Any]:
    from pglast import ast

    if isinstance(node, (list, tuple)):
        yield from node
    elif isinstance(node, ast.Node):
        for attr in node.__slots__:
            value = getattr(node, attr, None)
            if isinstance(value, (list, tuple, ast.Node)):
                yield value


def validate_sql(sql: str) -> None:
    """Accept exactly one read-only SELECT, else raise QueryRefused with the reason."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("the query is empty")
    if len(sql) > MAX_SQL_LENGTH:
        raise QueryRefused(f"the query is longer than {MAX_SQL_LENGTH} characters")
    if "\x00" in sql:
        raise QueryRefused("the query contains a NUL character")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryRefused("the query is not valid UTF-8") from None
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise QueryRefused(f"syntax error: {_one_line(str(exc))}") from None
    except RecursionError:
        raise QueryRefused("the query is nested too deeply") from None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise QueryRefused("only a single SELECT is allowed")
    stack: list[Any] = [statements[0].stmt]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 200_000:
            raise QueryRefused("the query is too complex")
        kind = type(node).__name__
        if kind in _WRITE_STATEMENTS:
            raise QueryRefused("data-modifying statements are not allowed")
        if kind.endswith("Stmt") and kind != "SelectStmt":
            raise QueryRefused("only a single SELECT is allowed")
        if kind == "SelectStmt" and node.intoClause is not None:
            raise QueryRefused("SELECT INTO is not allowed")
        if kind == "LockingClause":
            raise QueryRefused("FOR UPDATE/SHARE is not allowed")
        if kind == "FuncCall":
            name = node.funcname[-1].sval if node.funcname else ""
            if _denied_function(name):
                raise QueryRefused(f"function {name.lower()} is not allowed")
        stack.extend(_children(node))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "error"


# ---------------------------------------------------------------------------------- scope


def sign_scope(key: bytes, key_id: int, *, tenant_id: str | None, pid: int, xid: str, expiry: int) -> str:
    """The value of mcp_gateway.console_scope (format in migrations/010_console_scope.sql).

    tenant_id None = all tenants (auditors).
    """
    kind = "a" if tenant_id is None else "t"
    tenant_hex = "" if tenant_id is None else tenant_id.encode("utf-8").hex()
    payload = "|".join(("v1", str(key_id), kind, tenant_hex, str(pid), xid, str(expiry)))
    signature = hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{payload}|{signature}"


# ---------------------------------------------------------------------------------- results


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "truncated": self.truncated}


def to_json_value(value: Any) -> Any:
    """A JSON-safe rendering of a PostgreSQL value (numeric as string, times ISO 8601)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return str(value)


def _approx_size(row: list[Any]) -> int:
    return sum(len(v) if isinstance(v, str) else 16 for v in row) + 16


# ---------------------------------------------------------------------------------- console


class SqlConsole:
    """Runs admin SQL on the console login under a signed tenant scope."""

    def __init__(self, urls: DatabaseUrls, db: Database, *, row_cap: int = DEFAULT_ROW_CAP,
                 deadline: float = DEFAULT_DEADLINE, byte_budget: int = DEFAULT_BYTE_BUDGET,
                 max_connections: int = 4) -> None:
        self.db = db
        self.row_cap = row_cap
        self.deadline = deadline
        self.byte_budget = byte_budget
        self.url = urls.console
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._key: tuple[int, bytes, float] | None = None

    async def close(self) -> None:
        """Nothing to release: every query has its own connection, closed when it ends."""

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        # A fresh connection per query (at most `max_connections` at once): whatever a
        # query did to its session cannot reach the next one, and there is no pool to
        # close at shutdown.
        async with self._slots:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name="mcp-gateway console", prepare_threshold=None,
                connect_timeout=10)
            try:
                yield conn
            finally:
                await conn.close()

    async def signing_key(self) -> tuple[int, bytes]:
        """The newest console key, read through the authn role and cached for KEY_TTL seconds."""
        now = time.monotonic()
        if self._key is not None and now - self._key[2] < KEY_TTL:
            return self._key[0], self._key[1]
        async with self.db.as_system("authn") as conn:
            row = await (await conn.execute(
                "SELECT key_id, key FROM mcp_gateway_private.console_keys ORDER BY key_id DESC LIMIT 1")).fetchone()
        if row is None:
            raise ConsoleUnavailable("the console key is missing: run `mcp-gateway migrate`")
        self._key = (int(row[0]), bytes(row[1]), now)
        return self._key[0], self._key[1]

    @staticmethod
    def scope_of(principal: Principal) -> str | None:
        """Tenant for a tenant admin, None (= all tenants) for an auditor; members refused."""
        if principal.role == "admin":
            return principal.tenant_id
        if principal.role == "auditor":
            return None
        raise ConsoleForbidden("the SQL console is for tenant admins and auditors")

    async def run(self, principal: Principal, sql: str, *, row_cap: int | None = None,
                  deadline: float | None = None) -> SqlResult:
        tenant = self.scope_of(principal)
        validate_sql(sql)
        return await self.execute_scoped(tenant, sql, row_cap=row_cap, deadline=deadline)

    async def execute_scoped(self, tenant: str | None, sql: str, *, row_cap: int | None = None,
                             deadline: float | None = None) -> SqlResult:
        """Run an already validated query under a signed scope (tenant None = all tenants)."""
        row_cap = self.row_cap if row_cap is None else row_cap
        deadline = self.deadline if deadline is None else deadline
        started = time.monotonic()
        try:
            key_id, key = await self.signing_key()
            async with self._connection() as conn:
                try:
                    return await self._execute(conn, key_id, key, tenant, sql, row_cap, deadline, started)
                except QueryDeadline:
                    raise
                except psycopg.errors.QueryCanceled as exc:
                    raise QueryDeadline(_pg_message(exc)) from None
                except (psycopg.errors.Error) as exc:
                    if isinstance(exc, psycopg.OperationalError) and conn.closed:
                        raise ConsoleUnavailable("the database connection was lost") from None
                    raise QueryFailed(_pg_message(exc)) from None
        except ConsoleError:
            raise
        except psycopg.OperationalError as exc:
            raise ConsoleUnavailable(f"database unavailable: {_one_line(str(exc))}") from None

    async def _execute(self, conn: psycopg.AsyncConnection, key_id: int, key: bytes, tenant: str | None,
                       sql: str, row_cap: int, deadline: float, started: float) -> SqlResult:
        timeout_ms = max(1, int(deadline * 1000) + 1000)  # backstop; the client cancels first
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = await (await conn.execute(
                "SELECT pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id()::text")).fetchone()
            assert row is not None
            scope = sign_scope(key, key_id, tenant_id=tenant, pid=int(row[0]), xid=str(row[1]),
                               expiry=int(time.time() + deadline + 60))
            # Bind parameters: the scope never appears in query text.
            await conn.execute(
                "SELECT pg_catalog.set_config('mcp_gateway.console_scope', %s, true),"
                " pg_catalog.set_config('statement_timeout', %s, true),"
                " pg_catalog.set_config('lock_timeout', '2s', true),"
                " pg_catalog.set_config('search_path', 'pg_catalog, gateway', true)",
                (scope, f"{timeout_ms}ms"))
            cur = conn.cursor()
            work = asyncio.ensure_future(self._fetch(cur, sql, row_cap))
            remaining = deadline - (time.monotonic() - started)
            try:
                done, _ = await asyncio.wait({work}, timeout=max(remaining, 0.001))
            except BaseException:  # our caller was cancelled: stop the query before leaving
                await _abort(conn, work)
                raise
            if not done:
                await _abort(conn, work)
                raise QueryDeadline(f"the query did not finish within {deadline:g} s and was cancelled")
            return work.result()

    async def _fetch(self, cur: psycopg.AsyncCursor[Any], sql: str, row_cap: int) -> SqlResult:
        # binary=True forces the extended protocol: the server accepts exactly one
        # statement, whatever the text holds (the parser already said so).
        await cur.execute(b"DECLARE console_cursor NO SCROLL CURSOR FOR " + sql.encode("utf-8"), binary=True)
        columns: list[str] = []
        rows: list[list[Any]] = []
        size = 0
        truncated = False
        batch = 500
        while True:
            want = min(batch, row_cap + 1 - len(rows))
            await cur.execute(f"FETCH FORWARD {want} FROM console_cursor".encode())
            if not columns and cur.description:
                columns = [d.name for d in cur.description]
            fetched = await cur.fetchall()
            for raw in fetched:
                if len(rows) >= row_cap:
                    truncated = True
                    break
                converted = [to_json_value(v) for v in raw]
                size += _approx_size(converted)
                rows.append(converted)
                if size > self.byte_budget:
                    truncated = True
                    break
            if truncated or len(fetched) < want:
                break
        return SqlResult(columns=columns, rows=rows, truncated=truncated)


async def _abort(conn: psycopg.AsyncConnection, work: asyncio.Future[Any]) -> None:
    """Cancel the running query on the server (not only locally) and wait for it to stop."""
    try:
        await conn.cancel_safe(timeout=5)
    except Exception:
        pass
    try:
        await asyncio.shield(work)
    except BaseException:
        pass


def _pg_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return _one_line(primary or str(exc) or type(exc).__name__)


# ---------------------------------------------------------------------------------- MCP tool


def add_admin_tools(mcp: FastMCP, console: SqlConsole, principal_of: Callable[[], Principal | None]) -> None:
    """`run_sql` for tenant admins (their tenant) and auditors (all tenants).

    Tagged "admin" so the access middleware hides it from members; the tool itself also
    answers members exactly as FastMCP answers an unknown tool.
    """
    from fastmcp.exceptions import NotFoundError, ToolError

    @mcp.tool(tags={"admin"}, annotations={"readOnlyHint": True})
    async def run_sql(sql: str) -> dict[str, Any]:
        """Run one read-only SELECT over your tenant's gateway data (auditors: every tenant).

        Tables: gateway.mcp_sessions, gateway.mcp_requests, gateway.usage_daily, gateway.users,
        gateway.tenants; views gateway.mcp_session_stats, gateway.mcp_user_stats. At most
        10,000 rows (`truncated` says when more existed) and 10 seconds.
        """
        principal = principal_of()
        if principal is None or principal.role not in PRIVILEGED_ROLES:
            raise NotFoundError("Unknown tool: 'run_sql'")
        try:
            result = await console.run(principal, sql)
        except ConsoleError as exc:
            raise ToolError(str(exc)) from None
        return result.as_dict()
