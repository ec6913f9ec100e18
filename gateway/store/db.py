"""Database access: connection URLs, the pool, and the one place identity is set.

Every transaction the gateway runs goes through `Database.as_principal` (a caller's
request) or `Database.as_system` (the tracking writer, token verification). Both
set the database role and identity with `set_config(..., true)` inside an explicit
transaction, so nothing outlives the transaction and the next borrower of the
pooled connection inherits nothing. The runtime login is NOINHERIT: a connection
that skipped this step holds no privileges at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from auth import Principal, Role
from gateway.errors import UserError
from gateway.settings import Settings

APP_LOGIN = "mcp_gateway_app"
CONSOLE_LOGIN = "mcp_gateway_console"

# Principal role -> the database role its transactions run as.
REQUEST_ROLES: dict[Role, str] = {
    "member": "mcp_gateway_member",
    "admin": "mcp_gateway_tenant_admin",
    "auditor": "mcp_gateway_auditor",
}
SYSTEM_ROLES: dict[str, str] = {
    "ingest": "mcp_gateway_ingest",
    "authn": "mcp_gateway_authn",
    "oauth": "mcp_gateway_oauth",  # the OAuth authorization server (gateway/oauth)
}
SystemRole = Literal["ingest", "authn", "oauth"]

# PostgreSQL aborted the transaction to break a lock cycle or keep serializability (SQLSTATE class 40):
# nothing was wrong with the work, and running the transaction again is the documented remedy.
ROLLED_BACK = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
               psycopg.errors.TransactionRollback)

_SET_IDENTITY = (
    "SELECT set_config('role', %s, true),"
    " set_config('mcp_gateway.tenant_id', %s, true),"
    " set_config('mcp_gateway.user_id', %s, true)"
)
_SET_IDENTITY_BOUNDED = _SET_IDENTITY + ", set_config('statement_timeout', %s, true)"


def with_user(url: str, user: str, password: str | None = None, *, dbname: str | None = None) -> str:
    """The same server reached as another login (psycopg conninfo; URL or key=value in)."""
    params = conninfo_to_dict(url)
    params["user"] = user
    if password is not None:
        params["password"] = password
    if dbname is not None:
        params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def url_password(url: str) -> str | None:
    return conninfo_to_dict(url).get("password")  # type: ignore[return-value]


@dataclass(frozen=True)
class DatabaseUrls:
    admin: str      # migrations and operator CLI (owner-capable)
    app: str        # runtime login mcp_gateway_app
    console: str    # admin SQL login mcp_gateway_console
    derived_logins: bool  # app/console derived from admin: migrate aligns their passwords
    embedded: bool


def resolve_urls(settings: Settings, *, start_embedded: bool = True) -> DatabaseUrls:
    """MCP_GATEWAY_DATABASE_URL if set, else the embedded cluster (started if needed)."""
    if settings.database_url is not None:
        admin = settings.database_url.get_secret_value()
        if not admin.startswith(("postgresql://", "postgres://")) and "=" not in admin:
            raise UserError("MCP_GATEWAY_DATABASE_URL must be a postgresql:// URL")
        try:
            password = url_password(admin)
        except psycopg.ProgrammingError as exc:
            raise UserError(f"MCP_GATEWAY_DATABASE_URL is not a valid connection URL: {exc}") from None
        app = settings.app_database_url.get_secret_value() if settings.app_database_url else None
        console = settings.console_database_url.get_secret_value() if settings.console_database_url else None
        return DatabaseUrls(
            admin=admin,
            app=app or with_user(admin, APP_LOGIN, password),
            console=console or with_user(admin, CONSOLE_LOGIN, password),
            derived_logins=app is None or console is None,
            embedded=False,
        )
    from gateway.store.embedded import EmbeddedPostgres, EmbeddedPostgresError

    cluster = EmbeddedPostgres(settings.data_dir)
    try:
        admin = cluster.ensure_running() if start_embedded else cluster.url
    except EmbeddedPostgresError as exc:
        raise UserError(str(exc)) from None
    return DatabaseUrls(admin=admin, app=with_user(admin, APP_LOGIN), console=with_user(admin, CONSOLE_LOGIN),
                        derived_logins=False, embedded=True)


class Database:
    """The runtime pool (login mcp_gateway_app) and the identity-setting transactions."""

    def __init__(self, urls: DatabaseUrls, *, min_size: int = 1, max_size: int = 10,
                 application_name: str = "mcp-gateway") -> None:
        self.urls = urls
        self.pool = AsyncConnectionPool(
            urls.app,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # autocommit: every unit of work is an explicit transaction below.
            kwargs={"autocommit": True, "application_name": application_name},
            timeout=10,
            reconnect_timeout=0,  # keep retrying while the database is away
        )
        self._unwinding: set[asyncio.Future[None]] = set()  # timed-out pings, referenced until they end

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        await self.pool.open(wait=wait, timeout=timeout)

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def as_principal(self, principal: Principal) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction that sees exactly what `principal` may see (row-level security)."""
        async with self._transaction(REQUEST_ROLES[principal.role], principal.tenant_id, principal.user_id) as conn:
            yield conn

    @asynccontextmanager
    async def as_system(self, role: SystemRole, *, timeout: float | None = None
                        ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction for the gateway's own work, with no caller identity.

        `timeout` (seconds) bounds both the wait for a pooled connection (PoolTimeout) and every
        statement in the transaction (statement_timeout, lock waits included), for work a caller waits on.
        """
        async with self._transaction(SYSTEM_ROLES[role], "", "", timeout) as conn:
            yield conn

    @asynccontextmanager
    async def as_vault(self, tenant_id: str, user_id: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction that reads and writes one user's own upstream credentials, nothing else."""
        if not tenant_id or not user_id:
            raise ValueError("the credential vault needs a tenant and a user")
        async with self._transaction("mcp_gateway_vault", tenant_id, user_id) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, db_role: str, tenant_id: str, user_id: str,
                           timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection(timeout=timeout) as conn, conn.transaction():
            if timeout is None:
                await conn.execute(_SET_IDENTITY, (db_role, tenant_id, user_id))
            else:
                await conn.execute(_SET_IDENTITY_BOUNDED, (db_role, tenant_id, user_id, f"{int(timeout * 1000)}ms"))
            yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """Reachable now? Answers within `timeout` even when a stopped server never answers."""
        task = asyncio.ensure_future(self._ping(timeout))
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:  # cancelled in the background: psycopg's cancel request may itself wait on the server
            task.cancel()
            self._unwinding.add(task)
            task.add_done_callback(self._unwinding.discard)
            return False
        return not task.cancelled() and task.exception() is None

    async def _ping(self, timeout: float) -> None:
        async with self.pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")
