"""The process's view of open analytics sessions stays bounded by what is in use."""

from __future__ import annotations

from auth import Principal
from gateway.store.db import Database
from gateway.tracking.middleware import ClientInfo
from gateway.tracking.sessions import AnalyticsSessions
from gateway.tracking.writer import TrackingWriter
from tests.pg import TestDatabase


def test_keys_idle_past_the_timeout_are_pruned(database: TestDatabase) -> None:
    now = [1000.0]
    writer = TrackingWriter(Database(database.urls), instance_id="r")  # nothing is flushed here
    sessions = AnalyticsSessions(writer, idle_timeout=300, clock=lambda: now[0])
    alice = Principal(user_id="alice", tenant_id="acme", token_kind="pat")
    for n in range(1000):  # a thousand protocol sessions that never said goodbye
        sessions.session_for(alice, ClientInfo("c", "1", "2025-06-18", "streamable-http", f"s{n}"))
    assert len(sessions) == 1000
    now[0] += 200
    kept, _ = sessions.session_for(alice, ClientInfo("c", "1", "2025-06-18", "streamable-http", "s999"))
    now[0] += 200  # s0..s998 idle 400 s > timeout; s999 used 200 s ago
    sessions.session_for(alice, ClientInfo("c", "1", "2025-06-18", "streamable-http", "new"))
    assert len(sessions) == 2
    assert sessions.session_for(alice, ClientInfo("c", "1", "2025-06-18", "streamable-http", "s999"))[0] == kept
