-- run as: admin
-- Side channels and the second wall of the admin SQL console (docs/admin-sql.md).
--
-- All tenants' consoles share one login, mcp_gateway_console, whose only protection
-- against another tenant's rows is row-level security. Functions that PostgreSQL grants
-- to PUBLIC can get around it without reading a row:
--
-- * counters: the statistics functions and views (pg_stat_get_*, pg_stat_*, pg_statio_*)
--   count index entries and tuples before row-level security filters them, relation
--   and database sizes grow with every tenant's rows, pg_class.reltuples/relpages count
--   all tenants, the WAL position and xid counters move with every write, pg_locks and
--   pg_prepared_xacts show other transactions;
-- * a way around the console's parser: functions that run SQL given as text
--   (query_to_xml & co, ts_stat, ts_rewrite) and anything that changes settings
--   (set_config);
-- * harm to others: sleep, advisory locks, notify, large objects, and cancelling or
--   terminating backends (PostgreSQL lets a role signal its own other backends, and
--   every tenant's console is the same role).
--
-- Here they are revoked from PUBLIC in this database and granted back only to who needs
-- them: pg_monitor (monitoring), the gateway's owner and runtime login, and
-- pg_database_owner (the database's owner: pg_dump needs set_config). Only a superuser
-- can change privileges on pg_catalog objects: without one nothing changes here but a
-- WARNING, `mcp-gateway doctor` reports the console's side channels open, and the
-- console relies on its parser alone (docs/admin-sql.md, "Without a superuser").
DO $$
DECLARE
    is_super boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    f record;
    -- functions revoked from PUBLIC, by exact name (every overload) or name prefix
    exact_names text[] := ARRAY[
        -- sizes: they grow with other tenants' rows
        'pg_relation_size', 'pg_table_size', 'pg_indexes_size', 'pg_total_relation_size',
        'pg_database_size', 'pg_tablespace_size',
        -- other transactions and backends
        'pg_lock_status', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids',
        'pg_isolation_test_session_is_blocked', 'pg_prepared_xact', 'pg_current_snapshot',
        'pg_current_xact_id', 'pg_current_xact_id_if_assigned', 'pg_xact_status',
        'pg_visible_in_snapshot', 'pg_xact_commit_timestamp', 'pg_xact_commit_timestamp_origin',
        'pg_last_committed_xact', 'pg_export_snapshot', 'pg_current_wal_lsn',
        'pg_current_wal_insert_lsn', 'pg_current_wal_flush_lsn', 'pg_last_wal_receive_lsn',
        'pg_last_wal_replay_lsn', 'pg_last_xact_replay_timestamp', 'pg_control_checkpoint',
        'pg_control_system', 'pg_control_init', 'pg_control_recovery', 'pg_notification_queue_usage',
        'pg_listening_channels', 'pg_backend_memory_contexts', 'pg_get_backend_memory_contexts',
        -- SQL given as text
        'ts_stat', 'ts_rewrite', 'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema',
        'cursor_to_xml', 'cursor_to_xmlschema', 'table_to_xml', 'table_to_xmlschema',
        'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema', 'schema_to_xml_and_xmlschema',
        'database_to_xml', 'database_to_xmlschema', 'database_to_xml_and_xmlschema',
        -- settings, sleep, notify, signals, files, large objects
        'set_config', 'pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'pg_notify',
        'pg_cancel_backend', 'pg_terminate_backend', 'pg_reload_conf', 'pg_rotate_logfile',
        'pg_log_backend_memory_contexts', 'loread', 'lowrite'];
    prefixes text[] := ARRAY['pg_stat_', 'txid_', 'pg_advisory', 'pg_try_advisory', 'lo_', 'pg_read_',
                             'pg_ls_', 'pg_file_', 'dblink'];
    grantees text := 'pg_monitor, mcp_gateway_owner, mcp_gateway_app, pg_database_owner';
BEGIN
    IF NOT is_super THEN
        RAISE WARNING 'mcp-gateway: NOT A SUPERUSER, the admin SQL console''s side channels stay open: '
            'statistics counters, relation sizes, set_config, pg_sleep, advisory locks and backend signals '
            'remain executable by the console login. Run `mcp-gateway migrate` once as a superuser, or '
            'turn the console off for tenant admins (docs/admin-sql.md, "Without a superuser").';
        RETURN;
    END IF;
    FOR f IN
        SELECT p.oid::regprocedure AS sig
          FROM pg_catalog.pg_proc p
         WHERE (p.proname = ANY (exact_names)
                OR EXISTS (SELECT 1 FROM unnest(prefixes) x WHERE starts_with(p.proname::text, x)))
           AND (p.pronamespace = 'pg_catalog'::regnamespace
                OR p.proname LIKE 'pg\_stat\_statements%' OR p.proname LIKE 'dblink%')
           -- only what PUBLIC may run today: never widen a superuser-only function
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a
                                             WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.sig);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f.sig, grantees);
    END LOOP;
    -- The gateway's own roles change settings after SET ROLE (time zone, identity): all but the console.
    GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean)
        TO mcp_gateway_member, mcp_gateway_tenant_admin, mcp_gateway_auditor, mcp_gateway_ingest, mcp_gateway_authn;
    -- The console binds its signed scope to its transaction id (migrations/010): the
    -- gateway assigns it with pg_current_xact_id() on the console login; the parser
    -- refuses the function in console SQL.
    GRANT EXECUTE ON FUNCTION pg_catalog.pg_current_xact_id() TO mcp_gateway_console;
    -- Views: statistics, locks, prepared transactions.
    FOR f IN
        SELECT c.oid::regclass AS rel
          FROM pg_catalog.pg_class c
         WHERE c.relkind = 'v'
           AND (c.relname LIKE 'pg\_stat%' OR c.relname IN ('pg_locks', 'pg_prepared_xacts'))
           AND (c.relnamespace = 'pg_catalog'::regnamespace OR c.relname LIKE 'pg\_stat\_statements%')
           AND (c.relacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a
                                             WHERE a.grantee = 0 AND a.privilege_type = 'SELECT'))
    LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM PUBLIC', f.rel);
        EXECUTE format('GRANT SELECT ON %s TO %s', f.rel, grantees);
    END LOOP;
    -- pg_class: every column but the row/page counts (planner estimates over all tenants).
    REVOKE SELECT ON pg_catalog.pg_class FROM PUBLIC;
    EXECUTE (SELECT format('GRANT SELECT (%s) ON pg_catalog.pg_class TO PUBLIC',
                           string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum))
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = 'pg_catalog.pg_class'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attname NOT IN ('reltuples', 'relpages', 'relallvisible'));
    EXECUTE format('GRANT SELECT ON pg_catalog.pg_class TO %s', grantees);
END
$$;
