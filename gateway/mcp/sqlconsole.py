"""The admin SQL console: read-only SQL for tenant admins (their tenant) and auditors (all).

Used by `POST /api/sql`, `mcp-gateway sql` and the MCP tool `run_sql`. Layers, outermost
first (docs/admin-sql.md has the whole argument and the tests that prove it):

1. Who: members are refused before anything else (403 / absent tool).
2. What: PostgreSQL's own parser (pglast) must see exactly one SELECT made only of
   allowed syntax, functions, operators and types (gateway/mcp/sqlguard.py: an allow-list).
3. Where it runs: the dedicated login `mcp_gateway_console` (a fresh connection per
   query; connections shared fairly between tenants, gateway/mcp/console_slots.py), whose
   only privileges are SELECT on the reporting relations; member of no role, so
   `RESET ROLE` / `set_config('role', ...)` lead nowhere.
4. Which rows: the console's row-level security policies admit rows only under a valid
   `mcp_gateway.console_scope` — tenant (or "all tenants"), backend pid, transaction id
   and expiry, HMAC-SHA256-signed with a key the console login cannot read, verified
   by the SECURITY DEFINER function gateway.console_scope(). Forged, replayed or
   missing → no rows.
5. How much: a READ ONLY transaction, statement_timeout, rows streamed one at a time up
   to the row cap (default 10,000 → truncated=true) and a byte budget, values over the
   value cap cut on the server, and a deadline (default 10 s, counted from when the query
   got its connection) enforced by this client cancelling the query.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import class_row, scalar_row

from auth import PRIVILEGED_ROLES, Principal
from gateway.formatting import pg_message
from gateway.mcp.console_slots import FairSlots, SlotsBusy
from gateway.mcp.sqlguard import QueryRefused as GuardRefused
from gateway.mcp.sqlguard import SqlGuard

if TYPE_CHECKING:
    from fastmcp import FastMCP

    from gateway.store.db import Database, DatabaseUrls

DEFAULT_ROW_CAP = 10_000
DEFAULT_DEADLINE = 10.0
DEFAULT_BYTE_BUDGET = 32 * 1024 * 1024
DEFAULT_VALUE_CAP = 1024 * 1024
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


class ConsoleBusy(ConsoleError):
    """This tenant already has too many console queries waiting (HTTP 429)."""


# ---------------------------------------------------------------------------------- parsing


def validate_sql(sql: str, guard: SqlGuard | None = None) -> str:
    """Accept exactly one read-only SELECT of allowed parts (gateway/mcp/sqlguard.py), else raise
    QueryRefused with the reason. Returns the statement's own text (no trailing `;`)."""
    try:
        return (guard or _GUARD).validate(sql)
    except GuardRefused as exc:
        raise QueryRefused(str(exc)) from None


_GUARD = SqlGuard()


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

    def json_body(self) -> memoryview:
        """The answer as JSON bytes, built row by row while the rows are released: the
        answer never exists twice in memory (as objects and as one big string)."""
        out = bytearray(b'{"columns":')
        out += _dumps(self.columns)
        out += b',"rows":['
        rows, self.rows = self.rows, []
        rows.reverse()
        first = True
        while rows:
            if not first:
                out += b","
            out += _dumps(rows.pop())
            first = False
        out += b'],"truncated":' + (b"true" if self.truncated else b"false") + b"}"
        return memoryview(out)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


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


def value_size(value: Any) -> int:
    """What one JSON-ready value costs: its Python object plus its JSON text (an estimate that
    errs high; the byte budget bounds the sum over an answer)."""
    if value is None or isinstance(value, bool):
        return 8 + 5
    if isinstance(value, int):
        return 40 + 20
    if isinstance(value, float):
        return 32 + 24
    if isinstance(value, str):
        # JSON escapes control characters as \u00XX: up to 6 bytes per character
        return sys.getsizeof(value) + 8 + (len(value) * 6 if not value.isprintable() else len(value) * 4) + 2
    if isinstance(value, dict):
        return 240 + sum(value_size(k) + value_size(v) for k, v in value.items())
    if isinstance(value, list):
        return 64 + sum(value_size(v) for v in value)
    return 64 + len(str(value)) * 8


@dataclass(frozen=True)
class ConsoleLimits:
    """The console's bounds (settings MCP_GATEWAY_SQL_*; docs/admin-sql.md)."""

    row_cap: int = DEFAULT_ROW_CAP
    deadline: float = DEFAULT_DEADLINE
    byte_budget: int = DEFAULT_BYTE_BUDGET
    value_cap: int = DEFAULT_VALUE_CAP
    slots: int = 4
    slots_per_tenant: int = 2
    queue_per_tenant: int = 8
    queue_timeout: float = 30.0


