-- Privileges and row-level security of gateway.mcp_protocol_sessions (migrations/045). Re-applied on
-- every migrate (idempotent): policies named psess_* are dropped and re-created, grants re-granted.
-- (ENABLE/FORCE row level security comes from 020_rls.sql, which covers every table in the schema.)
--
-- Only the gateway's own system role reads and writes it (mcp_gateway_ingest, no caller identity:
-- the code looks bindings up by the authenticated principal's tenant and the session's hash).
-- Request roles and the SQL console get nothing: bindings are not reporting data.

DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT polname FROM pg_catalog.pg_policy
              WHERE polrelid = 'gateway.mcp_protocol_sessions'::regclass AND polname LIKE 'psess\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON gateway.mcp_protocol_sessions', p.polname);
    END LOOP;
END
$$;

REVOKE ALL ON gateway.mcp_protocol_sessions FROM PUBLIC, mcp_gateway_member, mcp_gateway_tenant_admin,
    mcp_gateway_auditor, mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app, mcp_gateway_console;
GRANT SELECT, INSERT ON gateway.mcp_protocol_sessions TO mcp_gateway_ingest;
GRANT UPDATE (ended_at, end_reason, last_used_at) ON gateway.mcp_protocol_sessions TO mcp_gateway_ingest;

-- The same restrictive tenant fence as every tenant table (request roles have no grant here at all).
CREATE POLICY psess_tenant_fence ON gateway.mcp_protocol_sessions AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY psess_ingest_select ON gateway.mcp_protocol_sessions FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY psess_ingest_insert ON gateway.mcp_protocol_sessions FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY psess_ingest_update ON gateway.mcp_protocol_sessions FOR UPDATE TO mcp_gateway_ingest
    USING (true) WITH CHECK (true);
