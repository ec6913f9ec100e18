-- Row-level security for schema gateway. Re-applied on every migrate (idempotent).
--
-- * Every table: ENABLE and FORCE row level security (the owner is subject to it
--   too, so an owner-owned view or function cannot leak). Without a policy for a
--   role, that role sees and writes nothing.
-- * Policies this file owns are named rls_*; they are all dropped and re-created
--   here, so a policy removed from this file disappears from the database.
--   Other policy files must use other names and file numbers > 020.
-- * One permissive policy per role and command (never `OR is_admin()`: that defeats
--   indexes), plus a RESTRICTIVE tenant fence for member and tenant_admin.
-- * Identity is read through (SELECT gateway.current_...()) — an InitPlan, evaluated
--   once per statement. Missing identity = NULL = no row matches.
-- * System roles (ingest, authn) carry no caller identity: their boundary is which
--   tables and columns they were granted (010_privileges.sql), not rows.

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.oid::regclass AS rel
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.rel);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.rel);
    END LOOP;
    FOR t IN SELECT p.polname, p.polrelid::regclass AS rel
               FROM pg_catalog.pg_policy p
               JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
              WHERE c.relnamespace = 'gateway'::regnamespace AND p.polname LIKE 'rls\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', t.polname, t.rel);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- tenant fence
-- Restrictive: whatever else a member or tenant admin is allowed, it is within
-- their own tenant only (USING for reads, WITH CHECK for any write).
CREATE POLICY rls_tenant_fence ON gateway.tenants AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_fence ON gateway.users AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_fence ON gateway.api_tokens AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_fence ON gateway.mcp_sessions AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_fence ON gateway.mcp_requests AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_fence ON gateway.usage_daily AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));

-- ---------------------------------------------------------------- member: own rows
CREATE POLICY rls_member_select ON gateway.tenants FOR SELECT TO mcp_gateway_member
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_member_select ON gateway.users FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY rls_member_select ON gateway.api_tokens FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY rls_member_select ON gateway.mcp_sessions FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY rls_member_select ON gateway.mcp_requests FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY rls_member_select ON gateway.usage_daily FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));

-- ---------------------------------------------------------------- tenant admin: own tenant
CREATE POLICY rls_tenant_admin_select ON gateway.tenants FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_admin_select ON gateway.users FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_admin_select ON gateway.api_tokens FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_admin_select ON gateway.mcp_sessions FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_admin_select ON gateway.mcp_requests FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY rls_tenant_admin_select ON gateway.usage_daily FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));

-- ---------------------------------------------------------------- auditor: everything, with an identity
CREATE POLICY rls_auditor_select ON gateway.tenants FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY rls_auditor_select ON gateway.users FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY rls_auditor_select ON gateway.api_tokens FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY rls_auditor_select ON gateway.mcp_sessions FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY rls_auditor_select ON gateway.mcp_requests FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY rls_auditor_select ON gateway.usage_daily FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));

-- ---------------------------------------------------------------- ingest (tracking writer)
CREATE POLICY rls_ingest_insert ON gateway.mcp_requests FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
-- INSERT ... ON CONFLICT (tenant_id, id) needs SELECT on them, and PostgreSQL then checks the
-- SELECT policies against each new row; ingest can read nothing but those two columns.
CREATE POLICY rls_ingest_select ON gateway.mcp_requests FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_select ON gateway.mcp_sessions FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_insert ON gateway.mcp_sessions FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY rls_ingest_update ON gateway.mcp_sessions FOR UPDATE TO mcp_gateway_ingest
    USING (true) WITH CHECK (true);
CREATE POLICY rls_ingest_select ON gateway.usage_daily FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_insert ON gateway.usage_daily FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY rls_ingest_update ON gateway.usage_daily FOR UPDATE TO mcp_gateway_ingest
    USING (true) WITH CHECK (true);
CREATE POLICY rls_ingest_select ON gateway.tenants FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_insert ON gateway.tenants FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY rls_ingest_select ON gateway.users FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_insert ON gateway.users FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY rls_ingest_update ON gateway.users FOR UPDATE TO mcp_gateway_ingest
    USING (true) WITH CHECK (true);
CREATE POLICY rls_ingest_select ON gateway.instances FOR SELECT TO mcp_gateway_ingest
    USING (true);
CREATE POLICY rls_ingest_insert ON gateway.instances FOR INSERT TO mcp_gateway_ingest
    WITH CHECK (true);
CREATE POLICY rls_ingest_update ON gateway.instances FOR UPDATE TO mcp_gateway_ingest
    USING (true) WITH CHECK (true);

-- ---------------------------------------------------------------- authn (tokens, provisioning)
CREATE POLICY rls_authn_select ON gateway.tenants FOR SELECT TO mcp_gateway_authn
    USING (true);
CREATE POLICY rls_authn_insert ON gateway.tenants FOR INSERT TO mcp_gateway_authn
    WITH CHECK (true);
CREATE POLICY rls_authn_select ON gateway.users FOR SELECT TO mcp_gateway_authn
    USING (true);
CREATE POLICY rls_authn_insert ON gateway.users FOR INSERT TO mcp_gateway_authn
    WITH CHECK (true);
CREATE POLICY rls_authn_update ON gateway.users FOR UPDATE TO mcp_gateway_authn
    USING (true) WITH CHECK (true);
CREATE POLICY rls_authn_select ON gateway.api_tokens FOR SELECT TO mcp_gateway_authn
    USING (true);
CREATE POLICY rls_authn_insert ON gateway.api_tokens FOR INSERT TO mcp_gateway_authn
    WITH CHECK (true);
CREATE POLICY rls_authn_update ON gateway.api_tokens FOR UPDATE TO mcp_gateway_authn
    USING (true) WITH CHECK (true);
