"""The database connection budget: how many connections each gateway process may open.

One gateway process holds, at most:

    pool size (the runtime pool)  +  1 (the instance lock)  +  SQL console slots (one connection per query)

and a deployment runs `workers × replicas` such processes. That product must fit into the server's
`max_connections`, minus `superuser_reserved_connections`, minus headroom for everything else that connects
(migrations, psql, backups, monitoring):

    workers × replicas × (pool + 1 + sql_slots)  ≤  max_connections − superuser_reserved − headroom

With MCP_GATEWAY_DB_CONNECTION_BUDGET set, each process's pool is cut to its share of that budget:

    pool = min(DB_POOL_SIZE, budget // (workers × replicas) − 1 − sql_slots)

and a share too small for a pool of 2 refuses to start. `doctor` checks the product against the live server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg.rows import class_row

from gateway.errors import UserError
from gateway.settings import Settings

MIN_POOL = 2  # the tracking writer and one request at a time


def processes(settings: Settings) -> int:
    return settings.workers * settings.replicas


def per_process_extra(settings: Settings) -> int:
    """Connections a process holds besides its pool: the instance lock and the SQL console slots."""
    return 1 + settings.sql_slots


def pool_size(settings: Settings) -> int:
    """This process's pool maximum: DB_POOL_SIZE, or its share of DB_CONNECTION_BUDGET when that is set."""
    if settings.db_connection_budget is None:
        return settings.db_pool_size
    share = settings.db_connection_budget // processes(settings) - per_process_extra(settings)
    if share < MIN_POOL:
        raise UserError(
            f"MCP_GATEWAY_DB_CONNECTION_BUDGET={settings.db_connection_budget} leaves {max(share, 0)} pooled "
            f"connection(s) to each of {processes(settings)} process(es) (workers × replicas; each also holds "
            f"{per_process_extra(settings)} for its instance lock and SQL console): raise the budget or run fewer")
    return min(settings.db_pool_size, share)


@dataclass(frozen=True)
class BudgetReport:
    workers: int
    replicas: int
    per_process: int        # pool + lock + console slots
    needed: int             # workers × replicas × per_process
    max_connections: int
    superuser_reserved: int
    headroom: int
    available: int          # max_connections − superuser_reserved − headroom
    fits: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(settings: Settings, max_connections: int, superuser_reserved: int, *,
           replicas: int | None = None) -> BudgetReport:
    replicas = replicas if replicas is not None else settings.replicas
    per_process = pool_size(settings) + per_process_extra(settings)
    needed = settings.workers * replicas * per_process
    available = max_connections - superuser_reserved - settings.db_headroom
    return BudgetReport(workers=settings.workers, replicas=replicas, per_process=per_process, needed=needed,
                        max_connections=max_connections, superuser_reserved=superuser_reserved,
                        headroom=settings.db_headroom, available=available, fits=needed <= available)


@dataclass(frozen=True, slots=True)
class _ServerLimits:
    max_connections: int
    superuser_reserved: int


async def live_report(settings: Settings, db: Any) -> dict[str, Any]:
    """The budget against the server this process is connected to ({"error": ...} when it does not answer)."""
    try:
        async with db.pool.connection(timeout=2.0) as conn:
            server = await (await conn.cursor(row_factory=class_row(_ServerLimits)).execute(
                "SELECT current_setting('max_connections')::int AS max_connections,"
                " current_setting('superuser_reserved_connections')::int AS superuser_reserved")).fetchone()
    except Exception as exc:  # the database away: say so, the caller decides
        return {"error": type(exc).__name__}
    assert server is not None
    return report(settings, server.max_connections, server.superuser_reserved).as_dict()

