-- per_user_oauth browser link flow: a single-use, short-lived state bound to one user.
-- Only the SHA-256 of the state is stored; the PKCE verifier is encrypted like a credential.
-- Consuming sets consumed_at (single use) instead of deleting: nobody but the owner deletes.
CREATE TABLE gateway.upstream_link_states (
    tenant_id    text NOT NULL,
    user_id      text NOT NULL,
    state_hash   bytea NOT NULL,
    upstream     text NOT NULL,
    verifier     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    consumed_at  timestamptz,
    PRIMARY KEY (tenant_id, user_id, state_hash)
);
