"""A small, deterministic data set for the row-level security tests.

Two tenants with the SAME user ids (alice, bob, carol, audrey) so that a policy
comparing only user_id (and forgetting the tenant fence) leaks across tenants.
The module describes every row in Python (tenant, user, key) so tests can compute
the exact set a principal must see, and `seed(conn)` writes it as the superuser.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

TENANTS = ("acme", "globex")
USERS = {"alice": "member", "bob": "member", "carol": "admin", "audrey": "auditor"}
INSTANCES = ("inst-1", "inst-2")
_NS = uuid.UUID("7d1b7f0e-6c65-4f3a-9a5f-2d0e3c1a5b00")


def sid(tenant: str, user: str, name: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"session/{tenant}/{user}/{name}")


def rid(session: uuid.UUID, n: int) -> uuid.UUID:
    return uuid.uuid5(_NS, f"request/{session}/{n}")


def tid(tenant: str, user: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"token/{tenant}/{user}")


@dataclass(frozen=True)
class Session:
    id: uuid.UUID
    tenant: str
    user: str
    status: str
    connected_ago: timedelta
    disconnected_ago: timedelta | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Request:
    id: uuid.UUID
    session: uuid.UUID
    tenant: str
    user: str
    tool: str | None
    status: str
    ago: timedelta
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    duration_ms: float
    client_type: str | None


@dataclass
class Seed:
    now: datetime
    sessions: list[Session] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def usage_keys(self) -> set[tuple[str, str, object, str, str]]:
        return {(r.tenant, r.user, (self.now - r.ago).astimezone(UTC).date(), r.tool or "", r.client_type or "")
                for r in self.requests}


def build(now: datetime | None = None) -> Seed:
    now = now or datetime.now(UTC)
    data = Seed(now=now)
    h = timedelta(hours=1)
    d = timedelta(days=1)
    for tenant in TENANTS:
        plan = [
            ("alice", "s1", "active", 2 * h, None, None),
            ("alice", "s2", "disconnected", 1 * d + 2 * h, 1 * d, "client_disconnect"),
            ("alice", "s3", "disconnected", 20 * d + 1 * h, 20 * d, "timeout"),
            ("bob", "s1", "idle", 5 * h, None, None),
            ("bob", "s2", "disconnected", 3 * d + 1 * h, 3 * d, "error:ValueError"),
            ("carol", "s1", "active", 1 * h, None, None),
            ("audrey", "s1", "active", 30 * timedelta(minutes=1), None, None),
        ]
        for user, name, status, connected_ago, disconnected_ago, reason in plan:
            data.sessions.append(Session(sid(tenant, user, name), tenant, user, status, connected_ago,
                                         disconnected_ago, reason))
    tools = ("search", "fetch", None)
    statuses = ("success", "success", "error", "denied")
    for s in data.sessions:
        count = 1 + (s.id.int % 4)  # 1..4 requests per session, deterministic
        for n in range(count):
            data.requests.append(Request(
                id=rid(s.id, n), session=s.id, tenant=s.tenant, user=s.user,
                tool=tools[(n + s.id.int) % 3], status=statuses[(n + s.id.int // 7) % 4],
                ago=s.connected_ago - timedelta(minutes=5 * (n + 1)),
                prompt_tokens=10 * (n + 1), completion_tokens=3 * n, cost=Decimal("0.00125") * (n + 1),
                duration_ms=12.5 * (n + 1), client_type=None if n == 2 else "claude-code"))
    return data


def protocol_session_hash(tenant: str, user: str) -> bytes:
    """The session binding (gateway.mcp_protocol_sessions) of one user's protocol session."""
    return _sha(f"protocol-session/{tenant}/{user}")


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def seed(conn: psycopg.Connection, data: Seed) -> None:
    """Write `data` as the (superuser) admin connection; the rollup trigger fills usage_daily."""
    with conn.transaction():
        for tenant in TENANTS:
            conn.execute("INSERT INTO gateway.tenants (tenant_id, name) VALUES (%s, %s)", (tenant, tenant.title()))
            for user, role in USERS.items():
                conn.execute(
                    "INSERT INTO gateway.users (tenant_id, user_id, email, name, role) VALUES (%s, %s, %s, %s, %s)",
                    (tenant, user, f"{user}@{tenant}.example", user.title(), role))
                conn.execute(
                    "INSERT INTO gateway.api_tokens (token_id, tenant_id, user_id, name, prefix, token_hash, role)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (tid(tenant, user), tenant, user, f"{user} laptop", f"mgw_{user[:3]}",
                     _sha(f"{tenant}/{user}"), role))
                conn.execute(
                    "INSERT INTO gateway.upstream_credentials (tenant_id, user_id, upstream, mode, secret, linked_at)"
                    " VALUES (%s, %s, 'github', 'per_user_token', %s, now())",
                    (tenant, user, b"ciphertext-of-" + f"{tenant}/{user}".encode()))
                conn.execute(
                    "INSERT INTO gateway.upstream_link_states (tenant_id, user_id, state_hash, upstream, verifier,"
                    " expires_at) VALUES (%s, %s, %s, 'github', 'v', now() + interval '10 minutes')",
                    (tenant, user, _sha(f"state/{tenant}/{user}")))
                conn.execute(
                    "INSERT INTO gateway.mcp_protocol_sessions (tenant_id, session_hash, user_id, owner_hash,"
                    " protocol_version, init_params, instance_id)"
                    " VALUES (%s, %s, %s, %s, '2025-11-25', '{}', 'inst-1')",
                    (tenant, protocol_session_hash(tenant, user), user, _sha(f"owner/{tenant}/{user}")))
        for s in data.sessions:
            disconnected_at = data.now - s.disconnected_ago if s.disconnected_ago else None
            conn.execute(
                "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, user_email, user_name,"
                " client_type, client_version, protocol_version, transport, status, connected_at, last_activity,"
                " disconnected_at, total_duration, disconnect_reason, session_key, instance_id)"
                " VALUES (%s, %s, %s, %s, %s, 'claude-code', '1.2.3', '2025-11-25', 'http', %s, %s, %s, %s, %s,"
                " %s, %s, 'inst-1')",
                (s.id, s.tenant, s.user, f"{s.user}@{s.tenant}.example", s.user.title(), s.status,
                 data.now - s.connected_ago, disconnected_at or data.now - timedelta(minutes=1),
                 disconnected_at,
                 (s.connected_ago - s.disconnected_ago).total_seconds() if s.disconnected_ago else None,
                 s.reason, f"key/{s.id}"))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status,"
                " duration_ms, prompt_tokens, completion_tokens, estimated_cost, client_type, \"timestamp\")"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(r.id, r.session, r.tenant, r.user, r.tool, r.status, r.duration_ms, r.prompt_tokens,
                  r.completion_tokens, r.cost, r.client_type, data.now - r.ago) for r in data.requests])
        for instance in INSTANCES:
            conn.execute("INSERT INTO gateway.instances (instance_id) VALUES (%s)", (instance,))
        seed_oauth(conn)


