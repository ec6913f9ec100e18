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
then they are counted and logged. Shutdown drains the queue, then closes this
instance's open sessions as `server_shutdown`.

The same loop heartbeats this instance and closes sessions that outlived their
idle timeout (`timeout`) or whose process stopped heartbeating (`server_crash`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from gateway.db import Database
from gateway.pricing import Pricing, arguments_text, count_tokens
from gateway.records import Record, SessionEnded, SessionOpened, ToolCalled, WriterStats

log = logging.getLogger("mcp_gateway.writer")

MAX_BATCH = 5000
HEARTBEAT_SECONDS = 5.0
CRASH_AFTER_SECONDS = 30.0  # a replica silent this long is taken for dead


# Ends open sessions; the caller adds the WHERE clause. Parameter: the reason.
_CLOSE_SESSIONS = ("UPDATE gateway.mcp_sessions s SET status = 'disconnected', disconnected_at = now(),"
                   " total_duration = extract(epoch FROM now() - s.connected_at), disconnect_reason = %s")


def _is_refusal(exc: BaseException) -> bool:
    """The database answered and said no (as opposed to: the database is not there)."""
    return isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


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

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
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
            await self._close_instance_sessions("server_shutdown")
        except Exception as exc:  # database away at shutdown: the next start closes them as crashed
            log.error("writer: could not close sessions at shutdown: %s", _one_line(exc))
        if self.backlog:
            log.error("writer: %d records were not written before exit", self.backlog)

    async def recover_crashed(self) -> int:
        """At start: sessions this instance id left open were not shut down cleanly."""
        async with self.db.as_system("ingest") as conn:
            cur = await conn.execute(_CLOSE_SESSIONS + " WHERE s.instance_id = %s AND s.status <> 'disconnected'",
                                     ("server_crash", self.instance_id))
            await self._heartbeat(conn)
            return cur.rowcount

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
                    await self._flush_once()
                    if not self._stopping and len(self._queue) < self.flush_rows:
                        break
                if not self.stats.database_up:
                    log.warning("writer: database reachable again; backlog %d", self.backlog)
                self.stats.database_up = True
                self.stats.last_error = None
                backoff = 0.5
            except Exception as exc:
                if _is_refusal(exc):
                    # The database refused the batch (a constraint, bad data): not an outage.
                    # Write what it accepts one record at a time; drop and count only the rest.
                    try:
                        await self._isolate_refused(exc)
                        continue
                    except Exception as again:
                        exc = again
                # Connection lost, pool timeout, anything unforeseen: keep every record, retry.
                self._note_outage(exc)
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping and not self._queue and not self._spilled_count:
                return

    def _note_outage(self, exc: BaseException) -> None:
        if self.stats.database_up:
            log.error("writer: database unavailable (%s); keeping %d records until it returns",
                      _one_line(exc), self.backlog)
        self.stats.database_up = False
        self.stats.last_error = _one_line(exc)

    async def _maintenance(self) -> None:
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + min(HEARTBEAT_SECONDS, max(self.idle_timeout / 4, 0.25))
        async with self.db.as_system("ingest") as conn:
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
        async with self.db.as_system("ingest") as conn:
            await conn.execute(_CLOSE_SESSIONS + " WHERE s.instance_id = %s AND s.status <> 'disconnected'",
                               (reason, self.instance_id))

    # -- one batch -----------------------------------------------------------------------

    async def _flush_once(self) -> None:
        count = min(len(self._queue), MAX_BATCH)
        batch = [self._queue[i] for i in range(count)]
        self._count_all(batch)  # normally done already, while the previous batch was being written
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
        self.stats.flushes += 1
        self.stats.last_flush_size = count
        self.stats.flush_sizes.append(count)
        del self.stats.flush_sizes[:-100]

    async def _isolate_refused(self, cause: BaseException) -> None:
        count = min(len(self._queue), MAX_BATCH)
        log.error("writer: batch of %d refused (%s); writing its records one by one", count, _one_line(cause))
        for _ in range(count):
            record = self._queue[0]
            try:
                await self._write([record])
            except Exception as exc:
                if not _is_refusal(exc):
                    raise  # an outage after all: keep the rest queued
                self._drop(1, f"refused by the database: {_one_line(exc)}")
                self.stats.last_error = _one_line(exc)
            self._queue.popleft()

    async def _write(self, batch: list[Record]) -> None:
        opened = [r for r in batch if isinstance(r, SessionOpened)]
        calls = [r for r in batch if isinstance(r, ToolCalled)]
        ended = [r for r in batch if isinstance(r, SessionEnded)]
        for call in calls:
            self._count_tokens(call)
        async with self.db.as_system("ingest") as conn:
            if opened:
                await self._open_sessions(conn, opened)
            if calls:
                await self._insert_calls(conn, calls)
            if ended:
                await self._end_sessions(conn, ended)
        self.stats.written += len(calls)

    def _count_all(self, records: list[Record]) -> None:
        for record in records:
            if isinstance(record, ToolCalled) and (record.completion_tokens is None or record.prompt_tokens is None):
                self._count_tokens(record)

    def _count_tokens(self, call: ToolCalled) -> None:
        if call.completion_tokens is None:
            call.completion_tokens = count_tokens(arguments_text(call.arguments))
        if call.prompt_tokens is None:
            call.prompt_tokens = count_tokens(call.result_text)
        call.arguments = None
        call.result_text = None

    async def _open_sessions(self, conn: psycopg.AsyncConnection, opened: list[SessionOpened]) -> None:
        users: dict[tuple[str, str], SessionOpened] = {}
        for s in opened:
            users[(s.tenant_id, s.user_id)] = s
        tenants = sorted({t for t, _ in users})
        await conn.execute(
            "INSERT INTO gateway.tenants (tenant_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (tenants,))
        keys = sorted(users)
        rows = [users[k] for k in keys]
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
        for s in opened:
            # One open session per key, across replicas: adopt the one already open.
            cur = await conn.execute(
                "INSERT INTO gateway.mcp_sessions AS m (session_id, tenant_id, user_id, user_email, user_name,"
                " client_type, client_version, protocol_version, transport, connected_at, last_activity,"
                " session_key, mcp_session_id, instance_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (session_key) WHERE status <> 'disconnected'"
                " DO UPDATE SET last_activity = greatest(m.last_activity, EXCLUDED.last_activity)"
                " RETURNING session_id",
                (s.session_id, s.tenant_id, s.user_id, s.user_email, s.user_name, s.client_type,
                 s.client_version, s.protocol_version, s.transport, s.at, s.at, s.session_key,
                 s.mcp_session_id, self.instance_id))
            row = await cur.fetchone()
            canonical = row[0] if row else s.session_id
            if canonical != s.session_id:
                self._canonical[s.session_id] = canonical
                if len(self._canonical) > 100_000:
                    self._canonical.pop(next(iter(self._canonical)))
                if self.on_session_canonical:
                    self.on_session_canonical(s.session_key, s.session_id, canonical)

    async def _insert_calls(self, conn: psycopg.AsyncConnection, calls: list[ToolCalled]) -> None:
        session_ids = [self._canonical.get(c.session_id, c.session_id) for c in calls]
        costs = [self.pricing.cost_of(c) for c in calls]
        await conn.execute(
            "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, method, tool_name, status,"
            " error_message, duration_ms, prompt_tokens, completion_tokens, estimated_cost, price_version,"
            " client_type, \"timestamp\", credential_mode)"
            " SELECT * FROM unnest(%b::uuid[], %b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::text[], %b::text[], %b::float8[], %b::int[], %b::int[], %b::numeric[], %b::text[],"
            " %b::text[], %b::timestamptz[], %b::text[])"
            " ON CONFLICT (id) DO NOTHING",
            ([c.id for c in calls], session_ids, [c.tenant_id for c in calls], [c.user_id for c in calls],
             [c.method for c in calls], [c.tool_name for c in calls], [c.status for c in calls],
             [c.error_message for c in calls], [float(c.duration_ms) for c in calls],
             [c.prompt_tokens or 0 for c in calls], [c.completion_tokens or 0 for c in calls], costs,
             [self._price_version] * len(calls), [c.client_type for c in calls], [c.at for c in calls],
             [c.credential_mode for c in calls]))
        # last_activity: once per session per flush, not once per call.
        latest: dict[uuid.UUID, tuple[datetime, str]] = {}
        for c, sid in zip(calls, session_ids, strict=True):
            if sid not in latest or latest[sid][0] < c.at:
                latest[sid] = (c.at, c.session_key)
        ids = list(latest)
        cur = await conn.execute(
            "UPDATE gateway.mcp_sessions s SET last_activity = v.at, status = 'active'"
            " FROM unnest(%b::uuid[], %b::timestamptz[]) AS v(id, at)"
            " WHERE s.session_id = v.id AND s.status <> 'disconnected'"
            " RETURNING s.session_id",
            (ids, [latest[i][0] for i in ids]))
        alive = {row[0] for row in await cur.fetchall()}
        # Sessions closed meanwhile (timeout sweep, another replica's shutdown):
        # the next call under that key opens a new one.
        for sid in ids:
            if sid not in alive and self.on_session_gone:
                self.on_session_gone(latest[sid][1], sid)

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
        self._queue.extend(_decode(json.loads(line)) for line in lines if line.strip())

    def _drop(self, count: int, why: str) -> None:
        self.stats.dropped += count
        log.error("writer: dropped %d tracking records (%s); %d dropped in total", count, why, self.stats.dropped)


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
    return kind(**data)  # type: ignore[no-any-return]


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__

