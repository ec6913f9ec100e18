"""Is the admin SQL console's second wall in place? (migrations/012_console_side_channels.sql)

Only a superuser can revoke PostgreSQL's statistics functions, size functions, set_config,
pg_sleep, advisory locks and backend signals from PUBLIC. When migrations ran without one,
the console login can still reach them: `mcp-gateway migrate` warns, the `health_check` tool
says so, and `mcp-gateway doctor` prints a WARN line. The parser (gateway/mcp/sqlguard.py) still
refuses all of them, but it is then the only wall.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from psycopg.rows import scalar_row

if TYPE_CHECKING:
    import psycopg

    from gateway.store.db import Database

# One probe per kind of thing migration 012 revokes: a counter, a size, settings, sleep,
# signals, the statistics views. Asking needs no privilege.
OPEN_SQL = """
SELECT array_remove(ARRAY[
    CASE WHEN has_function_privilege('mcp_gateway_console', 'pg_catalog.pg_stat_get_xact_tuples_returned(oid)',
                                     'EXECUTE') THEN 'statistics counters' END,
    CASE WHEN has_function_privilege('mcp_gateway_console', 'pg_catalog.pg_relation_size(regclass)', 'EXECUTE')
         THEN 'relation sizes' END,
    CASE WHEN has_function_privilege('mcp_gateway_console', 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE')
         THEN 'set_config' END,
    CASE WHEN has_function_privilege('mcp_gateway_console', 'pg_catalog.pg_sleep(double precision)', 'EXECUTE')
         THEN 'pg_sleep' END,
    CASE WHEN has_function_privilege('mcp_gateway_console', 'pg_catalog.pg_cancel_backend(integer)', 'EXECUTE')
         THEN 'pg_cancel_backend' END,
    CASE WHEN has_table_privilege('mcp_gateway_console', 'pg_catalog.pg_stat_activity', 'SELECT')
         THEN 'pg_stat_activity' END
], NULL)
"""
WARNING = ("the admin SQL console's side channels are open ({}): migrations ran without a PostgreSQL "
           "superuser. Run `mcp-gateway migrate` once as a superuser (docs/admin-sql.md, \"Without a superuser\").")


def open_channels(conn: psycopg.Connection) -> list[str]:
    """What the console login can still reach (empty: the second wall is in place)."""
    return list(conn.cursor(row_factory=scalar_row).execute(OPEN_SQL).fetchone() or [])


class SideChannelStatus:
    """`closed` / `open: ...` for health_check, read at most every `ttl` seconds."""

    def __init__(self, db: Database, ttl: float = 300.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cached: tuple[float, str] | None = None

    async def status(self) -> str:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.ttl:
            return self._cached[1]
        try:
            async with self.db.as_system("authn") as conn:
                found = list(await (await conn.cursor(row_factory=scalar_row).execute(OPEN_SQL)).fetchone() or [])
        except Exception:
            return "unknown"
        value = "closed" if not found else "open: " + ", ".join(found)
        self._cached = (now, value)
        return value
