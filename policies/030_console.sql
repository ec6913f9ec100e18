-- Privileges and row-level security of the admin SQL console login, mcp_gateway_console.
-- Re-applied on every migrate (idempotent); the policies here are named console_* and
-- are dropped and re-created, grants are revoked and re-granted.
--
-- The console login is NOINHERIT and a member of no role. Its own privileges are:
--   USAGE on schema gateway; SELECT on the reporting tables and views (api_tokens
--   without token_hash); EXECUTE on the console scope helpers and the SECURITY INVOKER
--   reporting functions. Nothing else: no INSERT/UPDATE/DELETE, no schema
--   mcp_gateway_private (the HMAC key), no gateway.instances, and not the request-path
--   identity helpers (current_tenant_id() reads a setting the console could forge).
-- Rows: one permissive policy for a valid tenant scope, one for a valid all-tenants
-- scope (auditors). A missing, forged, expired or replayed scope matches nothing.

REVOKE ALL ON ALL TABLES IN SCHEMA gateway FROM mcp_gateway_console;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA gateway FROM mcp_gateway_console;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA gateway FROM mcp_gateway_console;
REVOKE ALL ON SCHEMA gateway FROM mcp_gateway_console;
REVOKE ALL ON SCHEMA mcp_gateway_private FROM PUBLIC, mcp_gateway_console;
REVOKE ALL ON ALL TABLES IN SCHEMA mcp_gateway_private FROM PUBLIC, mcp_gateway_console,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor, mcp_gateway_ingest, mcp_gateway_app;

GRANT USAGE ON SCHEMA gateway TO mcp_gateway_console;
GRANT SELECT ON gateway.tenants, gateway.users, gateway.mcp_sessions, gateway.mcp_requests,
                gateway.usage_daily, gateway.mcp_user_stats, gateway.mcp_session_stats
    TO mcp_gateway_console;
GRANT SELECT (token_id, tenant_id, user_id, name, prefix, role, scopes, created_at, expires_at,
              revoked_at, last_used_at)
    ON gateway.api_tokens TO mcp_gateway_console;
GRANT EXECUTE ON FUNCTION
    gateway.console_scope(), gateway.console_tenant(), gateway.console_all_tenants(),
    gateway.get_disconnected_sessions(integer, integer),
    gateway.get_disconnected_session_stats(integer),
    gateway.get_user_sessions(text, text),
    gateway.get_user_activity_summary(text, text),
    gateway.get_active_mcp_clients()
    TO mcp_gateway_console;

-- The gateway signs console scopes: it reads the key through its token/provisioning
-- role (Database.as_system("authn")). No request role and not the console can.
GRANT USAGE ON SCHEMA mcp_gateway_private TO mcp_gateway_authn;
GRANT SELECT ON mcp_gateway_private.console_keys TO mcp_gateway_authn;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT p.polname, p.polrelid::regclass AS rel
               FROM pg_catalog.pg_policy p
               JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
              WHERE c.relnamespace = 'gateway'::regnamespace AND p.polname LIKE 'console\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', t.polname, t.rel);
    END LOOP;
    FOR t IN SELECT unnest(ARRAY['tenants', 'users', 'api_tokens', 'mcp_sessions', 'mcp_requests',
                                 'usage_daily']) AS rel
    LOOP
        EXECUTE format('CREATE POLICY console_tenant_select ON gateway.%I FOR SELECT TO mcp_gateway_console'
                       ' USING (tenant_id = (SELECT gateway.console_tenant()))', t.rel);
        EXECUTE format('CREATE POLICY console_all_tenants_select ON gateway.%I FOR SELECT TO mcp_gateway_console'
                       ' USING ((SELECT gateway.console_all_tenants()))', t.rel);
    END LOOP;
END
$$;
