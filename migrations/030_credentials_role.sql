-- run as: admin
-- The credential vault role. Cluster-wide and idempotent, like 000_roles.sql.
--
--   mcp_gateway_vault   reads and writes per-user upstream credentials, always with a
--                       caller identity set, and only that identity's own rows
--                       (policies/050_credentials.sql). The request roles see that a
--                       credential exists (metadata columns), never its value.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mcp_gateway_vault') THEN
    BEGIN
      CREATE ROLE mcp_gateway_vault NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;  -- another migrate created it first
    END;
  END IF;
END
$$;

GRANT mcp_gateway_vault TO mcp_gateway_app;
