"""Auth configuration from MCP_GATEWAY_* environment variables."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auth.errors import AuthConfigError

MIN_SECRET_BYTES = 32
ENV_PREFIX = "MCP_GATEWAY_"

# Comma-separated lists in the environment ("a,b"), real lists in code.
CsvList = Annotated[list[str], NoDecode]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AuthSettings(BaseSettings):
    """Everything auth needs to know. Construct with `AuthSettings()` (environment) or keywords.

    A configuration that cannot work (short HMAC secret, introspection without client
    credentials, ...) raises `AuthConfigError` with one line; use `AuthSettings.load()`
    to also turn malformed values into that error.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    # Token sources.
    jwt_secret: SecretStr | None = None
    jwt_issuer: str | None = None
    jwt_audience: CsvList | None = None
    oidc_issuer: str | None = None
    jwks_url: str | None = None
    introspection_url: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: SecretStr | None = None

    # Claims -> principal.
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    default_tenant: str | None = None
    email_claim: str = "email"
    name_claim: str = "name"

    # RFC 9728.
    public_url: str = "http://127.0.0.1:8051"
    authorization_servers: CsvList | None = None  # default: OIDC issuer, JWT issuer, else public_url

    # Validation.
    leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    max_token_bytes: int = Field(default=16 * 1024, ge=256, le=64 * 1024)
    allow_id_tokens: bool = False
    accepted_jwt_types: CsvList = Field(default_factory=lambda: ["at+jwt", "application/at+jwt", "JWT"])

    # Caches and timings (seconds).
    verify_cache_ttl: float = Field(default=5.0, ge=0, le=60)
    pat_cache_ttl: float = Field(default=2.0, ge=0, le=4.0)  # revocation must bite within 5 s
    negative_cache_ttl: float = Field(default=2.0, ge=0, le=10)
    cache_max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    jwks_cache_ttl: float = Field(default=600.0, ge=1, le=86_400)
    jwks_min_refresh_interval: float = Field(default=30.0, ge=0, le=3600)
    introspection_cache_ttl: float = Field(default=60.0, ge=0, le=60)
    http_timeout: float = Field(default=5.0, gt=0, le=60)
    last_used_flush_interval: float = Field(default=30.0, ge=0, le=3600)
    # While the token store (the database) is slow or away, a PAT whose record was read within this many
    # seconds keeps working from that record (stale-while-revalidate); 0 refuses every PAT during an outage.
    pat_outage_grace: float = Field(default=900.0, ge=0, le=86_400)
    # The longest a request waits on the token store (pool checkout and query together) before it is
    # answered 503; at most 2 s so a hung database never stalls a caller for longer.
    store_timeout: float = Field(default=1.5, gt=0, le=2.0)
    # Retry-After (seconds) of that 503.
    unavailable_retry_after: int = Field(default=5, ge=1, le=300)

    # The gateway as OAuth 2.1 authorization server for its own MCP endpoint (gateway/oauth).
    oauth_server: bool = Field(True, description=(
        "The gateway is the OAuth 2.1 authorization server for its MCP endpoint (RFC 8414 metadata, "
        "authorize/token/register/revoke/jwks, sign-in and consent pages). False: no authorization server; "
        "RFC 9728 metadata names the IdP as before."))
    oidc_client_id: str | None = Field(None, description=(
        "The gateway's own client at MCP_GATEWAY_OIDC_ISSUER, for browser sign-in on the authorization "
        "server's login page. Unset: sign-in with a personal access token."))
    oidc_client_secret: SecretStr | None = Field(None, description="Secret of MCP_GATEWAY_OIDC_CLIENT_ID.")
    oauth_email_domain_tenants: CsvList = Field(default_factory=list, description=(
        "Browser sign-in through the IdP: `domain=tenant` pairs (comma-separated) giving the tenant of a user "
        "whose ID token has no tenant claim, by the domain of its email claim (e.g. `acme.com=acme`)."))
    oauth_cimd_allowed_hosts: CsvList = Field(default_factory=list, description=(
        "Hosts whose private or loopback addresses may serve client ID metadata documents (tests, "
        "on-premises clients). Every other host must resolve to public addresses only."))
    oauth_cimd_ca_file: str | None = Field(None, description=(
        "PEM bundle trusted (in addition to the system's) when fetching client metadata documents from "
        "MCP_GATEWAY_OAUTH_CIMD_ALLOWED_HOSTS."))
    oauth_dcr: bool = Field(True, description="Accept RFC 7591 dynamic client registration.")
    oauth_dcr_per_hour: int = Field(20, ge=1, le=100_000, description=(
        "Dynamic registrations accepted per caller address and hour (counted in the database, all replicas)."))
    oauth_access_token_ttl: int = Field(600, ge=30, le=86_400, description="Lifetime of issued access tokens (s).")
    oauth_refresh_token_ttl: int = Field(30 * 86_400, ge=300, le=365 * 86_400, description=(
        "Lifetime of a refresh token (s); each use rotates it."))
    oauth_refresh_grace: float = Field(30.0, ge=0, le=300, description=(
        "Seconds a just-rotated refresh token may be presented again (a client retrying, or refreshing from "
        "two addresses at once) before a reuse revokes the whole token family."))
    oauth_code_ttl: int = Field(60, ge=10, le=600, description="Lifetime of an authorization code (s).")
    oauth_key_rotation_days: int = Field(30, ge=1, le=3650, description=(
        "A signing key signs for this many days; then a new key signs and the old one stays in the JWKS "
        "until every token it signed has expired."))

    _split = field_validator("jwt_audience", "authorization_servers", "accepted_jwt_types",
                             "oauth_cimd_allowed_hosts", "oauth_email_domain_tenants", mode="before")(
        classmethod(lambda cls, v: _split_csv(v))
    )

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        if self.jwt_secret is not None:
            size = len(self.jwt_secret.get_secret_value().encode())
            if size < MIN_SECRET_BYTES:
                raise AuthConfigError(
                    f"{ENV_PREFIX}JWT_SECRET is {size} bytes; at least {MIN_SECRET_BYTES} are required"
                )
        if self.introspection_url and not (self.introspection_client_id and self.introspection_client_secret):
            raise AuthConfigError(
                f"{ENV_PREFIX}INTROSPECTION_URL needs {ENV_PREFIX}INTROSPECTION_CLIENT_ID and _CLIENT_SECRET"
            )
        for name in ("oidc_issuer", "jwks_url", "introspection_url", "public_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("https://", "http://")):
                raise AuthConfigError(f"{ENV_PREFIX}{name.upper()} must be an http(s) URL")
        if self.oidc_client_id and not (self.oidc_issuer and self.oidc_client_secret):
            raise AuthConfigError(f"{ENV_PREFIX}OIDC_CLIENT_ID needs {ENV_PREFIX}OIDC_ISSUER and "
                                  f"{ENV_PREFIX}OIDC_CLIENT_SECRET")
        for pair in self.oauth_email_domain_tenants:
            domain, _, tenant = pair.partition("=")
            if not domain.strip() or not tenant.strip():
                raise AuthConfigError(f"{ENV_PREFIX}OAUTH_EMAIL_DOMAIN_TENANTS: expected domain=tenant, got {pair!r}")
        if not self.tenant_claim or not self.roles_claim:
            raise AuthConfigError(f"{ENV_PREFIX}TENANT_CLAIM and {ENV_PREFIX}ROLES_CLAIM must not be empty")
        return self

    @classmethod
    def load(cls, **overrides: Any) -> AuthSettings:
        """Like the constructor, but a malformed value is also an `AuthConfigError` (one line)."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
            raise AuthConfigError(f"{ENV_PREFIX}{field.upper()}: {first.get('msg', 'invalid value')}") from None

    @property
    def primary_issuers(self) -> tuple[str, ...]:
        """Issuers whose subjects are user ids as-is (see docs/auth.md, "user ids")."""
        return tuple(i for i in (self.oidc_issuer, self.jwt_issuer) if i)
