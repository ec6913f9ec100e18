-- Every index and unique constraint on a tenant table leads with tenant_id.
--
-- PostgreSQL may evaluate leakproof comparisons (text and uuid =, <, >) of a query
-- before its row-level security policy, and an index scan touches every entry in the
-- scanned key range, whoever's row it is. With an index whose first column is not
-- tenant_id, a console user could range-scan another tenant's keys and read the
-- effect off a counter (statistics functions, sizes, timing): one bit per query.
-- With tenant_id first, the console policy's `tenant_id = (SELECT console_tenant())`
-- becomes the index's leading condition and the scan stays inside the caller's tenant.
-- (012_console_side_channels.sql also revokes the counters themselves where it can.)
--
-- Kept as they are, for reasons the catalog lint (tests/db/lint.py) records:
--   api_tokens (token_hash)           no console privilege on token_hash: no predicate can probe it;
--                                     authentication looks a token up before any tenant is known
--   mcp_sessions_open_key             the analytics session key index, replaced by its own migration

-- mcp_requests: (tenant_id, id) is the key; the writer's idempotent insert says
-- ON CONFLICT (tenant_id, id).
ALTER TABLE gateway.mcp_requests DROP CONSTRAINT mcp_requests_session_owner;
ALTER TABLE gateway.mcp_requests DROP CONSTRAINT mcp_requests_pkey;
ALTER TABLE gateway.mcp_requests ADD CONSTRAINT mcp_requests_pkey PRIMARY KEY (tenant_id, id);
DROP INDEX gateway.mcp_requests_session;
CREATE INDEX mcp_requests_tenant_session ON gateway.mcp_requests (tenant_id, session_id, "timestamp");

-- mcp_sessions
ALTER TABLE gateway.mcp_sessions DROP CONSTRAINT mcp_sessions_session_tenant_user;
ALTER TABLE gateway.mcp_sessions DROP CONSTRAINT mcp_sessions_pkey;
ALTER TABLE gateway.mcp_sessions ADD CONSTRAINT mcp_sessions_pkey PRIMARY KEY (tenant_id, session_id);
ALTER TABLE gateway.mcp_sessions
    ADD CONSTRAINT mcp_sessions_tenant_session_user UNIQUE (tenant_id, session_id, user_id);
ALTER TABLE gateway.mcp_requests
    ADD CONSTRAINT mcp_requests_session_owner FOREIGN KEY (tenant_id, session_id, user_id)
        REFERENCES gateway.mcp_sessions (tenant_id, session_id, user_id);
-- Open sessions only (small): serves the writer's updates by session id and the
-- crash/shutdown sweep by instance id as a scan of this index alone.
DROP INDEX gateway.mcp_sessions_open_instance;
CREATE INDEX mcp_sessions_open ON gateway.mcp_sessions (tenant_id, session_id, instance_id)
    WHERE status <> 'disconnected';

-- api_tokens
ALTER TABLE gateway.api_tokens DROP CONSTRAINT api_tokens_pkey;
ALTER TABLE gateway.api_tokens ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (tenant_id, token_id);