# ---------------------------------------------------------------------------- OAuth authorization server

ORPHAN_CLIENT = "https://orphan.example/client.json"  # a client nobody has granted anything


def client_of(tenant: str, user: str) -> str:
    return f"client-{tenant}-{user}"


def grant_id(tenant: str, user: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"grant/{tenant}/{user}")


def family_id(tenant: str, user: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"family/{tenant}/{user}")


def secret_digest(kind: str, tenant: str | None, user: str | None) -> bytes:
    return _sha(f"{kind}/{tenant}/{user}")


def seed_oauth(conn: psycopg.Connection) -> None:
    """One client, grant, family, code, refresh token and pending request per user; one client
    without grants; one live and one expired assertion JWT ID; one signing key."""
    conn.execute("INSERT INTO gateway.oauth_clients (client_id, kind, client_name, redirect_uris)"
                  " VALUES (%s, 'cimd', 'Orphan', '{https://orphan.example/cb}')", (ORPHAN_CLIENT,))
    for tenant in TENANTS:
        for user in USERS:
            client = client_of(tenant, user)
            conn.execute("INSERT INTO gateway.oauth_clients (client_id, kind, client_name, redirect_uris, secret_hash)"
                         " VALUES (%s, 'dcr', %s, '{http://127.0.0.1/cb}', %s)",
                         (client, f"{user}'s app", secret_digest("client", tenant, user)))
            conn.execute("INSERT INTO gateway.oauth_grants (grant_id, tenant_id, user_id, client_id, scope, remember)"
                         " VALUES (%s, %s, %s, %s, 'mcp', true)", (grant_id(tenant, user), tenant, user, client))
            conn.execute("INSERT INTO gateway.oauth_token_families (family_id, tenant_id, user_id, client_id,"
                         " grant_id, resource) VALUES (%s, %s, %s, %s, %s, 'http://gw/mcp')",
                         (family_id(tenant, user), tenant, user, client, grant_id(tenant, user)))
            conn.execute("INSERT INTO gateway.oauth_codes (code_hash, tenant_id, user_id, client_id, grant_id,"
                         " redirect_uri, resource, code_challenge, expires_at)"
                         " VALUES (%s, %s, %s, %s, %s, 'http://127.0.0.1/cb', 'http://gw/mcp', 'x',"
                         "         now() + interval '1 minute')",
                         (secret_digest("code", tenant, user), tenant, user, client, grant_id(tenant, user)))
            conn.execute("INSERT INTO gateway.oauth_refresh_tokens (token_hash, family_id, tenant_id, user_id,"
                         " expires_at)"
                         " VALUES (%s, %s, %s, %s, now() + interval '1 day')",
                         (secret_digest("refresh", tenant, user), family_id(tenant, user), tenant, user))
            conn.execute("INSERT INTO gateway.oauth_pending (request_hash, params, csrf_hash, principal,"
                         " expires_at) VALUES (%s, '{}', %s, %s, now() + interval '10 minutes')",
                         (secret_digest("pending", tenant, user), secret_digest("csrf", tenant, user),
                          Jsonb({"tenant_id": tenant, "user_id": user})))
    conn.execute("INSERT INTO gateway.oauth_pending (request_hash, params, csrf_hash, expires_at)"
                 " VALUES (%s, '{}', %s, now() - interval '1 minute')",
                 (secret_digest("pending", None, None), secret_digest("csrf", None, None)))
    conn.execute("INSERT INTO gateway.oauth_assertion_jtis (client_id, jti, expires_at)"
                 " VALUES (%s, 'live', now() + interval '1 hour'), (%s, 'expired', now() - interval '1 hour')",
                 (ORPHAN_CLIENT, ORPHAN_CLIENT))
    conn.execute("INSERT INTO gateway.oauth_signing_keys (kid, private_pem, public_jwk, rotate_at, retire_at)"
                 " VALUES ('k1', 'not a key', '{}', now() + interval '1 day', now() + interval '2 days')")
