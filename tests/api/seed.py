"""Hand-made data for the API, report and console tests (written as the superuser).

Two tenants with an overlapping user id (alice) so a policy that forgets the tenant
fence leaks. Tenant B's data carries the marker "zz-secret" (a user id, tool names,
client names, error messages): any B row reaching an A caller shows up as that marker.
B's tenant id itself ("globex") is what catalog snooping would look for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

A = "acme"
B = "globex"
MARKER = "zz-secret"
_NS = uuid.UUID("5b1f1e4c-3c1d-4d8e-9a77-1f2e3d4c5b6a")

USERS = [  # tenant, user, role
    (A, "alice", "member"), (A, "bob", "member"), (A, "carol", "admin"), (A, "audrey", "auditor"),
    (B, "alice", "member"), (B, "zz-secret-zed", "admin"),
]


@dataclass(frozen=True)
class S:
    name: str
    tenant: str
    user: str
    status: str
    connected_ago: timedelta
    disconnected_ago: timedelta | None = None
    reason: str | None = None
    duration: float | None = None

    @property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(_NS, self.name)


SESSIONS = [
    S("a-alice-active", A, "alice", "active", timedelta(hours=1)),
    S("a-alice-2d", A, "alice", "disconnected", timedelta(days=2, hours=1), timedelta(days=2), "client_disconnect",
      100.0),
    S("a-alice-10d", A, "alice", "disconnected", timedelta(days=10, hours=1), timedelta(days=10), "timeout", 1000.0),
    S("a-bob-1d", A, "bob", "disconnected", timedelta(days=1, hours=1), timedelta(days=1), "timeout", 300.0),
    S("a-bob-idle", A, "bob", "idle", timedelta(hours=3)),
    S("b-alice-3d", B, "alice", "disconnected", timedelta(days=3, hours=1), timedelta(days=3), "error:ValueError",
      50.0),
    S("b-alice-active", B, "alice", "active", timedelta(minutes=30)),
    S("b-zed-40d", B, "zz-secret-zed", "disconnected", timedelta(days=40, hours=1), timedelta(days=40),
      "server_crash", 7.0),
]

# (session name, tool, status, ago, prompt, completion, cost)
REQUESTS = [
    ("a-alice-active", "echo", "success", timedelta(minutes=1), 10, 5, Decimal("0.0125")),
    ("a-alice-active", "add", "error", timedelta(minutes=2), 3, 0, Decimal("0.001")),
    ("a-alice-2d", "echo", "success", timedelta(days=2, minutes=30), 100, 50, Decimal("0.5")),
    ("a-alice-10d", "search", "denied", timedelta(days=10, minutes=30), 0, 0, Decimal("0")),
    ("a-bob-1d", "echo", "success", timedelta(days=1, minutes=20), 7, 7, Decimal("0.07")),
    ("a-bob-idle", None, "success", timedelta(hours=2), 1, 1, Decimal("0.00000001")),
    ("b-alice-3d", "zz-secret-tool", "success", timedelta(days=3, minutes=30), 999, 999, Decimal("9.99")),
    ("b-alice-active", "zz-secret-tool", "error", timedelta(minutes=5), 5, 5, Decimal("1.5")),
    ("b-zed-40d", "zz-secret-tool", "success", timedelta(days=40, minutes=30), 1, 1, Decimal("0.1")),
]


def rid(i: int) -> uuid.UUID:
    return uuid.uuid5(_NS, f"request/{i}")


def seed(conn: psycopg.Connection, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    with conn.transaction():
        for tenant in (A, B):
            conn.execute("INSERT INTO gateway.tenants (tenant_id, name) VALUES (%s, %s)", (tenant, tenant.title()))
        for tenant, user, role in USERS:
            conn.execute("INSERT INTO gateway.users (tenant_id, user_id, email, name, role)"
                         " VALUES (%s, %s, %s, %s, %s)",
                         (tenant, user, f"{user}@{tenant}.example", user.title(), role))
        for s in SESSIONS:
            client = f"{MARKER}-client" if s.tenant == B else "claude-code"
            conn.execute(
                "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, user_email, user_name, client_type,"
                " client_version, protocol_version, transport, status, connected_at, last_activity, disconnected_at,"
                " total_duration, disconnect_reason, session_key)"
                " VALUES (%s, %s, %s, %s, %s, %s, '1.0', '2025-11-25', 'streamable-http', %s, %s, %s, %s, %s, %s, %s)",
                (s.id, s.tenant, s.user, f"{s.user}@{s.tenant}.example", s.user.title(), client, s.status,
                 now - s.connected_ago, now - (s.disconnected_ago or timedelta(0)),
                 None if s.disconnected_ago is None else now - s.disconnected_ago, s.duration, s.reason,
                 f"key/{s.name}"))
        by_name = {s.name: s for s in SESSIONS}
        for i, (name, tool, status, ago, prompt, completion, cost) in enumerate(REQUESTS):
            s = by_name[name]
            conn.execute(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status,"
                " error_message, duration_ms, prompt_tokens, completion_tokens, estimated_cost, client_type,"
                " \"timestamp\") VALUES (%s, %s, %s, %s, %s, %s, %s, 12.5, %s, %s, %s, %s, %s)",
                (rid(i), s.id, s.tenant, s.user, tool, status,
                 (f"{MARKER} boom" if s.tenant == B else "boom") if status == "error" else None, prompt, completion,
                 cost, "claude-code" if s.tenant == A else f"{MARKER}-client", now - ago))
    return now


def visible_sessions(role: str, tenant: str, user: str) -> set[str]:
    """Names of the sessions a principal may see."""
    if role == "auditor":
        return {s.name for s in SESSIONS}
    if role == "admin":
        return {s.name for s in SESSIONS if s.tenant == tenant}
    return {s.name for s in SESSIONS if s.tenant == tenant and s.user == user}


def session_name(session_id: str) -> str:
    return {str(s.id): s.name for s in SESSIONS}[session_id]
