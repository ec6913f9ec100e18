-- mcp_requests_session_owner (002) ties (session_id, tenant_id, user_id) to the session, which
-- implies the single-column key from 001. Checking both cost ~15 µs per ingested row.
ALTER TABLE gateway.mcp_requests DROP CONSTRAINT mcp_requests_session_id_fkey;
