-- gateway.usage_daily is maintained by a statement-level trigger on mcp_requests.
--
-- The writer inserts with INSERT ... ON CONFLICT (id) DO NOTHING, so a retried batch
-- is idempotent: the transition table holds only the rows that were really
-- inserted, and each is counted once. Day = UTC date of "timestamp" whatever the
-- session TimeZone. NULL tool_name/client_type roll up under ''.
-- Aggregated rows are upserted in key order so concurrent writers lock rollup rows
-- in the same order (no deadlocks between batches).
-- Rollups are not decremented on DELETE (retention may prune raw requests and keep
-- the daily history); nobody but the owner can delete or update requests.
-- SECURITY INVOKER: it runs as the inserting role (mcp_gateway_ingest), which holds
-- exactly the usage_daily privileges this needs.

CREATE FUNCTION gateway.usage_daily_rollup() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO gateway.usage_daily AS u
           (tenant_id, user_id, day, tool_name, client_type,
            calls, errors, denied, prompt_tokens, completion_tokens, cost, duration_ms)
    SELECT n.tenant_id,
           n.user_id,
           (n."timestamp" AT TIME ZONE 'UTC')::date,
           coalesce(n.tool_name, ''),
           coalesce(n.client_type, ''),
           count(*),
           count(*) FILTER (WHERE n.status = 'error'),
           count(*) FILTER (WHERE n.status = 'denied'),
           sum(n.prompt_tokens),
           sum(n.completion_tokens),
           sum(n.estimated_cost),
           sum(n.duration_ms)
      FROM new_requests AS n
     GROUP BY 1, 2, 3, 4, 5
     ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, user_id, day, tool_name, client_type) DO UPDATE
       SET calls             = u.calls + EXCLUDED.calls,
           errors            = u.errors + EXCLUDED.errors,
           denied            = u.denied + EXCLUDED.denied,
           prompt_tokens     = u.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
           cost              = u.cost + EXCLUDED.cost,
           duration_ms       = u.duration_ms + EXCLUDED.duration_ms;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION gateway.usage_daily_rollup() FROM PUBLIC;

CREATE TRIGGER mcp_requests_usage_rollup
    AFTER INSERT ON gateway.mcp_requests
    REFERENCING NEW TABLE AS new_requests
    FOR EACH STATEMENT
    EXECUTE FUNCTION gateway.usage_daily_rollup();
