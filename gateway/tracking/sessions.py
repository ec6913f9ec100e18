"""This process's view of open analytics sessions: which key maps to which session row, and when a key has
been idle long enough to start a new one. The keys are made by `ClientInfo.key_for`
(gateway.tracking.middleware); the database is the truth, this is a cache that opens and ends sessions
through the writer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auth import Principal
from gateway.tracking.records import SessionEnded, SessionOpened
from gateway.tracking.writer import TrackingWriter, utcnow

if TYPE_CHECKING:
    from gateway.tracking.middleware import ClientInfo


@dataclass(slots=True)
class _OpenSession:
    session_id: uuid.UUID
    last_seen: float


class AnalyticsSessions:
    """This process's view of open analytics sessions, by key. The database is the truth."""

    PRUNE_EVERY = 60.0  # seconds between sweeps of keys idle past the timeout

    def __init__(self, writer: TrackingWriter, idle_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._open: dict[str, _OpenSession] = {}
        self._next_prune = clock() + self.PRUNE_EVERY

    def session_for(self, principal: Principal, client: ClientInfo) -> tuple[uuid.UUID, str]:
        key = client.key_for(principal)
        now = self._clock()
        if now >= self._next_prune:
            self._prune(now)
        current = self._open.get(key)
        if current is not None and now - current.last_seen < self.idle_timeout:
            current.last_seen = now
            return current.session_id, key
        if current is not None:  # idle past the timeout: the sweep ends it as `timeout`
            del self._open[key]
        session_id = uuid.uuid4()
        self._open[key] = _OpenSession(session_id, now)
        self.writer.submit(SessionOpened(
            session_id=session_id, session_key=key, tenant_id=principal.tenant_id, user_id=principal.user_id,
            user_email=principal.email, user_name=principal.name, user_role=principal.role,
            client_type=client.name, client_version=client.version, protocol_version=client.protocol_version,
            transport=client.transport, mcp_session_id=client.protocol_session_id, at=utcnow()))
        return session_id, key

    def end(self, key: str, reason: str) -> bool:
        """The protocol session under `key` ended. False if it never made a tracked call."""
        current = self._open.pop(key, None)
        if current is None:
            return False
        self.writer.submit(SessionEnded(session_id=current.session_id, session_key=key, reason=reason, at=utcnow()))
        return True

    def _prune(self, now: float) -> None:
        """Drop keys idle past the timeout: a protocol session that ended without a DELETE (SDK idle
        timeout, a client that vanished) is never looked up again, and the sweep has closed it."""
        self._next_prune = now + self.PRUNE_EVERY
        stale = [key for key, s in self._open.items() if now - s.last_seen >= self.idle_timeout]
        for key in stale:
            del self._open[key]

    def forget(self, key: str, session_id: uuid.UUID) -> None:
        current = self._open.get(key)
        if current is not None and current.session_id == session_id:
            del self._open[key]

    def adopt(self, key: str, local_id: uuid.UUID, canonical_id: uuid.UUID) -> None:
        current = self._open.get(key)
        if current is not None and current.session_id == local_id:
            current.session_id = canonical_id

    def __len__(self) -> int:
        return len(self._open)
