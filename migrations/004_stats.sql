-- Reporting views and functions for the REST API, the dashboard and the MCP tools.
--
-- Views are security_invoker and functions SECURITY INVOKER: everything they return
-- passes through the caller's row-level security (a member sees their own
-- sessions, a tenant admin their tenant, an auditor everything). Nothing here
-- widens what the caller could read from the tables directly.
--
-- Definitions used throughout:
--   active_sessions   sessions not disconnected (status active or idle)
--   first_activity    earliest connected_at of the user's sessions
--   last_activity     latest last_activity of the user's sessions
--   total_tokens      prompt_tokens + completion_tokens

-- Per session: every mcp_sessions column plus its request aggregates.
CREATE VIEW gateway.mcp_session_stats WITH (security_invoker = true) AS
SELECT s.session_id,
       s.tenant_id,
       s.user_id,
       s.user_email,
       s.user_name,
       s.client_type,
       s.client_version,
       s.protocol_version,
       s.transport,
       s.status,
       s.connected_at,
       s.last_activity,
       s.disconnected_at,
       s.total_duration,
       s.disconnect_reason,
       s.session_key,
       s.mcp_session_id,
       s.instance_id,
       r.request_count,
       r.error_count,
       r.denied_count,
       coalesce(r.prompt_tokens, 0)::bigint                        AS prompt_tokens,
       coalesce(r.completion_tokens, 0)::bigint                    AS completion_tokens,
       coalesce(r.prompt_tokens + r.completion_tokens, 0)::bigint  AS total_tokens,
       coalesce(r.total_cost, 0)::numeric(20, 8)                   AS total_cost,
       r.avg_duration_ms,
       r.max_duration_ms,
       r.first_request_at,
       r.last_request_at
  FROM gateway.mcp_sessions AS s
  LEFT JOIN LATERAL (
       SELECT count(*)                                   AS request_count,
              count(*) FILTER (WHERE q.status = 'error')  AS error_count,
              count(*) FILTER (WHERE q.status = 'denied') AS denied_count,
              sum(q.prompt_tokens)                       AS prompt_tokens,
              sum(q.completion_tokens)                   AS completion_tokens,
              sum(q.estimated_cost)                      AS total_cost,
              avg(q.duration_ms)                         AS avg_duration_ms,
              max(q.duration_ms)                         AS max_duration_ms,
              min(q."timestamp")                         AS first_request_at,
              max(q."timestamp")                         AS last_request_at
         FROM gateway.mcp_requests AS q
        WHERE q.session_id = s.session_id
  ) AS r ON true;

-- Per (tenant, user): identity, session counts, and request totals from the rollup.
CREATE VIEW gateway.mcp_user_stats WITH (security_invoker = true) AS
SELECT u.tenant_id,
       u.user_id,
       u.email,
       u.name,
       u.role,
       coalesce(s.total_sessions, 0)::bigint         AS total_sessions,
       coalesce(s.active_sessions, 0)::bigint        AS active_sessions,
       coalesce(d.total_requests, 0)::bigint         AS total_requests,
       coalesce(d.error_count, 0)::bigint            AS error_count,
       coalesce(d.denied_count, 0)::bigint           AS denied_count,
       coalesce(d.prompt_tokens, 0)::bigint          AS prompt_tokens,
       coalesce(d.completion_tokens, 0)::bigint      AS completion_tokens,
       coalesce(d.prompt_tokens + d.completion_tokens, 0)::bigint AS total_tokens,
       coalesce(d.total_cost, 0)::numeric(20, 8)     AS total_cost,
       (d.total_duration_ms / nullif(d.total_requests, 0))::double precision AS avg_duration_ms,
       s.first_activity,
       s.last_activity
  FROM gateway.users AS u
  LEFT JOIN (
       SELECT x.tenant_id, x.user_id,
              count(*)                                           AS total_sessions,
              count(*) FILTER (WHERE x.status <> 'disconnected') AS active_sessions,
              min(x.connected_at)                                AS first_activity,
              max(x.last_activity)                               AS last_activity
         FROM gateway.mcp_sessions AS x
        GROUP BY x.tenant_id, x.user_id
  ) AS s ON s.tenant_id = u.tenant_id AND s.user_id = u.user_id
  LEFT JOIN (
       SELECT y.tenant_id, y.user_id,
              sum(y.calls)             AS total_requests,
              sum(y.errors)            AS error_count,
              sum(y.denied)            AS denied_count,
              sum(y.prompt_tokens)     AS prompt_tokens,
              sum(y.completion_tokens) AS completion_tokens,
              sum(y.cost)              AS total_cost,
              sum(y.duration_ms)       AS total_duration_ms
         FROM gateway.usage_daily AS y
        GROUP BY y.tenant_id, y.user_id
  ) AS d ON d.tenant_id = u.tenant_id AND d.user_id = u.user_id;

-- Disconnected sessions whose disconnected_at lies within the last `days` days,
-- newest first, at most `limit` rows. days 1..30, limit 1..200, else SQLSTATE 22023.
CREATE FUNCTION gateway.get_disconnected_sessions(days integer DEFAULT 7, "limit" integer DEFAULT 50)
    RETURNS SETOF gateway.mcp_session_stats
    LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
BEGIN
    IF $1 IS NULL OR $1 < 1 OR $1 > 30 THEN
        RAISE EXCEPTION 'days must be between 1 and 30 (got %)', coalesce($1::text, 'null')
              USING ERRCODE = '22023';
    END IF;
    IF $2 IS NULL OR $2 < 1 OR $2 > 200 THEN
        RAISE EXCEPTION 'limit must be between 1 and 200 (got %)', coalesce($2::text, 'null')
              USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT st.*
          FROM gateway.mcp_session_stats AS st
         WHERE st.status = 'disconnected'
           AND st.disconnected_at >= pg_catalog.now() - $1 * interval '1 day'
         ORDER BY st.disconnected_at DESC, st.session_id
         LIMIT $2;
