-- Analytics session keys: a hash, unique per tenant.
--
-- Until now `session_key` held `<tenant>/<user>|mcp|<Mcp-Session-Id>` (or `|client|<name>|<version>`)
-- in clear, under a unique index of its own. Two problems:
-- * Ambiguous: tenant `a/b` + user `c` and tenant `a` + user `b/c` made the same key, so two
--   principals shared an analytics session and one side's calls were lost (user ids hold `|` and
--   `/` by design: secondary issuers give `<iss>|<sub>`).
-- * Probeable: an index whose first column is the raw key lets a leakproof comparison touch other
--   tenants' entries (tenant names, user ids, live session ids) before row-level security filters.
-- The gateway now stores the hex SHA-256 of a JSON encoding of the key's parts
-- (gateway/tracking.py, session_key), and the uniqueness of open sessions is scoped by tenant.

DROP INDEX IF EXISTS gateway.mcp_sessions_open_key;

-- Rows written before: replace the clear key with a hash of it. Such a hash never equals a key the
-- gateway makes now (a different encoding): a session still open from before simply ends by the
-- idle-timeout sweep, and the next call opens a new one. The owner is subject to row-level security
-- (FORCE); lifted for this one statement inside the migration's transaction, and put back.
ALTER TABLE gateway.mcp_sessions NO FORCE ROW LEVEL SECURITY;
UPDATE gateway.mcp_sessions
   SET session_key = encode(sha256(convert_to(session_key, 'UTF8')), 'hex')
 WHERE session_key !~ '^[0-9a-f]{64}$';
ALTER TABLE gateway.mcp_sessions FORCE ROW LEVEL SECURITY;

-- At most one open analytics session per key and tenant, across every replica.
CREATE UNIQUE INDEX mcp_sessions_open_key ON gateway.mcp_sessions (tenant_id, session_key)
    WHERE status <> 'disconnected';

COMMENT ON COLUMN gateway.mcp_sessions.session_key IS
    'hex SHA-256 of the JSON-encoded key parts (tenant, user, kind, protocol session id or client name/version)';
