-- Privileges and row-level security of gateway.upstream_credentials. Re-applied on every
-- migrate (idempotent): grants are revoked and re-granted, policies named cred_* are dropped
-- and re-created. (010_privileges.sql revokes table privileges of the request roles first;
-- 020_rls.sql ENABLEs and FORCEs row level security on every table.)
--
-- Who sees what:
--   mcp_gateway_vault: the only role that reads or writes `secret`, and only in rows of the
--       identity set for the transaction (tenant AND user): a user's own credentials.
--       Unlinking/revoking is an UPDATE that clears the secret (nobody but the owner deletes).
--   request roles (member, tenant_admin, auditor): metadata columns only (no `secret`), rows as
--       everywhere else: members their own, tenant admins their tenant's, auditors all.
--   console, ingest, authn, the bare runtime login: nothing.

REVOKE ALL ON gateway.upstream_link_states FROM PUBLIC, mcp_gateway_vault,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app, mcp_gateway_console;
REVOKE ALL ON gateway.upstream_credentials FROM PUBLIC, mcp_gateway_vault,
    mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
    mcp_gateway_ingest, mcp_gateway_authn, mcp_gateway_app, mcp_gateway_console;
REVOKE ALL ON SCHEMA gateway FROM mcp_gateway_vault;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT p.polname, p.polrelid::regclass AS rel
               FROM pg_catalog.pg_policy p
              WHERE p.polrelid IN ('gateway.upstream_credentials'::regclass, 'gateway.upstream_link_states'::regclass)
                AND p.polname LIKE 'cred\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', t.polname, t.rel);
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA gateway TO mcp_gateway_vault;
-- Revoked first so the ACL comes out the same on every run (010 re-grants the request roles before this).
REVOKE ALL ON FUNCTION gateway.current_tenant_id(), gateway.current_user_id() FROM mcp_gateway_vault;
GRANT EXECUTE ON FUNCTION gateway.current_tenant_id(), gateway.current_user_id() TO mcp_gateway_vault;

GRANT SELECT, INSERT ON gateway.upstream_credentials TO mcp_gateway_vault;
GRANT UPDATE (mode, secret, expires_at, needs_relink, linked_at, unlinked_at, last_used_at, updated_at)
    ON gateway.upstream_credentials TO mcp_gateway_vault;
GRANT SELECT (tenant_id, user_id, upstream, mode, expires_at, needs_relink, linked_at, unlinked_at,
              last_used_at, updated_at)
    ON gateway.upstream_credentials
    TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor;

-- Tenant fence (restrictive), as on every tenant table.
CREATE POLICY cred_tenant_fence ON gateway.upstream_credentials AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
-- The vault: exactly one identity's rows, for every command.
CREATE POLICY cred_owner_fence ON gateway.upstream_credentials AS RESTRICTIVE FOR ALL
    TO mcp_gateway_vault
    USING (tenant_id = (SELECT gateway.current_tenant_id()) AND user_id = (SELECT gateway.current_user_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()) AND user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_select ON gateway.upstream_credentials FOR SELECT TO mcp_gateway_vault
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_insert ON gateway.upstream_credentials FOR INSERT TO mcp_gateway_vault
    WITH CHECK (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_update ON gateway.upstream_credentials FOR UPDATE TO mcp_gateway_vault
    USING (user_id = (SELECT gateway.current_user_id()))
    WITH CHECK (user_id = (SELECT gateway.current_user_id()));

-- Metadata for the request roles.
CREATE POLICY cred_member_select ON gateway.upstream_credentials FOR SELECT TO mcp_gateway_member
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_tenant_admin_select ON gateway.upstream_credentials FOR SELECT TO mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY cred_auditor_select ON gateway.upstream_credentials FOR SELECT TO mcp_gateway_auditor
    USING ((SELECT gateway.identity_is_set()));

-- The OAuth link states: the vault, for its own identity only. Nobody else sees them.
GRANT SELECT, INSERT ON gateway.upstream_link_states TO mcp_gateway_vault;
GRANT UPDATE (consumed_at) ON gateway.upstream_link_states TO mcp_gateway_vault;
CREATE POLICY cred_tenant_fence ON gateway.upstream_link_states AS RESTRICTIVE FOR ALL
    TO mcp_gateway_member, mcp_gateway_tenant_admin
    USING (tenant_id = (SELECT gateway.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()));
CREATE POLICY cred_owner_fence ON gateway.upstream_link_states AS RESTRICTIVE FOR ALL
    TO mcp_gateway_vault
    USING (tenant_id = (SELECT gateway.current_tenant_id()) AND user_id = (SELECT gateway.current_user_id()))
    WITH CHECK (tenant_id = (SELECT gateway.current_tenant_id()) AND user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_select ON gateway.upstream_link_states FOR SELECT TO mcp_gateway_vault
    USING (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_insert ON gateway.upstream_link_states FOR INSERT TO mcp_gateway_vault
    WITH CHECK (user_id = (SELECT gateway.current_user_id()));
CREATE POLICY cred_vault_update ON gateway.upstream_link_states FOR UPDATE TO mcp_gateway_vault
    USING (user_id = (SELECT gateway.current_user_id()))
    WITH CHECK (user_id = (SELECT gateway.current_user_id()));
