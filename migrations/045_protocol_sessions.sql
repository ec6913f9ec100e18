-- Handshake-era protocol sessions (Mcp-Session-Id), shared by every gateway process.
--
-- A session lives in the memory of the process that answered `initialize`. So that any worker or
-- replica can serve its later requests, that process records here who the session belongs to and
-- what `initialize` said; another process adopts the session after checking that the caller is the
-- same principal (docs/scaling.md). A DELETE anywhere sets ended_at, and every process then refuses
-- the id. The session id itself is never stored, only its SHA-256: a reader of this table cannot
-- use a live session (and the id alone is worthless without its owner's credential anyway).
CREATE TABLE gateway.mcp_protocol_sessions (
    tenant_id        text NOT NULL,
    session_hash     bytea NOT NULL,     -- sha256(Mcp-Session-Id)
    user_id          text NOT NULL,
    owner_hash       bytea NOT NULL,     -- sha256 of the principal and the credential identity that created it
    protocol_version text NOT NULL,
    init_params      jsonb NOT NULL,     -- the client's initialize params (client info, capabilities)
    instance_id      text NOT NULL,      -- the process that answered initialize
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz NOT NULL DEFAULT now(),  -- touched at most once a minute per process
    ended_at         timestamptz,
    end_reason       text,
    PRIMARY KEY (tenant_id, session_hash),
    CONSTRAINT mcp_protocol_sessions_hash_length CHECK (octet_length(session_hash) = 32
                                                        AND octet_length(owner_hash) = 32)
);
-- Ended and expired bindings are pruned by the owner (tenant-first, like every index here).
CREATE INDEX mcp_protocol_sessions_created ON gateway.mcp_protocol_sessions (tenant_id, created_at);
