"""The tracking writer: tool calls never wait on PostgreSQL.

`submit()` appends to an in-memory deque and returns. A background task flushes
batches (every `flush_interval` seconds, or sooner when `flush_rows` wait) in one
transaction as mcp_gateway_ingest: provision tenants/users, open analytics
sessions (one open session per key across every replica, enforced by a partial
unique index), insert requests (idempotent on their id), touch last_activity once
per session per flush, and close ended sessions.

When the database is away the batch stays at the head of the queue and is retried
with backoff; past `queue_max` records go to a spill file and come back when the
database does. Only if the spill file cannot be written are records dropped, and
then they are counted and logged. Shutdown drains the queue (waiting out a database that
is briefly away, up to `stop()`'s bound), then closes this instance's open sessions as
`server_shutdown`. A transaction PostgreSQL aborts to break a deadlock (replicas update
the same session rows) is simply run again, not taken for an outage.

A batch the database refuses (a DataError or IntegrityError: a constraint, text it cannot
hold) or that cannot even be encoded (a lone surrogate) is not an outage: it is bisected
until the refused record stands alone, and every other record is written. The refused
record is written again with its free text cleaned (counted as `repaired`), and only if
that fails too is it set aside (counted as `quarantined`, one log line). A call whose
session row is missing gets a minimal session row rather than being lost. Anything else
(connection lost, pool timeout, missing privilege or schema) keeps every record and retries.
`health()` says when records wait and nothing has been written for `stall_seconds`.

The same loop heartbeats this instance and closes sessions that outlived their
idle timeout (`timeout`) or whose process stopped heartbeating (`server_crash`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import math
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg.rows import scalar_row

from auth.claimtext import MAX_CLIENT_NAME, MAX_CLIENT_VERSION, MAX_EMAIL, MAX_NAME, display_text, storable
from gateway.formatting import one_line
from gateway.store.db import ROLLED_BACK, Database
from gateway.tracking.pricing import Pricing, arguments_text, count_tokens
from gateway.tracking.records import Record, SessionEnded, SessionOpened, ToolCalled, WriterStats

log = logging.getLogger("mcp_gateway.writer")
T = TypeVar("T")

MAX_BATCH = 5000
HEARTBEAT_SECONDS = 5.0
CRASH_AFTER_SECONDS = 30.0  # a replica silent this long is taken for dead
COUNT_SLICE = 64  # records whose tokens are counted between two turns of the event loop
SHUTDOWN_CLOSE_BOUND = 3.0  # seconds for closing this instance's sessions when the drain did not finish
ROLLBACK_RETRIES = 8  # a transaction PostgreSQL chose as a deadlock victim is simply run again


# Ends open sessions; the caller adds the WHERE clause. Parameter: the reason.
_CLOSE_SESSIONS = ("UPDATE gateway.mcp_sessions s SET status = 'disconnected', disconnected_at = now(),"
                   " total_duration = extract(epoch FROM now() - s.connected_at), disconnect_reason = %s")


# Faults of the records themselves: the database refused their content (DataError: text it cannot
# hold, a value out of range; IntegrityError: a constraint), or psycopg could not encode them
# (UnicodeEncodeError for a lone surrogate). Retrying the same batch can never succeed.
# Everything else (OperationalError, InterfaceError, pool timeouts, a missing privilege or
# table) is about the database, not the records: keep them and retry.
_RECORD_FAULTS = (psycopg.DataError, psycopg.IntegrityError, UnicodeError, ValueError, TypeError, OverflowError)
_REASON = re.compile(r"error:[A-Za-z0-9_.]{1,100}|client_disconnect|timeout|server_shutdown|server_crash")


def is_record_fault(exc: BaseException) -> bool:
    return isinstance(exc, _RECORD_FAULTS)


class _LastCall(NamedTuple):
    """A session's latest call in a batch: its `last_activity`, and the key to report it gone under."""

    at: datetime
    session_key: str


def utcnow() -> datetime:
    return datetime.now(UTC)


