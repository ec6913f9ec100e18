-- run as: admin
-- The authorization server's own database role (cluster-wide, idempotent like 000_roles.sql).
--   mcp_gateway_oauth  the OAuth 2.1 authorization server: clients, grants, codes, refresh
--                      token families, signing keys; provisions users who sign in through it
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mcp_gateway_oauth') THEN
    BEGIN
      CREATE ROLE mcp_gateway_oauth NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;  -- another migrate created it first
    END;
  END IF;
END
$$;

GRANT mcp_gateway_oauth TO mcp_gateway_app;
