-- Per-user credentials for upstream MCP servers, and the credential mode of each call.
--
-- `secret` is AES-256-GCM ciphertext made by the gateway (gateway/credentials/keys.py) with
-- the row's (tenant_id, user_id, upstream) as associated data; the database never sees the
-- key. NULL secret = unlinked (revoked or never linked); the row keeps the metadata.
CREATE TABLE gateway.upstream_credentials (
    tenant_id     text NOT NULL,
    user_id       text NOT NULL,
    upstream      text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('per_user_token', 'per_user_oauth', 'token_exchange')),
    secret        bytea,
    expires_at    timestamptz,          -- of the access token inside `secret`, when known
    needs_relink  boolean NOT NULL DEFAULT false,
    linked_at     timestamptz,
    unlinked_at   timestamptz,
    last_used_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, upstream)
);

ALTER TABLE gateway.mcp_requests ADD COLUMN credential_mode text
    CHECK (credential_mode IN ('shared', 'per_user_token', 'per_user_oauth', 'token_exchange'));
