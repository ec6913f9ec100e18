-- Identity helpers and cross-table consistency.
--
-- Identity reaches the database only as two transaction-local settings, set in one
-- place (gateway/db.py, set_config(..., true) inside an explicit transaction).
-- After such a transaction ends the setting reads '' on that connection, never NULL,
-- so every helper maps '' to NULL: a missing identity compares equal to nothing.
-- Policies call these wrapped as (SELECT gateway.current_tenant_id()) so they are
-- evaluated once per statement (an InitPlan), not once per row.

CREATE FUNCTION gateway.current_tenant_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
    AS $$ SELECT nullif(pg_catalog.current_setting('mcp_gateway.tenant_id', true), '') $$;

CREATE FUNCTION gateway.current_user_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
    AS $$ SELECT nullif(pg_catalog.current_setting('mcp_gateway.user_id', true), '') $$;

-- True only when both halves of a caller identity are present (auditors need it).
CREATE FUNCTION gateway.identity_is_set() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
    AS $$ SELECT nullif(pg_catalog.current_setting('mcp_gateway.tenant_id', true), '') IS NOT NULL
             AND nullif(pg_catalog.current_setting('mcp_gateway.user_id', true), '') IS NOT NULL $$;

REVOKE ALL ON FUNCTION gateway.current_tenant_id(), gateway.current_user_id(), gateway.identity_is_set()
    FROM PUBLIC;

-- A request row belongs to the same tenant and user as its session (001 only
-- checked that the session exists): a writer bug cannot file one tenant's call
-- under another tenant's session.
ALTER TABLE gateway.mcp_sessions
    ADD CONSTRAINT mcp_sessions_session_tenant_user UNIQUE (session_id, tenant_id, user_id);
ALTER TABLE gateway.mcp_requests
    ADD CONSTRAINT mcp_requests_session_owner FOREIGN KEY (session_id, tenant_id, user_id)
        REFERENCES gateway.mcp_sessions (session_id, tenant_id, user_id);
