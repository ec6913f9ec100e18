-- The OAuth 2.1 authorization server's state. Secrets are never stored: client secrets,
-- authorization codes and refresh tokens appear only as SHA-256 digests. Tables that
-- belong to a user carry tenant_id and user_id, like every tenant table.

-- Clients: registered dynamically (RFC 7591), from a Client ID Metadata Document (the
-- client_id is the document's HTTPS URL), or pre-registered in the config file.
CREATE TABLE gateway.oauth_clients (
    client_id       text PRIMARY KEY CHECK (client_id <> '' AND length(client_id) <= 2000),
    kind            text NOT NULL CHECK (kind IN ('dcr', 'cimd', 'config')),
    client_name     text,
    client_uri      text,
    logo_uri        text,
    redirect_uris   text[] NOT NULL DEFAULT '{}',
    grant_types     text[] NOT NULL DEFAULT '{authorization_code,refresh_token}',
    token_endpoint_auth_method text NOT NULL DEFAULT 'none'
                    CHECK (token_endpoint_auth_method IN
                           ('none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    secret_hash     bytea CHECK (secret_hash IS NULL OR length(secret_hash) = 32),
    jwks            jsonb,
    jwks_uri        text,
    scope           text,
    registered_from text,                           -- DCR: the caller's address (rate limit)
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_clients_dcr_recent ON gateway.oauth_clients (registered_from, created_at)
    WHERE kind = 'dcr';

-- Grants: a user's consent to a client ("remember this client"); revoking one ends
-- every token family issued under it.
CREATE TABLE gateway.oauth_grants (
    grant_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    user_id      text NOT NULL,
    client_id    text NOT NULL REFERENCES gateway.oauth_clients (client_id),
    scope        text NOT NULL DEFAULT '',
    remember     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
CREATE UNIQUE INDEX oauth_grants_live ON gateway.oauth_grants (tenant_id, user_id, client_id)
    WHERE revoked_at IS NULL;

-- A refresh token family: one per authorization code exchange; every access and refresh
-- token of the family names it, so revoking the family ends them all.
CREATE TABLE gateway.oauth_token_families (
    family_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     text NOT NULL,
    user_id       text NOT NULL,
    client_id     text NOT NULL REFERENCES gateway.oauth_clients (client_id),
    grant_id      uuid NOT NULL REFERENCES gateway.oauth_grants (grant_id),
    scope         text NOT NULL DEFAULT '',
    resource      text NOT NULL,
    role          text NOT NULL DEFAULT 'member',      -- the user's role when they signed in
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoke_reason text CHECK (revoke_reason IS NULL OR revoke_reason IN
                              ('user', 'admin', 'client', 'refresh_reuse', 'code_reuse', 'grant_revoked')),
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
CREATE INDEX oauth_token_families_tenant_user ON gateway.oauth_token_families (tenant_id, user_id);
CREATE INDEX oauth_token_families_grant ON gateway.oauth_token_families (grant_id);

-- Authorization codes: single use (used_at set atomically), short-lived.
CREATE TABLE gateway.oauth_codes (
    code_hash      bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    tenant_id      text NOT NULL,
    user_id        text NOT NULL,
    client_id      text NOT NULL REFERENCES gateway.oauth_clients (client_id),
    grant_id       uuid NOT NULL REFERENCES gateway.oauth_grants (grant_id),
    redirect_uri   text NOT NULL,
    scope          text NOT NULL DEFAULT '',
    resource       text NOT NULL,
    code_challenge text NOT NULL,
    role           text NOT NULL DEFAULT 'member',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    family_id      uuid REFERENCES gateway.oauth_token_families (family_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
CREATE INDEX oauth_codes_tenant_user ON gateway.oauth_codes (tenant_id, user_id);
CREATE INDEX oauth_codes_expires ON gateway.oauth_codes (expires_at);

-- Refresh tokens: rotated on use. `rotated_at` marks a used token; presenting it again
-- after the grace window revokes the family (reuse detection).
CREATE TABLE gateway.oauth_refresh_tokens (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id   uuid NOT NULL REFERENCES gateway.oauth_token_families (family_id),
    tenant_id   text NOT NULL,
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES gateway.users (tenant_id, user_id)
);
CREATE INDEX oauth_refresh_tokens_tenant_user ON gateway.oauth_refresh_tokens (tenant_id, user_id);
CREATE INDEX oauth_refresh_tokens_family ON gateway.oauth_refresh_tokens (family_id);

-- Pending authorization requests between /authorize, sign-in and consent. The browser
-- holds the request id in a cookie; only its digest is stored.
CREATE TABLE gateway.oauth_pending (
    request_hash bytea PRIMARY KEY CHECK (length(request_hash) = 32),
    params       jsonb NOT NULL,
    csrf_hash    bytea NOT NULL CHECK (length(csrf_hash) = 32),
    idp_state_hash bytea,
    idp_nonce    text,
    idp_verifier text,
    principal    jsonb,                   -- who signed in (set once, after sign-in)
    consumed_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX oauth_pending_expires ON gateway.oauth_pending (expires_at);

-- JWT IDs of private_key_jwt client assertions already seen (replay refusal across replicas).
CREATE TABLE gateway.oauth_assertion_jtis (
    client_id  text NOT NULL,
    jti        text NOT NULL CHECK (length(jti) <= 500),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);

-- The gateway's own ES256 signing keys. The newest key that is not retired signs; every
-- key not yet past `retire_at` stays in the JWKS so tokens it signed keep verifying.
CREATE TABLE gateway.oauth_signing_keys (
    kid         text PRIMARY KEY,
    alg         text NOT NULL DEFAULT 'ES256' CHECK (alg = 'ES256'),
    private_pem text NOT NULL,
    public_jwk  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotate_at   timestamptz NOT NULL,                -- stops signing
    retire_at   timestamptz NOT NULL                 -- leaves the JWKS
);
