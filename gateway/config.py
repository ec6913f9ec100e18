"""MCP_GATEWAY_CONFIG: the TOML file for structured settings (pricing, upstreams, access, quotas).

Unknown keys are errors: a typo must not silently turn a limit off. Every error is one
line naming the file and the key: `gateway.toml: upstreams[1].url: ...`.

Secrets never live in this file: an upstream's bearer token comes from the environment
variable named by `bearer_token_env`, and a stdio upstream's secret variables from
`env_from` (child variable -> gateway environment variable).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from auth.principal import Role
from gateway.errors import UserError
from gateway.oauth.config import OAuthClientConfig
from gateway.tracking.pricing import Pricing

_UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- upstream MCP servers -----------------------------------------------------------------------


class UpstreamOAuth(_Strict):
    """`[upstreams.oauth]`: how the gateway obtains a user's token for a per_user_oauth / token_exchange upstream."""

    client_id: str | None = Field(None, description="The gateway's client id at the upstream's authorization server")
    client_secret_env: str | None = Field(None, description="Environment variable holding the client secret")
    scopes: list[str] = Field(default_factory=list, description="Scopes requested for the upstream")
    issuer: str | None = Field(
        None, description="Authorization server issuer (RFC 8414 discovery). Default: discovered from the"
                          " upstream's RFC 9728 protected-resource metadata")
    token_endpoint: str | None = Field(None, description="token_exchange: the IdP's token endpoint (RFC 8693)")
    audience: str | None = Field(None, description="token_exchange: audience requested for the upstream")
    resource: str | None = Field(None, description="RFC 8707 resource indicator. Default: the upstream's url")

    @field_validator("client_secret_env")
    @classmethod
    def _secret_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("issuer", "token_endpoint", "resource")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        return value


