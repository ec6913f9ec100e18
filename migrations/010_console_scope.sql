-- The admin SQL console's tenant scope: something the console's own SQL cannot forge.
--
-- The console runs arbitrary (parsed, SELECT-only) SQL on the dedicated login
-- mcp_gateway_console. Inside such SQL `set_config` can rewrite any setting and
-- `RESET ROLE` returns to the login role, so the scope cannot be a plain setting or
-- a role. Instead the gateway sets, per transaction,
--
--   mcp_gateway.console_scope = v1|<key_id>|<kind>|<tenant_hex>|<pid>|<xid>|<expiry>|<hmac_hex>
--
--   kind        't' (one tenant) or 'a' (all tenants: auditors)
--   tenant_hex  hex of the tenant id's UTF-8 bytes ('' for kind 'a')
--   pid, xid    pg_backend_pid() and pg_current_xact_id() of the console transaction
--   expiry      unix seconds
--   hmac_hex    HMAC-SHA256 over the first seven fields joined by '|', keyed with
--               mcp_gateway_private.console_keys.key (which the console login cannot read)
--
-- gateway.console_scope() (SECURITY DEFINER, owner mcp_gateway_owner, empty search_path)
-- verifies all of it and answers NULL for anything missing, malformed, forged,
-- expired, or replayed from another backend or transaction. The console's policies
-- (policies/030_console.sql) call it wrapped as (SELECT ...): once per statement.

CREATE SCHEMA mcp_gateway_private AUTHORIZATION mcp_gateway_owner;
REVOKE ALL ON SCHEMA mcp_gateway_private FROM PUBLIC;

CREATE TABLE mcp_gateway_private.console_keys (
    key_id     integer PRIMARY KEY,
    key        bytea NOT NULL CHECK (length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON mcp_gateway_private.console_keys FROM PUBLIC;
-- One random key per database, made on first migrate. Rotation: insert key_id + 1
-- (the gateway signs with the highest key_id; older ones keep verifying until deleted).
INSERT INTO mcp_gateway_private.console_keys (key_id, key) VALUES (1, public.gen_random_bytes(32));

CREATE FUNCTION gateway.console_scope() RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    raw      text := nullif(pg_catalog.current_setting('mcp_gateway.console_scope', true), '');
    parts    text[];
    v_key    bytea;
    expected text;
    tenant   text;
BEGIN
    IF raw IS NULL OR pg_catalog.length(raw) > 2000 THEN
        RETURN NULL;
    END IF;
    parts := pg_catalog.string_to_array(raw, '|');
    IF pg_catalog.array_length(parts, 1) IS DISTINCT FROM 8
       OR parts[1] IS DISTINCT FROM 'v1'
       OR parts[2] !~ '^[0-9]{1,9}$'
       OR parts[3] NOT IN ('t', 'a')
       OR parts[4] !~ '^([0-9a-f][0-9a-f])*$'
       OR parts[5] !~ '^[0-9]{1,10}$'
       OR parts[6] !~ '^[0-9]{1,20}$'
       OR parts[7] !~ '^[0-9]{1,12}$'
       OR parts[8] !~ '^[0-9a-f]{64}$' THEN
        RETURN NULL;
    END IF;
    SELECT k.key INTO v_key FROM mcp_gateway_private.console_keys AS k WHERE k.key_id = parts[2]::integer;
    IF v_key IS NULL THEN
        RETURN NULL;
    END IF;
    expected := pg_catalog.encode(
        public.hmac(pg_catalog.convert_to(pg_catalog.array_to_string(parts[1:7], '|'), 'UTF8'), v_key, 'sha256'),
        'hex');
    IF expected IS DISTINCT FROM parts[8] THEN
        RETURN NULL;
    END IF;
    -- bound to this backend and this transaction: a leaked value cannot be replayed
    IF parts[5]::bigint IS DISTINCT FROM pg_catalog.pg_backend_pid()::bigint
       OR parts[6] IS DISTINCT FROM pg_catalog.pg_current_xact_id_if_assigned()::text
       OR pg_catalog.to_timestamp(parts[7]::bigint) < pg_catalog.clock_timestamp() THEN
        RETURN NULL;
    END IF;
    IF parts[3] = 'a' THEN
        RETURN 'all';
    END IF;
    tenant := pg_catalog.convert_from(pg_catalog.decode(parts[4], 'hex'), 'UTF8');
    IF tenant = '' THEN
        RETURN NULL;
    END IF;
    RETURN 'tenant:' || tenant;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;  -- e.g. invalid UTF-8 in a forged tenant: no scope, never an error
END
$$;

-- The scoped tenant, or NULL (no valid scope, or an all-tenants scope).
CREATE FUNCTION gateway.console_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY INVOKER
    SET search_path = ''
AS $$
    SELECT CASE WHEN s LIKE 'tenant:%' THEN pg_catalog.substr(s, 8) END FROM gateway.console_scope() AS s
$$;

-- True only for a valid all-tenants (auditor) scope. A tenant may be named anything,
-- so "all" is a separate answer, never a special tenant id.
CREATE FUNCTION gateway.console_all_tenants() RETURNS boolean
    LANGUAGE sql STABLE SECURITY INVOKER
    SET search_path = ''
AS $$
    SELECT coalesce(gateway.console_scope() = 'all', false)
$$;

REVOKE ALL ON FUNCTION gateway.console_scope(), gateway.console_tenant(), gateway.console_all_tenants()
    FROM PUBLIC;
