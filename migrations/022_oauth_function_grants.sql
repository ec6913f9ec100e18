-- run as: admin
-- The authorization server's role takes a transaction-level advisory lock when it creates a signing
-- key (replicas starting together create one), and sets identity like the other system roles. Migration
-- 012 revoked both functions from PUBLIC when run as a superuser, before this role existed: grant them
-- back to it. Without a superuser nothing was revoked, and there is nothing to grant.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(bigint) TO mcp_gateway_oauth;
        GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO mcp_gateway_oauth;
    END IF;
END
$$;