class TrackingWriter:
    def __init__(
        self,
        db: Database,
        *,
        instance_id: str,
        pricing: Pricing | None = None,
        flush_interval: float = 1.0,
        flush_rows: int = 2000,
        queue_max: int = 200_000,
        spill_dir: Path | None = None,
        idle_timeout: float = 1800.0,
        stall_seconds: float = 60.0,
        on_session_gone: Callable[[str, uuid.UUID], None] | None = None,
        on_session_canonical: Callable[[str, uuid.UUID, uuid.UUID], None] | None = None,
    ) -> None:
        self.db = db
        self.instance_id = instance_id
        self.pricing = pricing or Pricing()
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self.queue_max = queue_max
        self.spill_path = (spill_dir / f"{_safe(instance_id)}-{os.getpid()}.jsonl") if spill_dir else None
        self.idle_timeout = idle_timeout
        self.stall_seconds = stall_seconds
        self.on_session_gone = on_session_gone
        self.on_session_canonical = on_session_canonical
        self.stats = WriterStats()
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._canonical: dict[uuid.UUID, uuid.UUID] = {}  # local session id -> id another replica opened
        self._spilled_count = 0
        self._next_maintenance = 0.0
        self._price_version = self.pricing.effective_version
        self._last_progress = time.monotonic()  # last write, or last moment nothing was waiting

    # -- hot path ----------------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Never blocks on the database; never raises."""
        if len(self._queue) >= self.queue_max:
            self._spill(record)
            return
        self._queue.append(record)
        if len(self._queue) >= self.flush_rows:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._queue) + self._spilled_count

    def health(self) -> dict[str, Any]:
        """What /ready reports. `healthy` is False when the loop has stopped, or when records wait and
        nothing has been written for `stall_seconds` (an outage, or a fault no retry can fix)."""
        problem: str | None = None
        stalled_for = time.monotonic() - self._last_progress
        if self._task is not None and self._task.done() and not self._stopping:
            problem = "the writer loop has stopped"
        elif self.backlog and stalled_for > self.stall_seconds:
            problem = (f"{self.backlog} records waiting and nothing written for {int(stalled_for)} s"
                       + (f" ({self.stats.last_error})" if self.stats.last_error else ""))
        stats = self.stats
        return {"healthy": problem is None, "problem": problem, "backlog": self.backlog,
                "database_up": stats.database_up, "written": stats.written, "dropped": stats.dropped,
                "spilled": stats.spilled, "repaired": stats.repaired, "quarantined": stats.quarantined,
                "last_error": stats.last_error}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._last_progress = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="mcp-gateway-writer")

    async def stop(self, drain_timeout: float = 15.0) -> None:
        """Drain what is queued (bounded in time), then close this instance's sessions."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=drain_timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                log.error("writer: shutdown drain timed out with %d records not written", self.backlog)
        try:
            # After a drain that did not finish the database is likely away: do not wait a pool timeout more.
            closing = self._close_instance_sessions("server_shutdown")
            await (asyncio.wait_for(closing, SHUTDOWN_CLOSE_BOUND) if self.backlog else closing)
        except Exception as exc:  # database away at shutdown: the next start closes them as crashed
            log.error("writer: could not close sessions at shutdown: %s", one_line(exc))
        if self.backlog:
            log.error("writer: %d records were not written before exit", self.backlog)

    async def recover_crashed(self, before: datetime | None = None) -> int:
        """At start: sessions this instance id left open were not shut down cleanly.

        Only once this process holds the instance id (gateway.store.instance_lock); `before` spares the
        sessions this process itself opened when recovery runs late (database away at start).
        """
        async def recover(conn: psycopg.AsyncConnection) -> int:
            cur = await conn.execute(_CLOSE_SESSIONS + " WHERE s.instance_id = %s AND s.status <> 'disconnected'"
                                     " AND s.connected_at < coalesce(%s::timestamptz, 'infinity')",
                                     ("server_crash", self.instance_id, before))
            await self._heartbeat(conn)
            return cur.rowcount

        return await self._transaction(recover)

    async def _transaction(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """`work` in one ingest transaction, run again when PostgreSQL rolled it back as a deadlock victim
        or a serialization failure. Replicas (and one replica's shutdown beside another's last batch) update
        the same session rows; PostgreSQL breaks such a cycle by aborting one side, which only has to run
        again. Nothing else is retried here: an outage is the loop's to wait out."""
        for attempt in range(1, ROLLBACK_RETRIES + 1):
            try:
                async with self.db.as_system("ingest") as conn:
                    return await work(conn)
            except ROLLED_BACK:
                if attempt == ROLLBACK_RETRIES:
                    raise
                self.stats.rolled_back += 1
                await asyncio.sleep(random.uniform(0, 0.02 * attempt))  # the other side commits meanwhile
        raise AssertionError("unreachable")

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            if not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._maintenance()
                while self._queue or self._spilled_count:
                    if not self._queue:
                        self._unspill()
                        if not self._queue:
                            continue
                    try:
                        await self._flush_once()
                    except Exception as exc:
                        if not is_record_fault(exc):
                            raise
                        await self._isolate(exc)  # refused or unencodable records, not an outage
                    if not self._stopping and len(self._queue) < self.flush_rows:
                        break
                if not self.backlog:
                    self._last_progress = time.monotonic()
                if not self.stats.database_up:
                    log.warning("writer: database reachable again; backlog %d", self.backlog)
                self.stats.database_up = True
                self.stats.last_error = None
                backoff = 0.5
            except Exception as exc:
                # Connection lost, pool timeout, anything unforeseen: keep every record, retry. Also while
                # stopping: `stop()` bounds the drain, and a database back within it loses nothing.
                self._note_outage(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping and not self._queue and not self._spilled_count:
                return

    def _note_outage(self, exc: BaseException) -> None:
        if self.stats.database_up:
            log.error("writer: database unavailable (%s); keeping %d records until it returns",
                      one_line(exc), self.backlog)
        self.stats.database_up = False
        self.stats.last_error = one_line(exc)

    async def _maintenance(self) -> None:
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + min(HEARTBEAT_SECONDS, max(self.idle_timeout / 4, 0.25))
        await self._transaction(self._sweep)

    async def _sweep(self, conn: psycopg.AsyncConnection) -> None:
        await self._heartbeat(conn)
        # Idle past the timeout -> ended as timeout; quiet for a while -> idle.
        await conn.execute(
            _CLOSE_SESSIONS + " WHERE s.status <> 'disconnected'"
            " AND s.last_activity < now() - make_interval(secs => %s)", ("timeout", self.idle_timeout))
        await conn.execute(
            "UPDATE gateway.mcp_sessions SET status = 'idle' WHERE status = 'active'"
            " AND last_activity < now() - make_interval(secs => %s)", (min(self.idle_timeout / 2, 300.0),))
        # Open sessions of replicas that stopped heartbeating were left by a crash.
        await conn.execute(
            _CLOSE_SESSIONS + " FROM gateway.instances i WHERE s.instance_id = i.instance_id"
            " AND s.status <> 'disconnected' AND i.instance_id <> %s"
            " AND i.heartbeat_at < now() - make_interval(secs => %s)",
            ("server_crash", self.instance_id, CRASH_AFTER_SECONDS))

    async def _heartbeat(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(
            "INSERT INTO gateway.instances (instance_id) VALUES (%s)"
            " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()", (self.instance_id,))

    async def _close_instance_sessions(self, reason: str) -> None:
        await self._transaction(lambda conn: conn.execute(
            _CLOSE_SESSIONS + " WHERE s.instance_id = %s AND s.status <> 'disconnected'", (reason, self.instance_id)))

    # -- one batch -----------------------------------------------------------------------

    async def _flush_once(self) -> None:
        count = min(len(self._queue), MAX_BATCH)
        batch = [self._queue[i] for i in range(count)]
        await self._count_in_slices(batch)  # normally done already, while the previous batch was being written
        # Pipelining: count the next batch's tokens in a thread while PostgreSQL works on this one
        # (and without stalling the event loop that serves calls for the whole batch).
        upcoming = [self._queue[i] for i in range(count, min(len(self._queue), count + MAX_BATCH))]
        counting = asyncio.ensure_future(asyncio.to_thread(self._count_all, upcoming)) if upcoming else None
        try:
            await self._write(batch)
        finally:
            if counting is not None:
                try:
                    await counting
                except Exception:  # whatever was not counted is counted when its batch is written
                    log.exception("writer: counting tokens ahead failed")
        # Committed: only now do the records leave the queue.
        for _ in range(count):
            self._queue.popleft()
        self._last_progress = time.monotonic()
        self.stats.flushes += 1
        self.stats.last_flush_size = count
        self.stats.flush_sizes.append(count)
        del self.stats.flush_sizes[:-100]

    async def _isolate(self, cause: BaseException) -> None:
        """Write the head batch in halves, down to the single records at fault; each part leaves the
        queue as soon as it commits, so an outage midway keeps exactly what is not yet written."""
        count = min(len(self._queue), MAX_BATCH)
        log.warning("writer: a batch of %d was refused (%s); isolating the records at fault", count, one_line(cause))
        sizes = [count]  # parts still to write, in queue order (a stack: the next part is last)
        while sizes:
            size = sizes.pop()
            part = [self._queue[i] for i in range(size)]
            try:
                await self._write(part)
            except Exception as exc:
                if not is_record_fault(exc):
                    raise  # an outage after all: what is left stays queued
                if size > 1:
                    sizes += [size - size // 2, size // 2]
                    continue
                await self._salvage(part[0], exc)
            for _ in range(size):
                self._queue.popleft()
            self._last_progress = time.monotonic()

    async def _salvage(self, record: Record, cause: BaseException) -> None:
        """One record the database refused as it is: write a cleaned version, else set it aside."""
        for attempt in _repairs(record):
            try:
                await self._write(attempt)
            except Exception as exc:
                if not is_record_fault(exc):
                    raise
                cause = exc
                continue
            self.stats.repaired += 1
            log.warning("writer: stored a %s record after cleaning it (%s)", type(record).__name__, one_line(cause))
            return
        self.stats.quarantined += 1
        self.stats.last_error = one_line(cause)
        log.error("writer: quarantined a %s record the database refuses (%s): session %s; %d quarantined in total",
                  type(record).__name__, one_line(cause), record.session_id, self.stats.quarantined)

    async def _write(self, batch: list[Record]) -> None:
        opened = [r for r in batch if isinstance(r, SessionOpened)]
        calls = [r for r in batch if isinstance(r, ToolCalled)]
        ended = [r for r in batch if isinstance(r, SessionEnded)]
        self._count_all(calls)  # only what no slice or thread counted (a record of an isolated part)

        async def write(conn: psycopg.AsyncConnection) -> None:
            if opened:
                await self._open_sessions(conn, opened)
            if calls:
                await self._insert_calls(conn, calls)
            if ended:
                await self._end_sessions(conn, ended)

        await self._transaction(write)
        self.stats.written += len(calls)

    async def _count_in_slices(self, records: list[Record]) -> None:
        """Count on the event loop a slice at a time: a second's batch counted in one go held every call
        arriving meanwhile for milliseconds (the one-client p99); between slices those calls are served."""
        for start in range(0, len(records), COUNT_SLICE):
            if start:
                await asyncio.sleep(0)
            self._count_all(records[start:start + COUNT_SLICE])

    def _count_all(self, records: Sequence[Record]) -> None:
        for record in records:
            if isinstance(record, ToolCalled) and record.cost is None:
                self._count_tokens(record)

    def _count_tokens(self, call: ToolCalled) -> None:
        """Counts the tokens a caller did not give, then prices the call: once per record (`cost` set)."""
        if call.completion_tokens is None:
            call.completion_tokens = _count_safely(lambda: arguments_text(call.arguments))
        if call.prompt_tokens is None:
            call.prompt_tokens = _count_safely(lambda: call.result_text)
        call.arguments = None
        call.result_text = None
        call.cost = self.pricing.cost_of(call)

    async def _open_sessions(self, conn: psycopg.AsyncConnection, opened: list[SessionOpened]) -> None:
        users: dict[tuple[str, str], SessionOpened] = {}
        for s in opened:
            if s.user_role is not None or (s.tenant_id, s.user_id) not in users:
                users[(s.tenant_id, s.user_id)] = s
        tenants = sorted({t for t, _ in users})
        await conn.execute(
            "INSERT INTO gateway.tenants (tenant_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (tenants,))
        keys = sorted(users)
        rows = [users[k] for k in keys if users[k].user_role is not None]
        unknown = [users[k] for k in keys if users[k].user_role is None]
        if unknown:  # a session row rebuilt from a call: make sure the user exists, change nothing
            await conn.execute(
                "INSERT INTO gateway.users (tenant_id, user_id) SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT (tenant_id, user_id) DO NOTHING",
                ([r.tenant_id for r in unknown], [r.user_id for r in unknown]))
        if rows:
            await conn.execute(
                "INSERT INTO gateway.users AS u (tenant_id, user_id, email, name, role)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                " ON CONFLICT (tenant_id, user_id) DO UPDATE SET"
                "  email = coalesce(EXCLUDED.email, u.email), name = coalesce(EXCLUDED.name, u.name),"
                "  role = EXCLUDED.role, last_seen_at = now()"
                " WHERE (u.email, u.name, u.role) IS DISTINCT FROM"
                "  (coalesce(EXCLUDED.email, u.email), coalesce(EXCLUDED.name, u.name), EXCLUDED.role)"
                "  OR u.last_seen_at < now() - interval '1 hour'",
                ([r.tenant_id for r in rows], [r.user_id for r in rows], [r.user_email for r in rows],
                 [r.user_name for r in rows], [r.user_role for r in rows]))
        for s in sorted(opened, key=lambda o: (o.tenant_id, o.session_key)):  # one lock order, as above
            # One open session per key, across replicas: adopt the one already open.
            cur = await conn.cursor(row_factory=scalar_row).execute(
                "INSERT INTO gateway.mcp_sessions AS m (session_id, tenant_id, user_id, user_email, user_name,"
                " client_type, client_version, protocol_version, transport, connected_at, last_activity,"
                " session_key, mcp_session_id, instance_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, session_key) WHERE status <> 'disconnected'"
                " DO UPDATE SET last_activity = greatest(m.last_activity, EXCLUDED.last_activity)"
                " RETURNING session_id",
                (s.session_id, s.tenant_id, s.user_id, s.user_email, s.user_name, s.client_type,
                 s.client_version, s.protocol_version, s.transport, s.at, s.at, s.session_key,
                 s.mcp_session_id, self.instance_id))
            returned: uuid.UUID | None = await cur.fetchone()
            canonical = s.session_id if returned is None else returned
            if canonical != s.session_id:
                self._canonical[s.session_id] = canonical
                if len(self._canonical) > 100_000:
                    self._canonical.pop(next(iter(self._canonical)))
                if self.on_session_canonical:
                    self.on_session_canonical(s.session_key, s.session_id, canonical)

    async def _insert_calls(self, conn: psycopg.AsyncConnection, calls: list[ToolCalled]) -> None:
        session_ids = [self._canonical.get(c.session_id, c.session_id) for c in calls]
        costs = [c.cost for c in calls]  # priced with the counts (`_count_tokens`)
        await conn.execute(
            "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, method, tool_name, status,"
            " error_message, duration_ms, prompt_tokens, completion_tokens, estimated_cost, price_version,"
            " client_type, \"timestamp\", credential_mode)"
            " SELECT * FROM unnest(%b::uuid[], %b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::text[], %b::text[], %b::float8[], %b::int[], %b::int[], %b::numeric[], %b::text[],"
            " %b::text[], %b::timestamptz[], %b::text[])"
            " ON CONFLICT (tenant_id, id) DO NOTHING",
            ([c.id for c in calls], session_ids, [c.tenant_id for c in calls], [c.user_id for c in calls],
             [c.method for c in calls], [c.tool_name for c in calls], [c.status for c in calls],
             [c.error_message for c in calls], [float(c.duration_ms) for c in calls],
             [c.prompt_tokens or 0 for c in calls], [c.completion_tokens or 0 for c in calls], costs,
             [self._price_version] * len(calls), [c.client_type for c in calls], [c.at for c in calls],
             [c.credential_mode for c in calls]))
        # last_activity: once per session per flush, not once per call.
        latest: dict[uuid.UUID, _LastCall] = {}
        for c, sid in zip(calls, session_ids, strict=True):
            if sid not in latest or latest[sid].at < c.at:
                latest[sid] = _LastCall(c.at, c.session_key)
        ids = sorted(latest)  # one lock order for every replica's batch: fewer deadlocks to retry
        cur = await conn.cursor(row_factory=scalar_row).execute(
            "UPDATE gateway.mcp_sessions s SET last_activity = v.at, status = 'active'"
            " FROM unnest(%b::uuid[], %b::timestamptz[]) AS v(id, at)"
            " WHERE s.session_id = v.id AND s.status <> 'disconnected'"
            " RETURNING s.session_id",
            (ids, [latest[i].at for i in ids]))
        alive = set(await cur.fetchall())
        # Sessions closed meanwhile (timeout sweep, another replica's shutdown):
        # the next call under that key opens a new one.
        for sid in ids:
            if sid not in alive and self.on_session_gone:
                self.on_session_gone(latest[sid].session_key, sid)

    async def _end_sessions(self, conn: psycopg.AsyncConnection, ended: list[SessionEnded]) -> None:
        for e in ended:
            await conn.execute(
                "UPDATE gateway.mcp_sessions SET status = 'disconnected', disconnected_at = %s,"
                " total_duration = greatest(extract(epoch FROM %s - connected_at), 0), disconnect_reason = %s"
                " WHERE session_id = %s AND status <> 'disconnected'",
                (e.at, e.at, e.reason, self._canonical.get(e.session_id, e.session_id)))

    # -- spill file ------------------------------------------------------------------------

    def _spill(self, record: Record) -> None:
        if self.spill_path is None:
            self._drop(1, "queue full and no spill directory")
            return
        try:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as handle:
                handle.write(json.dumps(_encode(record), default=str) + "\n")
            self._spilled_count += 1
            self.stats.spilled += 1
        except OSError as exc:
            self._drop(1, f"spill file not writable ({exc.strerror})")

    def _unspill(self) -> None:
        if self.spill_path is None or not self._spilled_count:
            return
        try:
            lines = self.spill_path.read_text().splitlines()
            self.spill_path.unlink()
        except OSError as exc:
            self._drop(self._spilled_count, f"spill file unreadable ({exc.strerror})")
            self._spilled_count = 0
            return
        self._spilled_count = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                self._queue.append(_decode(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                self._drop(1, "spilled record unreadable")

    def _drop(self, count: int, why: str) -> None:
        self.stats.dropped += count
        log.error("writer: dropped %d tracking records (%s); %d dropped in total", count, why, self.stats.dropped)


def _count_safely(text_of: Callable[[], str | None]) -> int:
    """Token count of text a client chose (it may hold lone surrogates): never raises."""
    try:
        text = text_of()
    except Exception:
        return 0
    try:
        return count_tokens(text)
    except Exception:
        try:
            return count_tokens(storable(text)) if text else 0
        except Exception:
            return (len(text) + 3) // 4 if text else 0


def _repairs(record: Record) -> list[list[Record]]:
    """What to try, in order, for a record the database refused: its text cleaned, then less of it."""
    if isinstance(record, SessionOpened):
        cleaned = dataclasses.replace(
            record, user_email=display_text(record.user_email, MAX_EMAIL),
            user_name=display_text(record.user_name, MAX_NAME),
            client_type=display_text(record.client_type, MAX_CLIENT_NAME),
            client_version=display_text(record.client_version, MAX_CLIENT_VERSION),
            protocol_version=_clean(record.protocol_version, 100), transport=_clean(record.transport, 100),
            mcp_session_id=_clean(record.mcp_session_id, 200))
        bare = dataclasses.replace(record, user_email=None, user_name=None, client_type=None, client_version=None,
                                   protocol_version=None, transport=None, mcp_session_id=None)
        return [[cleaned], [bare]]
    if isinstance(record, ToolCalled):
        duration = float(record.duration_ms)
        cleaned_call = dataclasses.replace(
            record, tool_name=_clean(record.tool_name, 500), error_message=_clean(record.error_message, 2000),
            client_type=display_text(record.client_type, MAX_CLIENT_NAME),
            method=_clean(record.method, 100) or "tools/call",
            duration_ms=duration if math.isfinite(duration) and duration >= 0 else 0.0,
            prompt_tokens=max(record.prompt_tokens or 0, 0), completion_tokens=max(record.completion_tokens or 0, 0),
            cost=None)  # priced again from what is stored
        # Its session row may be what is missing (refused itself): a minimal one keeps the call.
        # Role unknown (None): an existing user row keeps its role.
        session = SessionOpened(
            session_id=record.session_id, session_key=record.session_key, tenant_id=record.tenant_id,
            user_id=record.user_id, user_email=None, user_name=None, user_role=None,
            client_type=cleaned_call.client_type, client_version=None, protocol_version=None, transport=None,
            mcp_session_id=None, at=record.at)
        return [[cleaned_call], [session, cleaned_call]]
    reason = record.reason if _REASON.fullmatch(record.reason) else "error:unknown"
    return [[dataclasses.replace(record, reason=reason)]]


def _clean(value: str | None, limit: int) -> str | None:
    return storable(value[:limit]) if isinstance(value, str) else None


_KINDS: dict[str, type] = {"SessionOpened": SessionOpened, "ToolCalled": ToolCalled, "SessionEnded": SessionEnded}


def _encode(record: Record) -> dict[str, Any]:
    data = asdict(record)
    data["_kind"] = type(record).__name__
    return data


def _decode(data: dict[str, Any]) -> Record:
    kind = _KINDS[data.pop("_kind")]
    for key in ("id", "session_id"):
        if key in data and data[key] is not None:
            data[key] = uuid.UUID(data[key])
    for key in ("at",):
        data[key] = datetime.fromisoformat(data[key])
    if data.get("cost") is not None:
        data["cost"] = Decimal(data["cost"])
    return kind(**data)  # type: ignore[no-any-return]


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)

