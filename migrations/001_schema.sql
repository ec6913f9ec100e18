-- The data. Every tenant table carries tenant_id and user_id on each row so a
-- policy is a column comparison, never a join; indexes lead with those columns.
-- Money is numeric; durations are float seconds/milliseconds.

CREATE TABLE gateway.tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id <> '' AND length(tenant_id) <= 200),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway.users (
    tenant_id     text NOT NULL REFERENCES gateway.tenants (tenant_id),
    user_id       text NOT NULL CHECK (user_id <> '' AND length(user_id) <= 500),
    email         text,
    name          text,
    role          text NOT NULL DEFAULT 'member',
    issuer        text,
    subject       text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

-- Personal access tokens: only a SHA-256 of the secret is stored.
CREATE TABLE gateway.api_tokens (
    token_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    user_id      text NOT NULL,
    name         text,
    prefix       text NOT NULL,                 -- first characters, for humans and scanners
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    role         text NOT NULL DEFAULT 'member',
    scopes       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
CREATE INDEX api_tokens_tenant_user ON gateway.api_tokens (tenant_id, user_id);

-- Analytics sessions: created lazily at the first tracked call.
CREATE TABLE gateway.mcp_sessions (
    session_id        uuid PRIMARY KEY,
    tenant_id         text NOT NULL,
    user_id           text NOT NULL,
    user_email        text,
    user_name         text,
    client_type       text,
    client_version    text,
    protocol_version  text,
    transport         text,
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'idle', 'disconnected')),
    connected_at      timestamptz NOT NULL DEFAULT now(),
    last_activity     timestamptz NOT NULL DEFAULT now(),
    disconnected_at   timestamptz,
    total_duration    double precision,         -- seconds
    disconnect_reason text CHECK (disconnect_reason IS NULL OR disconnect_reason IN
                      ('client_disconnect', 'timeout', 'server_shutdown', 'server_crash')
                      OR disconnect_reason ~ '^error:[A-Za-z0-9_.]{1,100}$'),
    -- what the gateway keys the analytics session on (principal + protocol session,
    -- or principal + client name/version for sessionless traffic)
    session_key       text NOT NULL,
    mcp_session_id    text,                     -- the protocol Mcp-Session-Id, when there is one
    instance_id       text,                     -- gateway process that opened it
    CHECK ((status = 'disconnected') = (disconnected_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
-- At most one open analytics session per key, across every replica.
CREATE UNIQUE INDEX mcp_sessions_open_key ON gateway.mcp_sessions (session_key)
    WHERE status <> 'disconnected';
CREATE INDEX mcp_sessions_tenant_user ON gateway.mcp_sessions (tenant_id, user_id, connected_at DESC);
CREATE INDEX mcp_sessions_tenant_disconnected ON gateway.mcp_sessions (tenant_id, disconnected_at DESC)
    WHERE status = 'disconnected';
CREATE INDEX mcp_sessions_open_instance ON gateway.mcp_sessions (instance_id)
    WHERE status <> 'disconnected';

CREATE TABLE gateway.mcp_requests (
    id                uuid PRIMARY KEY,         -- made by the gateway: retries are idempotent
    session_id        uuid NOT NULL REFERENCES gateway.mcp_sessions (session_id),
    tenant_id         text NOT NULL,
    user_id           text NOT NULL,
    method            text NOT NULL DEFAULT 'tools/call',
    tool_name         text,
    status            text NOT NULL CHECK (status IN ('success', 'error', 'denied')),
    error_message     text CHECK (length(error_message) <= 2000),
    duration_ms       double precision NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    estimated_cost    numeric(18, 8) NOT NULL DEFAULT 0 CHECK (estimated_cost >= 0),
    price_version     text,                     -- pricing in force when the row was written
    client_type       text,
    "timestamp"       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_requests_tenant_user_time ON gateway.mcp_requests (tenant_id, user_id, "timestamp");
CREATE INDEX mcp_requests_tenant_time ON gateway.mcp_requests (tenant_id, "timestamp");
CREATE INDEX mcp_requests_session ON gateway.mcp_requests (session_id, "timestamp");

-- Daily usage rollup per (tenant, user, UTC day, tool, client). Reports read this.
CREATE TABLE gateway.usage_daily (
    tenant_id         text NOT NULL,
    user_id           text NOT NULL,
    day               date NOT NULL,
    tool_name         text NOT NULL DEFAULT '',
    client_type       text NOT NULL DEFAULT '',
    calls             bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,
    denied            bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric(20, 8) NOT NULL DEFAULT 0,
    duration_ms       double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, day, tool_name, client_type)
);
CREATE INDEX usage_daily_tenant_day ON gateway.usage_daily (tenant_id, day);

-- Gateway processes, for crash detection: a process that stops heartbeating
-- leaves its open sessions to be closed as server_crash.
CREATE TABLE gateway.instances (
    instance_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