class UpstreamConfig(_Strict):
    """One `[[upstreams]]` entry: an MCP server whose tools appear as `<name>_<tool>`."""

    name: str = Field(description="Prefix of this upstream's tools: <name>_<tool>. Letters, digits, '-'.")
    # Remote (Streamable HTTP or SSE)
    url: str | None = Field(None, description="http(s) URL of the upstream's MCP endpoint")
    transport: Literal["http", "sse"] | None = Field(
        None, description="http = Streamable HTTP; sse = legacy SSE. Default: sse if the URL path ends in /sse")
    headers: dict[str, str] = Field(default_factory=dict, description="Static, non-secret headers")
    bearer_token_env: str | None = Field(None, description="Environment variable holding a bearer token")
    credentials: Literal["shared", "per_user_token", "per_user_oauth", "token_exchange"] = Field(
        "shared", description="Whose credential calls this upstream: shared (bearer_token_env, one for everyone),"
                              " per_user_token / per_user_oauth / token_exchange (each caller's own; see"
                              " docs/upstreams.md)")
    oauth: UpstreamOAuth | None = Field(None, description="per_user_oauth / token_exchange settings")
    # Local (stdio)
    command: str | None = Field(None, description="Executable of a stdio upstream")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Non-secret environment for the child")
    env_from: dict[str, str] = Field(
        default_factory=dict, description="Child variable -> gateway environment variable it is copied from")
    cwd: str | None = None
    # Behaviour
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds per upstream request (call, listing)")
    protocol: Literal["auto", "legacy"] = Field(
        "auto", description="auto: newest protocol era both sides speak; legacy: handshake era only")
    retry_seconds: float = Field(
        5.0, ge=0, le=3600, description="After a failure, tools/list skips this upstream this long (calls always try)")
    health_interval: float = Field(30.0, ge=1, le=86400, description="Seconds between background health checks")
    list_wait: float = Field(
        5.0, gt=0, le=3600, description="Seconds a client's tools/prompts/resources list waits for this upstream's "
                                        "listing; past that its last listing answers (the listing goes on)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _UPSTREAM_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid upstream name (letters, digits and '-', at most 64;"
                             " it becomes the '<name>_' prefix of the upstream's tools)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not allowed; use bearer_token_env")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, header_value in value.items():
            if not _HEADER_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid HTTP header name")
            if key.lower() in _SECRET_HEADERS:
                raise ValueError(f"header {key!r} carries a secret and must not be in the file;"
                                 " use bearer_token_env")
            if "\n" in header_value or "\r" in header_value:
                raise ValueError(f"header {key!r} contains a line break")
        return value

    @field_validator("bearer_token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("env", "env_from")
    @classmethod
    def _env_names(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        for key, source in value.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if info.field_name == "env_from" and not _ENV_NAME.match(source):
                raise ValueError(f"{source!r} (for {key}) is not an environment variable name")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _kind(self) -> UpstreamConfig:
        if self.url and self.command:
            raise ValueError("give either url (HTTP/SSE upstream) or command (stdio upstream), not both")
        if not self.url and not self.command:
            raise ValueError("missing url or command: an upstream needs an http(s) url or a stdio command")
        if self.url:
            for key in ("args", "env", "env_from", "cwd"):
                if getattr(self, key):
                    raise ValueError(f"{key} applies to stdio upstreams (command), not to url upstreams")
        else:
            for key in ("headers", "bearer_token_env", "transport"):
                if getattr(self, key):
                    raise ValueError(f"{key} applies to url upstreams, not to stdio upstreams (command)")
            if self.credentials != "shared":
                raise ValueError(f"credentials = {self.credentials!r} needs a url upstream (a stdio child has no"
                                 " per-user credential)")
        if self.credentials != "shared" and self.bearer_token_env:
            raise ValueError(f"bearer_token_env is the shared credential; credentials = {self.credentials!r}"
                             " uses each caller's own (remove one of them)")
        if self.credentials == "per_user_oauth" and not (self.oauth and self.oauth.client_id):
            raise ValueError("credentials = 'per_user_oauth' needs oauth.client_id (the gateway's client at the"
                             " upstream's authorization server)")
        if self.credentials == "token_exchange" and not (self.oauth and self.oauth.token_endpoint):
            raise ValueError("credentials = 'token_exchange' needs oauth.token_endpoint (the IdP's RFC 8693"
                             " token endpoint)")
        if self.oauth is not None and self.credentials in ("shared", "per_user_token"):
            raise ValueError(f"oauth applies to per_user_oauth and token_exchange, not to {self.credentials!r}")
        return self

    @property
    def per_user(self) -> bool:
        return self.credentials != "shared"

    @property
    def kind(self) -> Literal["http", "sse", "stdio"]:
        if self.command:
            return "stdio"
        if self.transport:
            return self.transport
        assert self.url is not None
        return "sse" if urlsplit(self.url).path.rstrip("/").endswith("/sse") else "http"

    @property
    def target(self) -> str:
        """Where it is, safe to show (/ready, logs): URL without query, or the command."""
        if self.url:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.netloc}{parts.path}"
        return " ".join([self.command or "", *self.args]).strip()


# -- per-tool access --------------------------------------------------------------------------------


class AccessRule(_Strict):
    """Tool-name globs (fnmatch: `*`, `?`, `[...]`). Deny wins; allow unset means everything."""

    allow: list[str] | None = Field(None, description="Only these tools (globs). Unset: every tool")
    deny: list[str] = Field(default_factory=list, description="Never these tools (globs); wins over allow")

    @field_validator("allow", "deny")
    @classmethod
    def _globs(cls, value: list[str] | None) -> list[str] | None:
        for glob in value or []:
            if not glob.strip():
                raise ValueError("empty tool-name glob")
        return value


class TenantAccess(_Strict):
    roles: dict[Role, AccessRule] = Field(default_factory=dict)


class AccessConfig(_Strict):
    """`[access]`: which tools each role (and tenant) may see and call."""

    admin_tags: list[str] = Field(default_factory=lambda: ["admin"],
                                  description="Tools with any of these FastMCP tags are admin tools")
    admin_tools: list[str] = Field(default_factory=lambda: ["run_sql"],
                                   description="Name globs that are admin tools too")
    roles: dict[Role, AccessRule] = Field(default_factory=dict)
    tenants: dict[str, TenantAccess] = Field(default_factory=dict)


# -- rate limits and budgets ----------------------------------------------------------------------


class RoleQuota(_Strict):
    calls_per_minute: float | None = Field(None, gt=0, description="Token bucket refill rate per user")
    burst: int | None = Field(None, ge=1, description="Bucket size; default max(1, calls_per_minute)")
    daily_budget: float | None = Field(None, ge=0, description="USD per user per UTC day")


class TenantQuota(_Strict):
    tenant_daily_budget: float | None = Field(None, ge=0, description="USD per tenant per UTC day")
    roles: dict[Role, RoleQuota] = Field(default_factory=dict)


class QuotaConfig(_Strict):
    """`[quotas]`: per-user rate limits and budgets by role, per-tenant budgets, per-tenant overrides."""

    refresh_seconds: float = Field(10.0, gt=0, le=3600,
                                   description="How often spend totals are re-read from the database")
    tenant_daily_budget: float | None = Field(None, ge=0, description="USD per tenant per UTC day (every tenant)")
    roles: dict[Role, RoleQuota] = Field(default_factory=dict)
    tenants: dict[str, TenantQuota] = Field(default_factory=dict)


# -- the file ------------------------------------------------------------------------------------


class GatewayConfig(_Strict):
    pricing: Pricing = Field(default_factory=Pricing)
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    access: AccessConfig = Field(default_factory=AccessConfig)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)
    oauth_clients: list[OAuthClientConfig] = Field(default_factory=list)  # pre-registered (gateway/oauth)

    @field_validator("upstreams")
    @classmethod
    def _unique_names(cls, value: list[UpstreamConfig]) -> list[UpstreamConfig]:
        seen: dict[str, int] = {}
        for index, upstream in enumerate(value):
            key = upstream.name.lower()
            if key in seen:
                raise ValueError(f"duplicate upstream name {upstream.name!r} (upstreams[{seen[key]}] and"
                                 f" upstreams[{index}])")
            seen[key] = index
        return value


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # the key itself was refused (e.g. a role name)
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _check_environment(config: GatewayConfig) -> tuple[str, str] | None:
    """Secrets named by the file must exist in the environment: (key path, problem) or None."""
    for index, upstream in enumerate(config.upstreams):
        if upstream.bearer_token_env and not os.environ.get(upstream.bearer_token_env):
            return (f"upstreams[{index}].bearer_token_env",
                    f"environment variable {upstream.bearer_token_env} is not set")
        secret_env = upstream.oauth.client_secret_env if upstream.oauth else None
        if secret_env and not os.environ.get(secret_env):
            return f"upstreams[{index}].oauth.client_secret_env", f"environment variable {secret_env} is not set"
        for child, source in upstream.env_from.items():
            if source not in os.environ:
                return f"upstreams[{index}].env_from.{child}", f"environment variable {source} is not set"
    return None


def load_config(path: Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"]))
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif "[key]" in first["loc"]:
            message = f"unknown key ({first['msg'].replace('Input should be', 'expected')})"
        elif first["type"] == "missing":
            message = "missing required key"
        else:
            message = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        raise UserError(f"{path}: {where}: {message}".replace("\n", " ")) from None
    problem = _check_environment(config)
    if problem is not None:
        raise UserError(f"{path}: {problem[0]}: {problem[1]}")
    return config
