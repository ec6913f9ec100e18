"""What the CLI's commands share: settings, database access, the operator's identity, output cells.

Bad input anywhere is a UserError: one line on stderr naming the problem, exit code 2.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from gateway.errors import UserError

if TYPE_CHECKING:
    from auth import Principal
    from gateway.settings import Settings
    from gateway.store.db import Database, DatabaseUrls
    from gateway.store.migrate import MigrationReport

T = TypeVar("T")

OUTPUT_FORMATS = ("table", "csv", "json")
OPERATOR_USER = "cli"
ALL_TENANTS = "*"  # identity of the auditor principal used for all-tenant reads (any non-empty value)


def load_settings() -> Settings:
    """The gateway settings from the environment; a bad value is a one-line UserError."""
    from pydantic import ValidationError

    from gateway.formatting import validation_message
    from gateway.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        where, what = validation_message(exc, default_location="configuration")
        name = where if where == "configuration" else "MCP_GATEWAY_" + where.upper()
        raise UserError(f"{name}: {what}") from None


def database_urls(settings: Settings) -> DatabaseUrls:
    from gateway.store.db import resolve_urls

    return resolve_urls(settings)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def migrate_database(urls: DatabaseUrls) -> MigrationReport:
    from gateway.store.db import url_password
    from gateway.store.migrate import migrate

    return migrate(urls.admin, login_password=url_password(urls.admin) if urls.derived_logins else None)


async def with_db(urls: DatabaseUrls, work: Callable[[Database], Coroutine[Any, Any, T]]) -> T:
    from gateway.store.db import Database

    async with Database(urls, min_size=1, max_size=2, application_name="mcp-gateway cli") as db:
        await db.pool.wait(timeout=15)
        return await work(db)


def require_embedded(settings: Settings) -> None:
    if settings.database_url is not None:
        raise UserError("MCP_GATEWAY_DATABASE_URL is set: the embedded cluster is not in use")


def operator_principal(tenant: str | None) -> Principal:
    """A tenant admin of `tenant`, or an auditor (all tenants) when it is None."""
    from auth import Principal

    if tenant is None:
        return Principal(user_id=OPERATOR_USER, tenant_id=ALL_TENANTS, role="auditor", token_kind="pat",
                         name="mcp-gateway CLI")
    return Principal(user_id=OPERATOR_USER, tenant_id=tenant, role="admin", token_kind="pat",
                     name="mcp-gateway CLI")


def to_the_minute(value: Any) -> str:
    """A timestamp for a table cell: to the minute, blank when unset."""
    return str(value)[:16].replace("T", " ") if value else ""


def check_id(value: str | None, option: str) -> None:
    if value is not None and (not value.strip() or "\x00" in value or len(value) > 500):
        raise UserError(f"{option} {value!r}: not a valid id")


def check_format(output: str) -> None:
    if output not in OUTPUT_FORMATS:
        raise UserError(f"--format {output!r}: expected {', '.join(OUTPUT_FORMATS[:-1])} or {OUTPUT_FORMATS[-1]}")


def database_error(exc: Exception) -> NoReturn:
    """A database failure as a one-line UserError; anything else is re-raised (a bug)."""
    import psycopg

    from gateway.formatting import pg_message

    if isinstance(exc, psycopg.Error):
        text = pg_message(exc)
        hint = " (run `mcp-gateway migrate`?)" if isinstance(exc, psycopg.errors.UndefinedTable) else ""
        raise UserError(f"database error: {text}{hint}") from None
    raise exc


def cell(value: Any, empty: str = "") -> str:
    """One value as text: blank for NULL, `empty` for an empty string, JSON for json/array values.

    Reports pass empty="(none)": a group whose key is an empty string must still be visible.
    """
    if value is None:
        return ""
    if value == "":
        return empty
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
