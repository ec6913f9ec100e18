-- Privileges and row-level security of the OAuth authorization server's tables
-- (migrations/021_oauth_schema.sql). Re-applied on every migrate (idempotent): grants
-- are revoked and re-granted, policies named oauth_* are dropped and re-created.
-- 020_rls.sql has already ENABLEd and FORCEd row level security on every table.
--
--   request roles (member, tenant_admin, auditor): SELECT on grants and token families
--       (own / own tenant / all) and on the clients named by a grant they can see;
--       never a secret digest, a code, a refresh token, a pending request or a key.
--   mcp_gateway_oauth: the authorization server. Reads and writes its tables, provisions
--       tenants and users who sign in through it, and DELETEs only short-lived rows
--       (pending requests, codes, assertion JWT IDs) once they have expired.

REVOKE ALL ON ALL TABLES IN SCHEMA gateway FROM mcp_gateway_oauth;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA gateway FROM mcp_gateway_oauth;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA gateway FROM mcp_gateway_oauth;
REVOKE ALL ON SCHEMA gateway FROM mcp_gateway_oauth;
GRANT USAGE ON SCHEMA gateway TO mcp_gateway_oauth;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT p.polname, p.polrelid::regclass AS rel
               FROM pg_catalog.pg_policy p
               JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
              WHERE c.relnamespace = 'gateway'::regnamespace AND p.polname LIKE 'oauth\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', t.polname, t.rel);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- privileges
GRANT SELECT (client_id, kind, client_name, client_uri, logo_uri, redirect_uris, grant_types,
              token_endpoint_auth_method, scope, created_at, updated_at)
    ON gateway.oauth_clients TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;
GRANT SELECT ON gateway.oauth_grants, gateway.oauth_token_families
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;

GRANT SELECT, INSERT ON gateway.oauth_clients TO mcp_gateway_oauth;
GRANT UPDATE (client_name, client_uri, logo_uri, redirect_uris, grant_types, token_endpoint_auth_method,
              jwks, jwks_uri, scope, updated_at)
    ON gateway.oauth_clients TO mcp_gateway_oauth;
GRANT SELECT, INSERT ON gateway.oauth_grants TO mcp_gateway_oauth;
GRANT UPDATE (scope, remember, last_used_at, revoked_at) ON gateway.oauth_grants TO mcp_gateway_oauth;
GRANT SELECT, INSERT ON gateway.oauth_token_families TO mcp_gateway_oauth;
GRANT UPDATE (last_used_at, revoked_at, revoke_reason) ON gateway.oauth_token_families TO mcp_gateway_oauth;
GRANT SELECT, INSERT, DELETE ON gateway.oauth_codes TO mcp_gateway_oauth;
GRANT UPDATE (used_at, family_id) ON gateway.oauth_codes TO mcp_gateway_oauth;
GRANT SELECT, INSERT ON gateway.oauth_refresh_tokens TO mcp_gateway_oauth;
GRANT UPDATE (rotated_at) ON gateway.oauth_refresh_tokens TO mcp_gateway_oauth;
GRANT SELECT, INSERT, DELETE ON gateway.oauth_pending TO mcp_gateway_oauth;
GRANT UPDATE (csrf_hash, idp_state_hash, idp_nonce, idp_verifier, principal, consumed_at)
    ON gateway.oauth_pending TO mcp_gateway_oauth;
GRANT SELECT, INSERT, DELETE ON gateway.oauth_assertion_jtis TO mcp_gateway_oauth;
GRANT SELECT, INSERT ON gateway.oauth_signing_keys TO mcp_gateway_oauth;
-- Provisioning of users who sign in through the authorization server (as authn does).
GRANT SELECT, INSERT ON gateway.tenants TO mcp_gateway_oauth;
GRANT SELECT, INSERT ON gateway.users TO mcp_gateway_oauth;
GRANT UPDATE (email, name, role, last_seen_at, issuer, subject) ON gateway.users TO mcp_gateway_oauth;

-- ---------------------------------------------------------------- tenant fence
CREATE POLICY oauth_tenant_fence ON gateway.oauth_grants AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY oauth_tenant_fence ON gateway.oauth_token_families AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY oauth_tenant_fence ON gateway.oauth_codes AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY oauth_tenant_fence ON gateway.oauth_refresh_tokens AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));

-- ---------------------------------------------------------------- request roles: read
CREATE POLICY oauth_member_select ON gateway.oauth_grants FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY oauth_member_select ON gateway.oauth_token_families FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY oauth_tenant_admin_select ON gateway.oauth_grants FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY oauth_tenant_admin_select ON gateway.oauth_token_families FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY oauth_auditor_select ON gateway.oauth_grants FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
CREATE POLICY oauth_auditor_select ON gateway.oauth_token_families FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));
-- A client is visible to whoever can see a grant to it (the subquery runs under the
-- caller's own policies on oauth_grants).
CREATE POLICY oauth_member_select ON gateway.oauth_clients FOR SELECT TO mcp_gateway_member
    USING (client_id IN (SELECT g.client_id FROM gateway.oauth_grants g));
CREATE POLICY oauth_tenant_admin_select ON gateway.oauth_clients FOR SELECT TO mcp_gateway_tenant_admin
    USING (client_id IN (SELECT g.client_id FROM gateway.oauth_grants g));
CREATE POLICY oauth_auditor_select ON gateway.oauth_clients FOR SELECT TO mcp_gateway_auditor
    USING (client_id IN (SELECT g.client_id FROM gateway.oauth_grants g));

-- ---------------------------------------------------------------- the authorization server
CREATE POLICY oauth_as_select ON gateway.oauth_clients FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_clients FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_clients FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.oauth_grants FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_grants FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_grants FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.oauth_token_families FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_token_families FOR INSERT TO mcp_gateway_oauth
    WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_token_families FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.oauth_codes FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_codes FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_codes FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_delete ON gateway.oauth_codes FOR DELETE TO mcp_gateway_oauth
    USING (expires_at < now() - interval '1 hour');
CREATE POLICY oauth_as_select ON gateway.oauth_refresh_tokens FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_refresh_tokens FOR INSERT TO mcp_gateway_oauth
    WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_refresh_tokens FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.oauth_pending FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_pending FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.oauth_pending FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
CREATE POLICY oauth_as_delete ON gateway.oauth_pending FOR DELETE TO mcp_gateway_oauth
    USING (expires_at < now());
CREATE POLICY oauth_as_select ON gateway.oauth_assertion_jtis FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_assertion_jtis FOR INSERT TO mcp_gateway_oauth
    WITH CHECK (true);
CREATE POLICY oauth_as_delete ON gateway.oauth_assertion_jtis FOR DELETE TO mcp_gateway_oauth
    USING (expires_at < now());
CREATE POLICY oauth_as_select ON gateway.oauth_signing_keys FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.oauth_signing_keys FOR INSERT TO mcp_gateway_oauth
    WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.tenants FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.tenants FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_select ON gateway.users FOR SELECT TO mcp_gateway_oauth USING (true);
CREATE POLICY oauth_as_insert ON gateway.users FOR INSERT TO mcp_gateway_oauth WITH CHECK (true);
CREATE POLICY oauth_as_update ON gateway.users FOR UPDATE TO mcp_gateway_oauth
    USING (true) WITH CHECK (true);