END
$$;

-- Aggregates over the same window (all of it, not just one page): what the
-- REST endpoint reports as `statistics`.
CREATE FUNCTION gateway.get_disconnected_session_stats(days integer DEFAULT 7)
    RETURNS TABLE (total_disconnected bigint,
                   disconnect_reasons jsonb,
                   avg_duration_seconds double precision,
                   max_duration_seconds double precision,
                   min_duration_seconds double precision,
                   period_start timestamptz,
                   period_end timestamptz)
    LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
BEGIN
    IF $1 IS NULL OR $1 < 1 OR $1 > 30 THEN
        RAISE EXCEPTION 'days must be between 1 and 30 (got %)', coalesce($1::text, 'null')
              USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        WITH w AS (
            SELECT s.disconnect_reason, s.total_duration
              FROM gateway.mcp_sessions AS s
             WHERE s.status = 'disconnected'
               AND s.disconnected_at >= pg_catalog.now() - $1 * interval '1 day'
        )
        SELECT (SELECT count(*) FROM w),
               coalesce((SELECT jsonb_object_agg(c.reason, c.n)
                           FROM (SELECT coalesce(w.disconnect_reason, 'unknown') AS reason, count(*) AS n
                                   FROM w GROUP BY 1) AS c), '{}'::jsonb),
               (SELECT avg(w.total_duration) FROM w),
               (SELECT max(w.total_duration) FROM w),
               (SELECT min(w.total_duration) FROM w),
               pg_catalog.now() - $1 * interval '1 day',
               pg_catalog.now();
END
$$;

-- Sessions of one user (within what the caller may see), newest first. User ids
-- are unique per tenant: an auditor passes p_tenant_id to pick one tenant's user.
CREATE FUNCTION gateway.get_user_sessions(p_user_id text, p_tenant_id text DEFAULT NULL)
    RETURNS SETOF gateway.mcp_session_stats
    LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT st.*
      FROM gateway.mcp_session_stats AS st
     WHERE st.user_id = p_user_id
       AND (p_tenant_id IS NULL OR st.tenant_id = p_tenant_id)
     ORDER BY st.connected_at DESC, st.session_id
$$;

-- Always exactly one row (zeros when the caller sees nothing of that user).
CREATE FUNCTION gateway.get_user_activity_summary(p_user_id text, p_tenant_id text DEFAULT NULL)
    RETURNS TABLE (user_id text,
                   total_sessions bigint,
                   active_sessions bigint,
                   total_requests bigint,
                   error_count bigint,
                   denied_count bigint,
                   prompt_tokens bigint,
                   completion_tokens bigint,
                   total_tokens bigint,
                   total_cost numeric,
                   first_activity timestamptz,
                   last_activity timestamptz,
                   top_tool text,
                   top_tool_calls bigint)
    LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    WITH s AS (
        SELECT count(*)                                           AS total_sessions,
               count(*) FILTER (WHERE x.status <> 'disconnected') AS active_sessions,
               min(x.connected_at)                                AS first_activity,
               max(x.last_activity)                               AS last_activity
          FROM gateway.mcp_sessions AS x
         WHERE x.user_id = p_user_id AND (p_tenant_id IS NULL OR x.tenant_id = p_tenant_id)
    ), d AS (
        SELECT coalesce(sum(y.calls), 0)::bigint             AS total_requests,
               coalesce(sum(y.errors), 0)::bigint            AS error_count,
               coalesce(sum(y.denied), 0)::bigint            AS denied_count,
               coalesce(sum(y.prompt_tokens), 0)::bigint     AS prompt_tokens,
               coalesce(sum(y.completion_tokens), 0)::bigint AS completion_tokens,
               coalesce(sum(y.cost), 0)::numeric(20, 8)      AS total_cost
          FROM gateway.usage_daily AS y
         WHERE y.user_id = p_user_id AND (p_tenant_id IS NULL OR y.tenant_id = p_tenant_id)
    ), t AS (
        SELECT y.tool_name, sum(y.calls)::bigint AS calls
          FROM gateway.usage_daily AS y
         WHERE y.user_id = p_user_id AND (p_tenant_id IS NULL OR y.tenant_id = p_tenant_id)
           AND y.tool_name <> ''
         GROUP BY y.tool_name
         ORDER BY 2 DESC, 1
         LIMIT 1
    )
    SELECT p_user_id,
           s.total_sessions, s.active_sessions,
           d.total_requests, d.error_count, d.denied_count,
           d.prompt_tokens, d.completion_tokens, d.prompt_tokens + d.completion_tokens,
           d.total_cost,
           s.first_activity, s.last_activity,
           t.tool_name, t.calls
      FROM s CROSS JOIN d LEFT JOIN t ON true
$$;

-- Sessions that are not disconnected (active or idle), most recently active first.
CREATE FUNCTION gateway.get_active_mcp_clients()
    RETURNS SETOF gateway.mcp_session_stats
    LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT st.*
      FROM gateway.mcp_session_stats AS st
     WHERE st.status <> 'disconnected'
     ORDER BY st.last_activity DESC, st.session_id
$$;

REVOKE ALL ON FUNCTION gateway.get_disconnected_sessions(integer, integer),
                       gateway.get_disconnected_session_stats(integer),
                       gateway.get_user_sessions(text, text),
                       gateway.get_user_activity_summary(text, text),
                       gateway.get_active_mcp_clients()
    FROM PUBLIC;
