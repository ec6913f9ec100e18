"""One live process per instance id, held with a PostgreSQL advisory lock.

Analytics sessions carry the instance id of the process that opened them, and a process
that starts closes the sessions its id left open as `server_crash`. That is right only when
no live process uses the id. So a process holds a session-level advisory lock on its id, on a
connection of its own, for as long as it lives: PostgreSQL releases it the moment the process
(or its connection) dies, crash recovery runs only once the lock is held, and a second process
started with a live instance's id refuses to start without touching that instance's sessions.

Session-level advisory locks need a real session: point MCP_GATEWAY_APP_DATABASE_URL at
PostgreSQL or at a pooler in session mode, not at a transaction-mode pooler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import psycopg
from psycopg.rows import scalar_row

from gateway.errors import UserError
from gateway.formatting import one_line

log = logging.getLogger("mcp_gateway.instance")

# One 64-bit hash per instance id, taken in the two-key form (two int4 halves). That form is a lock
# space of its own, and no one-argument call reaches it: the admin SQL console refuses advisory-lock
# functions by name, but PostgreSQL also calls a one-argument function through attribute notation
# (`SELECT k.pg_try_advisory_lock FROM unnest(ARRAY[...]) k`), which could otherwise squat an id.
_TRY_LOCK = ("SELECT pg_try_advisory_lock((h >> 32)::int, ((h & 4294967295) - 2147483648)::int)"
             " FROM (SELECT hashtextextended('mcp-gateway instance ' || %s, 0) AS h) AS instance_key")


class InstanceInUse(UserError):
    """Another live process holds this instance id."""


class DatabaseUnavailable(Exception):
    """The lock could not be asked for: the database did not answer."""


class InstanceLock:
    """The advisory lock on one instance id, on a dedicated (synchronous) connection.

    Synchronous on purpose: the CLI takes it before the server's event loop exists, and the
    connection then outlives that loop's start. Async callers use `asyncio.to_thread`.
    """

    def __init__(self, conninfo: str, instance_id: str, *, connect_timeout: float = 10.0) -> None:
        self.conninfo = conninfo
        self.instance_id = instance_id
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> None:
        """Hold the lock, or raise InstanceInUse (someone else holds it) / DatabaseUnavailable."""
        if self._conn is not None:
            return
        try:
            conn = psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                application_name=f"mcp-gateway instance lock {self.instance_id}"[:63],
                # A silently dropped TCP connection must not hang the liveness check (or shutdown) for long.
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3, tcp_user_timeout=20000)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(one_line(exc)) from None
        try:
            locked = conn.cursor(row_factory=scalar_row).execute(_TRY_LOCK, (self.instance_id,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseUnavailable(one_line(exc)) from None
        if not locked:
            conn.close()
            raise InstanceInUse(
                f"instance id {self.instance_id!r} is in use by a running mcp-gateway process; stop it, or give "
                "this one another id (MCP_GATEWAY_INSTANCE_ID) or port (--port, MCP_GATEWAY_PORT)")
        self._conn = conn

    def still_held(self) -> bool:
        """False (and released) when the lock's connection is gone, e.g. the database restarted."""
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # ends the session: PostgreSQL drops the lock with it
            except psycopg.Error:
                pass


class InstanceClaim:
    """Holds the lock while the server runs, and runs crash recovery once it is held.

    If the database is away at start, serving starts anyway (tool calls do not wait on the
    database) and the lock, then recovery, follow when it returns. Recovery closes only sessions
    opened before this process started, so it never ends this process's own.
    """

    def __init__(self, lock: InstanceLock, recover: Callable[[datetime], Awaitable[None]], started_at: datetime,
                 *, check_every: float = 5.0) -> None:
        self.lock = lock
        self.recover = recover
        self.started_at = started_at
        self.check_every = check_every
        self._recovered = False
        self._told_taken = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Raises InstanceInUse when another live process holds the id (nothing else is done then)."""
        try:
            await asyncio.to_thread(self.lock.acquire)
        except DatabaseUnavailable as exc:
            log.error("database unavailable at start (%s); instance lock and crash recovery wait for it", exc)
        if self.lock.held:
            await self._recover()
        self._task = asyncio.create_task(self._watch(), name="mcp-gateway-instance-lock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self.lock.release)

    async def _recover(self) -> None:
        if self._recovered:
            return
        try:
            await self.recover(self.started_at)
            self._recovered = True
        except Exception as exc:  # database away: retried by the watch loop
            log.error("crash recovery for %s failed (%s); retrying", self.lock.instance_id, one_line(exc))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            try:
                if self.lock.held and not await asyncio.to_thread(self.lock.still_held):
                    log.warning("lost the database connection holding instance id %s; taking it again",
                                self.lock.instance_id)
                if not self.lock.held:
                    await asyncio.to_thread(self.lock.acquire)
                    log.info("holding instance id %s", self.lock.instance_id)
                await self._recover()
            except DatabaseUnavailable:
                pass  # still away; the writer reports the outage
            except InstanceInUse:
                if self._told_taken:
                    continue
                self._told_taken = True
                log.error("instance id %s was taken by another process while the database was away; "
                          "give each process its own MCP_GATEWAY_INSTANCE_ID", self.lock.instance_id)
            except Exception:  # never let the watcher die silently
                log.exception("instance lock watcher failed")


