-- run as: admin
-- (every other migration runs as mcp_gateway_owner; this one creates it)
-- Database roles. Cluster-wide and idempotent: a second database on the same
-- server (or a concurrent migrate of another database) finds them present.
--
--   mcp_gateway_owner         owns every object (migrations run as it); not a login
--   mcp_gateway_app           the gateway's runtime LOGIN: NOINHERIT, so it holds no
--                             privilege until a transaction does SET LOCAL ROLE
--   mcp_gateway_member        request role: a member's own rows
--   mcp_gateway_tenant_admin  request role: one tenant's rows
--   mcp_gateway_auditor       request role: every tenant, read-only
--   mcp_gateway_ingest        the tracking writer: inserts requests, sessions, rollups
--   mcp_gateway_authn         token verification, provisioning of tenants/users, token CLI
--   mcp_gateway_console       admin SQL LOGIN: SELECT on reporting relations only
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('mcp_gateway_owner',        'NOLOGIN NOINHERIT'),
      ('mcp_gateway_app',          'LOGIN NOINHERIT'),
      ('mcp_gateway_member',       'NOLOGIN'),
      ('mcp_gateway_tenant_admin', 'NOLOGIN'),
      ('mcp_gateway_auditor',      'NOLOGIN'),
      ('mcp_gateway_ingest',       'NOLOGIN'),
      ('mcp_gateway_authn',        'NOLOGIN'),
      ('mcp_gateway_console',      'LOGIN NOINHERIT')
    ) AS t(name, attrs)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION',
                       r.name, r.attrs);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- another migrate created it first
      END;
    END IF;
  END LOOP;
END
$$;

-- The runtime login may become exactly these roles, one transaction at a time.
GRANT mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor,
      mcp_gateway_ingest, mcp_gateway_authn TO mcp_gateway_app;

-- The owner creates objects in this database; the logins may connect to it.
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO mcp_gateway_owner', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO mcp_gateway_app, mcp_gateway_console', current_database());
  EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
-- The migrating user must be able to SET ROLE mcp_gateway_owner.
DO $$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT mcp_gateway_owner TO %I', current_user);
  END IF;
END
$$;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS gateway AUTHORIZATION mcp_gateway_owner;
