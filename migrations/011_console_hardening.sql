-- run as: admin
-- Cluster-level hardening of the admin SQL console login (mcp_gateway_console).
--
-- * Every tenant admin's console queries run as the same login, and PostgreSQL shows
--   a role the query text of its own other backends (pg_stat_activity,
--   pg_stat_get_activity, pg_stat_get_backend_activity). That would show tenant A's
--   admin the SQL tenant B's admin is running. Those are granted to PUBLIC by
--   default; here they are revoked from PUBLIC (in this database) and granted back to
--   the monitoring role and the gateway's own roles. Only a superuser can change
--   privileges on pg_catalog objects: without one this step is skipped (see
--   docs/admin-sql.md; the scope HMAC is bound to backend pid and transaction id, so
--   even a scope seen there cannot be replayed).
-- * Role defaults as a backstop behind the per-transaction settings the gateway makes:
--   read-only transactions, a statement timeout, a connection limit, and (superuser
--   only) a cap on temporary files.
DO $$
DECLARE
    is_super boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    IF is_super THEN
        REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC;
        REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC;
        REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) FROM PUBLIC;
        GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_monitor, mcp_gateway_app, mcp_gateway_owner;
        GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer),
                                  pg_catalog.pg_stat_get_backend_activity(integer)
            TO pg_monitor, mcp_gateway_app, mcp_gateway_owner;
        BEGIN
            ALTER ROLE mcp_gateway_console SET temp_file_limit = '256MB';
        EXCEPTION WHEN OTHERS THEN NULL;  -- another database's migrate did it concurrently
        END;
    ELSE
        RAISE WARNING 'not a superuser: pg_stat_activity stays readable by the console login (see docs/admin-sql.md)';
    END IF;
    BEGIN
        ALTER ROLE mcp_gateway_console SET default_transaction_read_only = on;
        ALTER ROLE mcp_gateway_console SET statement_timeout = '60s';
        ALTER ROLE mcp_gateway_console SET idle_in_transaction_session_timeout = '60s';
        ALTER ROLE mcp_gateway_console CONNECTION LIMIT 32;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot set defaults on role mcp_gateway_console (needs CREATEROLE)';
    WHEN OTHERS THEN
        NULL;  -- concurrent ALTER ROLE from another database's migrate
    END;
END
$$;
