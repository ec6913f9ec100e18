-- Privileges on schema gateway. Re-applied on every migrate (idempotent): first
-- everything this file manages is revoked, then granted again, so a privilege
-- removed from this file is removed from the database too. Table-level REVOKE also
-- removes column-level grants.
--
-- Who may do what (rows are narrowed further by policies/020_rls.sql):
--   request roles (member, tenant_admin, auditor): SELECT only, never token_hash;
--       no INSERT/UPDATE/DELETE/TRUNCATE anywhere — nobody writes through the read path
--   mcp_gateway_ingest: the tracking writer (requests, sessions, rollup, provisioning)
--   mcp_gateway_authn:  token verification, tenant/user provisioning, token CLI
--   nobody but the owner: DELETE, TRUNCATE, REFERENCES, TRIGGER
--   mcp_gateway_app / mcp_gateway_console (logins): nothing directly; the app reaches
--       the roles above by SET LOCAL ROLE. The console's grants live in their own
--       policies file (applied after this one) and are not touched here.
-- Columns that tie a row to a tenant or user (tenant_id, user_id, session_key,
-- token_hash) are not in any UPDATE grant: an update cannot move a row.

REVOKE ALL ON SCHEMA gateway FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA gateway FROM PUBLIC,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA gateway FROM PUBLIC,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA gateway FROM PUBLIC,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app;
REVOKE ALL ON SCHEMA gateway FROM
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app;
-- Functions created later by the owner are not executable by PUBLIC by default.
ALTER DEFAULT PRIVILEGES FOR ROLE mcp_gateway_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

GRANT USAGE ON SCHEMA gateway TO
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn;

-- Request roles: read-only.
GRANT SELECT ON gateway.tenants, gateway.users, gateway.mcp_sessions, gateway.mcp_requests,
                gateway.usage_daily
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;
GRANT SELECT (token_id, tenant_id, user_id, name, prefix, role, scopes, created_at, expires_at,
              revoked_at, last_used_at)
    ON gateway.api_tokens
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;
GRANT SELECT ON gateway.mcp_user_stats, gateway.mcp_session_stats
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;
GRANT EXECUTE ON FUNCTION
    gateway.current_tenant_id(), gateway.current_user_id(), gateway.identity_is_set(),
    gateway.get_disconnected_sessions(integer, integer),
    gateway.get_disconnected_session_stats(integer),
    gateway.get_user_sessions(text, text),
    gateway.get_user_activity_summary(text, text),
    gateway.get_active_mcp_clients()
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;

-- Ingest: the tracking writer. Requests are append-only (INSERT ... ON CONFLICT
-- (tenant_id, id) DO NOTHING); the rollup trigger runs as ingest and upserts usage_daily.
-- SELECT (tenant_id, id) only because `ON CONFLICT` needs it on its arbiter columns (and
-- then the SELECT policy is checked against the new row, see 020_rls.sql).
GRANT INSERT, SELECT (tenant_id, id) ON gateway.mcp_requests TO mcp_gateway_ingest;
GRANT SELECT, INSERT ON gateway.mcp_sessions TO mcp_gateway_ingest;
GRANT UPDATE (status, last_activity, disconnected_at, total_duration, disconnect_reason,
              user_email, user_name, client_type, client_version, protocol_version, transport,
              instance_id)
    ON gateway.mcp_sessions TO mcp_gateway_ingest;
GRANT SELECT, INSERT ON gateway.usage_daily TO mcp_gateway_ingest;
GRANT UPDATE (calls, errors, denied, prompt_tokens, completion_tokens, cost, duration_ms)
    ON gateway.usage_daily TO mcp_gateway_ingest;
GRANT SELECT, INSERT ON gateway.tenants TO mcp_gateway_ingest;
GRANT SELECT, INSERT ON gateway.users TO mcp_gateway_ingest;
GRANT UPDATE (email, name, role, last_seen_at, issuer, subject) ON gateway.users TO mcp_gateway_ingest;
GRANT SELECT, INSERT, UPDATE ON gateway.instances TO mcp_gateway_ingest;

-- Authn: verification (reads token_hash), provisioning, token create/revoke/mark used.
GRANT SELECT, INSERT ON gateway.tenants TO mcp_gateway_authn;
GRANT SELECT, INSERT ON gateway.users TO mcp_gateway_authn;
GRANT UPDATE (email, name, role, last_seen_at, issuer, subject) ON gateway.users TO mcp_gateway_authn;
GRANT SELECT, INSERT ON gateway.api_tokens TO mcp_gateway_authn;
GRANT UPDATE (revoked_at, last_used_at, name) ON gateway.api_tokens TO mcp_gateway_authn;