# ---------------------------------------------------------------------------------- console


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A row of mcp_gateway_private.console_keys: scopes are signed with the newest."""

    key_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class _FetchedKey:
    key: SigningKey
    fetched_at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Backend:
    """What a signed scope binds to: the console connection's backend and its transaction."""

    pid: int
    xid: str


class SqlConsole:
    """Runs admin SQL on the console login under a signed tenant scope."""

    def __init__(self, urls: DatabaseUrls, db: Database, *, row_cap: int | None = None,
                 deadline: float | None = None, byte_budget: int | None = None,
                 limits: ConsoleLimits | None = None) -> None:
        limits = limits or ConsoleLimits()
        self.limits = limits
        self.db = db
        self.row_cap = limits.row_cap if row_cap is None else row_cap
        self.deadline = limits.deadline if deadline is None else deadline
        self.byte_budget = limits.byte_budget if byte_budget is None else byte_budget
        self.value_cap = max(64, min(limits.value_cap, self.byte_budget // 4))
        self.url = urls.console
        self.slots = FairSlots(limits.slots, limits.slots_per_tenant, limits.queue_per_tenant)
        self._key: _FetchedKey | None = None
        self._guard: SqlGuard | None = None

    async def close(self) -> None:
        """Nothing to release: every query has its own connection, closed when it ends."""

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        # A fresh connection per query: whatever a query did to its session cannot reach the
        # next one, and there is no pool to close at shutdown.
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name="mcp-gateway console", prepare_threshold=None,
            connect_timeout=10)
        try:
            yield conn
        finally:
            await conn.close()

    async def guard(self) -> SqlGuard:
        """The SQL guard, knowing every function name in this database (read once)."""
        if self._guard is None:
            try:
                async with self.db.as_system("authn") as conn:
                    names = await (await conn.cursor(row_factory=scalar_row).execute(
                        "SELECT DISTINCT proname::text FROM pg_catalog.pg_proc WHERE pronargs >= 1")).fetchall()
                self._guard = SqlGuard(names)
            except psycopg.Error:
                return _GUARD  # built-in names; the database's own privileges still hold
        return self._guard

    async def signing_key(self) -> SigningKey:
        """The newest console key, read through the authn role and cached for KEY_TTL seconds."""
        now = time.monotonic()
        if self._key is not None and now - self._key.fetched_at < KEY_TTL:
            return self._key.key
        async with self.db.as_system("authn") as conn:
            key = await (await conn.cursor(row_factory=class_row(SigningKey)).execute(
                "SELECT key_id, key FROM mcp_gateway_private.console_keys ORDER BY key_id DESC LIMIT 1")).fetchone()
        if key is None:
            raise ConsoleUnavailable("the console key is missing: run `mcp-gateway migrate`")
        self._key = _FetchedKey(key, now)
        return key

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
        try:
            guard = await self.guard()
        except psycopg.OperationalError as exc:
            raise ConsoleUnavailable(f"database unavailable: {pg_message(exc)}") from None
        statement = validate_sql(sql, guard)
        return await self.execute_scoped(tenant, statement, row_cap=row_cap, deadline=deadline)

    async def execute_scoped(self, tenant: str | None, sql: str, *, row_cap: int | None = None,
                             deadline: float | None = None) -> SqlResult:
        """Run an already validated statement under a signed scope (tenant None = all tenants)."""
        row_cap = self.row_cap if row_cap is None else row_cap
        deadline = self.deadline if deadline is None else deadline
        share = ("all",) if tenant is None else ("tenant", tenant)
        try:
            key = await self.signing_key()
            async with self.slots.slot(share, timeout=self.limits.queue_timeout):
                started = time.monotonic()  # time spent waiting for a slot is not the query's
                async with self._connection() as conn:
                    try:
                        return await self._execute(conn, key, tenant, sql, row_cap, deadline, started)
                    except QueryDeadline:
                        raise
                    except psycopg.errors.QueryCanceled as exc:
                        raise QueryDeadline(pg_message(exc)) from None
                    except (psycopg.errors.Error) as exc:
                        if isinstance(exc, psycopg.OperationalError) and conn.closed:
                            raise ConsoleUnavailable("the database connection was lost") from None
                        raise QueryFailed(pg_message(exc)) from None
        except SlotsBusy as exc:
            raise ConsoleBusy(f"the console is busy: {exc}; try again shortly") from None
        except ConsoleError:
            raise
        except psycopg.OperationalError as exc:
            raise ConsoleUnavailable(f"database unavailable: {pg_message(exc)}") from None

    async def _execute(self, conn: psycopg.AsyncConnection, key: SigningKey, tenant: str | None,
                       sql: str, row_cap: int, deadline: float, started: float) -> SqlResult:
        timeout_ms = max(1, int(deadline * 1000) + 1000)  # backstop; the client cancels first
        # No transaction block to commit: the connection is closed after the answer, which
        # ends the READ ONLY transaction whatever state an early stop left it in.
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        backend = await (await conn.cursor(row_factory=class_row(_Backend)).execute(
            "SELECT pg_catalog.pg_backend_pid() AS pid, pg_catalog.pg_current_xact_id()::text AS xid")).fetchone()
        assert backend is not None
        scope = sign_scope(key.key, key.key_id, tenant_id=tenant, pid=backend.pid, xid=backend.xid,
                           expiry=int(time.time() + deadline + 60))
        # SET LOCAL, not set_config(): set_config is revoked from the console login. The
        # scope is digits, hex and '|' only; quoted as a literal, never part of user text.
        await conn.execute(sql_literal_settings(scope, f"{timeout_ms}ms"))
        work = asyncio.ensure_future(self._fetch(conn, sql, row_cap))
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

    async def _fetch(self, conn: psycopg.AsyncConnection, sql: str, row_cap: int) -> SqlResult:
        statement = sql.encode("utf-8")
        cur = conn.cursor()
        # The columns first (LIMIT 0 evaluates no row). binary=True forces the extended
        # protocol: the server accepts exactly one statement, whatever the text holds.
        await cur.execute(b"SELECT * FROM (\n" + statement + b"\n) AS q LIMIT 0", binary=True)
        columns = [d.name for d in cur.description or ()]
        if not columns:
            return SqlResult(columns=[], rows=[], truncated=False)
        # Each value over the value cap is cut on the server (to its first characters as text),
        # so no single row can be large; rows are streamed one at a time (libpq single-row
        # mode) and the stream stops at the row cap or the byte budget.
        cap = self.value_cap
        count = len(columns)
        names = ", ".join(f"c{i}" for i in range(count))
        sizes = ", ".join(f"pg_catalog.pg_column_size(q.c{i}) AS s{i}" for i in range(count))
        picks = ", ".join(f"CASE WHEN s.s{i} <= {cap} THEN s.c{i} END, "
                          f"CASE WHEN s.s{i} > {cap} THEN pg_catalog.left(s.c{i}::text, {cap // 4}) END"
                          for i in range(count))
        wrapped = (f"SELECT {picks} FROM (SELECT q.*, {sizes} FROM (\n").encode() + statement + \
            f"\n) AS q({names})) AS s LIMIT {row_cap + 1}".encode()
        rows: list[list[Any]] = []
        size = 0
        truncated = False
        async for raw in cur.stream(wrapped, binary=True):
            if len(rows) >= row_cap:
                truncated = True
                break
            converted = []
            for i in range(count):
                whole, cut = raw[2 * i], raw[2 * i + 1]
                if cut is not None:
                    truncated = True
                    converted.append(cut)
                else:
                    converted.append(to_json_value(whole))
            row_size = 64 + sum(value_size(v) for v in converted)
            if size + row_size > self.byte_budget:
                truncated = True
                break
            size += row_size
            rows.append(converted)
        return SqlResult(columns=columns, rows=rows, truncated=truncated)


_SETTING_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789|")


def sql_literal_settings(scope: str, statement_timeout: str) -> bytes:
    """The per-transaction settings of a console query, as SET LOCAL statements."""
    for value in (scope, statement_timeout):
        if not all(c in _SETTING_CHARACTERS for c in value):
            raise ValueError("unexpected character in a console setting")
    return (f"SET LOCAL mcp_gateway.console_scope = '{scope}';"
            f" SET LOCAL statement_timeout = '{statement_timeout}';"
            " SET LOCAL lock_timeout = '2s';"
            " SET LOCAL search_path = pg_catalog, gateway").encode()


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


def limits_from(settings: Any) -> ConsoleLimits:
    """ConsoleLimits from the settings model (gateway/settings.py, MCP_GATEWAY_SQL_*)."""
    return ConsoleLimits(
        row_cap=settings.sql_row_cap, deadline=settings.sql_deadline, byte_budget=settings.sql_byte_budget,
        value_cap=settings.sql_value_cap, slots=settings.sql_slots, slots_per_tenant=settings.sql_slots_per_tenant,
        queue_per_tenant=settings.sql_queue_per_tenant, queue_timeout=settings.sql_queue_timeout)


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
